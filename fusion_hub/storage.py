"""Storage interface of the hub and the records that cross it.

Everything the hub keeps goes through ``HubStorage``: TAXII objects with their
``date_added`` and version, status resources, site and consumer credentials, rounds and
contributions, and the state of each fused indicator. ``SQLiteHubStorage``
(``fusion_hub.sqlite_storage``) is the embedded default; ``PostgresHubStorage``
(``fusion_hub.postgres_storage``) lets several hub processes share one database. Both provide
the same guarantees, checked by one contract test suite:

- ``date_added`` is strictly increasing within a collection, so that paging by
  ``(date_added, id)`` or by ``added_after`` never skips or repeats an object (TAXII 2.1,
  section 3.4 and 5.3);
- an object's JSON text is stored verbatim and served back unchanged;
- ``transaction()`` makes everything done inside it atomic, and calls nest;
- ``mark_round_closed`` succeeds once per round, whatever the number of callers and
  processes.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import NamedTuple


class AddOutcome(Enum):
    """Result of storing one object."""

    CREATED = "created"
    # The same id and version is stored with the same content: an idempotent resend.
    DUPLICATE = "duplicate"
    # The same id and version is stored with different content.
    CONFLICT = "conflict"
    # Versions of the same id are stored from another owner. Only an object's creator may
    # add versions of it (STIX 2.1, section 3.6), and every poster is its objects' creator.
    OTHER_OWNER = "other-owner"
    # The site already contributed a different summary to this round.
    ROUND_CONFLICT = "round-conflict"
    # The round is closed; a new contribution would be ignored by fusion.
    ROUND_CLOSED = "round-closed"


class NewObject(NamedTuple):
    """A STIX object about to be stored in a collection.

    ``raw`` is the object's JSON text exactly as posted; ``content_sha256`` is the hex
    digest of its canonical JSON (RFC 8785), used to recognise resends that differ only in
    whitespace or key order. A named tuple rather than a frozen dataclass, because adding an
    envelope makes one per object and a tuple is built several times faster.
    """

    collection_id: str
    id: str
    type: str
    spec_version: str
    version_us: int | None
    raw: str
    content_sha256: str
    # Credential that may read the object back; None means every reader of the collection.
    owner: str | None


@dataclass(frozen=True)
class StoredObject:
    """A STIX object as stored, with its TAXII metadata."""

    collection_id: str
    id: str
    type: str
    spec_version: str
    version_us: int
    date_added_us: int
    raw: str
    owner: str | None


@dataclass(frozen=True)
class VersionFilter:
    """TAXII ``match[version]``: any combination of first, last, all and exact versions."""

    first: bool = False
    last: bool = True
    all: bool = False
    exact_us: tuple[int, ...] = ()


@dataclass(frozen=True)
class ObjectQuery:
    """Filters of TAXII Get Objects, Get Object Manifests and Get Object Versions.

    ``after`` is the keyset cursor ``(date_added_us, id)`` of the last object of the previous
    page. ``visible_to`` restricts results to objects owned by that credential or by nobody.
    """

    collection_id: str
    limit: int
    added_after_us: int | None = None
    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    spec_versions: tuple[str, ...] = ()
    versions: VersionFilter = VersionFilter()
    visible_to: str | None = None
    after: tuple[int, str] | None = None


@dataclass(frozen=True)
class ObjectPage:
    """One page of objects, ordered by ``date_added`` then id."""

    objects: list[StoredObject]
    more: bool


@dataclass(frozen=True)
class Credential:
    """A site or consumer allowed to call the hub.

    Sites carry their Ed25519 public key and the Beta(alpha, beta) posterior of their
    precision; consumers carry the collections they may read.
    """

    name: str
    kind: str  # "site" or "consumer"
    password_hash: str
    created_us: int
    revoked_us: int | None = None
    public_key_b64: str | None = None
    read_collections: tuple[str, ...] = ()
    trust_alpha: float | None = None
    trust_beta: float | None = None

    @property
    def revoked(self) -> bool:
        """Whether the credential was revoked."""
        return self.revoked_us is not None

    def __repr__(self) -> str:
        # The argon2 hash is not a password, but it has no place in logs either.
        return (
            f"Credential(name={self.name!r}, kind={self.kind!r}, "
            f"password_hash='***', revoked={self.revoked})"
        )


@dataclass(frozen=True)
class ApiToken:
    """A bearer token of a credential; only the argon2id hash of its secret is stored."""

    token_id: str
    credential: str
    secret_hash: str
    created_us: int
    revoked_us: int | None = None

    def __repr__(self) -> str:
        return (f"ApiToken(token_id={self.token_id!r}, credential={self.credential!r}, "
                f"secret_hash='***', revoked={self.revoked_us is not None})")


@dataclass(frozen=True)
class RoundRecord:
    """State of one round; ``round_start_us`` (epoch microseconds) is its id."""

    round_start_us: int
    first_contribution_us: int
    closed_us: int | None
    close_reason: str | None
    contributors: int
    published: int
    refused: int
    revoked: int


@dataclass(frozen=True)
class Contribution:
    """A site's accepted summary for one round, with its stored JSON text."""

    site_id: str
    round_start_us: int
    object_id: str
    raw: str


@dataclass(frozen=True)
class IndicatorState:
    """State the publisher keeps about the latest version of one fused indicator."""

    indicator_id: str
    observable_type: str
    value: str
    created_us: int
    modified_us: int
    valid_from_us: int
    valid_until_us: int
    fused_score: float
    corroborating_sites: int
    strategy: str
    round_start_us: int
    revoked: bool


class HubStorage(abc.ABC):
    """Persistent state of the hub; see the module docstring for the guarantees."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Return a context manager that makes the calls inside it one atomic unit."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; the object is unusable afterwards."""

    # Objects and collections.

    @abc.abstractmethod
    def add_object(self, obj: NewObject, *, shared_id: bool = False) -> tuple[AddOutcome, int | None]:
        """Store one object; return the outcome and, when created, its ``date_added``.

        An id whose stored versions have another owner gets ``OTHER_OWNER``, unless
        ``shared_id`` is set, for an object that several owners post under one id.
        """

    @abc.abstractmethod
    def add_summary(
        self, obj: NewObject, *, site_id: str, round_start_us: int, received_us: int
    ) -> tuple[AddOutcome, int | None]:
        """Store a summary and record it as the site's contribution to the round.

        Returns ``DUPLICATE`` for a resend with the same content, ``ROUND_CONFLICT`` when the
        site contributed different content, and ``ROUND_CLOSED`` when the round is closed.
        """

    # Whether ``add_objects`` sends objects to the database while its iterable still yields
    # them. A caller that checks objects on the way can then let the checks overlap the
    # database's work. Where it is False, the caller should produce every object before it
    # opens a transaction, so that the checks do not hold the database.
    pipelines_inserts: bool = False

    @abc.abstractmethod
    def add_objects(
        self, collection_id: str, objects: Iterable[NewObject], *, at_most: int
    ) -> list[AddOutcome]:
        """Store objects of one collection in one transaction, as ``add_object`` would one by one.

        ``objects`` may be lazy. ``at_most`` bounds how many it yields: that many ``date_added``
        values are reserved, and those of objects it does not yield stay unused.

        Returns the outcome of each object yielded, in order. Only ``CREATED``, ``DUPLICATE``,
        ``CONFLICT`` and ``OTHER_OWNER`` occur: summaries that join rounds go through
        ``add_summary``. An object with ``OTHER_OWNER`` is not stored.

        Raises
        ------
        ValueError
            If an object belongs to another collection or more than ``at_most`` are yielded.
            Nothing is stored then.
        """

    @abc.abstractmethod
    def load_objects(self, objects: Sequence[NewObject]) -> int:
        """Insert many new objects in one transaction and return how many were inserted.

        This is the bulk path for imports and benchmarks: it skips the duplicate and conflict
        checks of ``add_object``, so an id and version that is already stored raises
        ``StorageError`` and nothing is inserted.
        """

    @abc.abstractmethod
    def query_objects(self, query: ObjectQuery) -> ObjectPage:
        """Return one page of objects matching ``query``."""

    @abc.abstractmethod
    def delete_objects(self, query: ObjectQuery, *, owner: str) -> tuple[int, int]:
        """Delete the versions matching ``query`` that ``owner`` posted.

        ``query.limit`` and ``query.after`` are ignored. Versions that are a site's round
        contribution are kept, because closed and open rounds fuse them.

        Returns
        -------
        tuple of int
            ``(deleted, kept_as_contributions)``.
        """

    @abc.abstractmethod
    def object_exists(self, collection_id: str, object_id: str, visible_to: str | None, *,
                      posted_by: str | None = None) -> bool:
        """Return whether any version of the object is visible to the caller.

        With ``posted_by``, only versions that this credential posted count.
        """

    @abc.abstractmethod
    def count_objects(self, collection_id: str) -> int:
        """Return the number of stored object versions in a collection."""

    # TAXII status resources.

    @abc.abstractmethod
    def save_status(self, status_id: str, owner: str, body: str) -> None:
        """Store a status resource (JSON text) readable by ``owner`` only, with the time it was saved."""

    @abc.abstractmethod
    def purge_statuses(self, before: datetime) -> int:
        """Delete the status resources saved before ``before`` and return how many.

        Statuses stored by a version that did not record their time count as saved when
        this first runs.
        """

    @abc.abstractmethod
    def load_status(self, status_id: str) -> tuple[str, str] | None:
        """Return ``(owner, body)`` of a status resource, or None."""

    # Credentials.

    @abc.abstractmethod
    def insert_credential(self, credential: Credential) -> bool:
        """Store a new credential; return False if the name is taken."""

    @abc.abstractmethod
    def get_credential(self, name: str) -> Credential | None:
        """Return the credential with this name, revoked or not."""

    @abc.abstractmethod
    def list_credentials(self) -> list[Credential]:
        """Return every credential ordered by name."""

    @abc.abstractmethod
    def revoke_credential(self, name: str, revoked_us: int) -> bool:
        """Mark a credential revoked; return False if it does not exist."""

    @abc.abstractmethod
    def insert_api_token(self, token: ApiToken) -> None:
        """Store a new API token."""

    @abc.abstractmethod
    def get_api_token(self, token_id: str) -> ApiToken | None:
        """Return the token with this id, revoked or not."""

    @abc.abstractmethod
    def revoke_api_token(self, token_id: str, revoked_us: int) -> bool:
        """Mark a token revoked; return False if it does not exist."""

    @abc.abstractmethod
    def update_trust(self, site_id: str, alpha: float, beta: float) -> None:
        """Replace a site's Beta posterior parameters."""

    # Rounds.

    @abc.abstractmethod
    def get_round(self, round_start_us: int) -> RoundRecord | None:
        """Return a round's state, or None if no site contributed to it."""

    @abc.abstractmethod
    def open_rounds(self) -> list[RoundRecord]:
        """Return the rounds that are not closed, oldest first."""

    @abc.abstractmethod
    def list_rounds(self, *, limit: int) -> list[RoundRecord]:
        """Return the ``limit`` most recent rounds, open or closed, newest first."""

    @abc.abstractmethod
    def count_active_contributors(self, round_start_us: int) -> int:
        """Return how many sites that are still enrolled contributed to the round."""

    @abc.abstractmethod
    def mark_round_closed(self, round_start_us: int, closed_us: int, reason: str) -> bool:
        """Close an open round; return False if it was closed already (or never opened)."""

    @abc.abstractmethod
    def record_round_outcome(
        self, round_start_us: int, *, contributors: int, published: int, refused: int,
        revoked: int,
    ) -> None:
        """Store the counts of a closed round."""

    @abc.abstractmethod
    def contributions_between(self, first_us: int, last_us: int) -> list[Contribution]:
        """Return contributions of enrolled sites to rounds in [first_us, last_us]."""

    # Fused indicators.

    @abc.abstractmethod
    def get_indicator_state(self, indicator_id: str) -> IndicatorState | None:
        """Return the latest known state of a fused indicator."""

    @abc.abstractmethod
    def save_indicator_state(self, state: IndicatorState) -> None:
        """Insert or replace the state of a fused indicator."""

    @abc.abstractmethod
    def expired_indicators(self, now_us: int) -> list[IndicatorState]:
        """Return unrevoked indicators whose ``valid_until`` is at or before ``now_us``."""

    # Settings the hub keeps across restarts.

    @abc.abstractmethod
    def get_meta(self, key: str) -> str | None:
        """Return a stored setting."""

    @abc.abstractmethod
    def set_meta_if_absent(self, key: str, value: str) -> str:
        """Store a setting unless present; return the value in force."""
