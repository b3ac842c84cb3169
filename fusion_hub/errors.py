"""Exceptions raised by the fusion hub.

Every error derives from ``HubError`` and keeps the values that describe the failure as
attributes, so callers and tests can inspect them instead of parsing messages::

    HubError
    ├── HubConfigError          a configuration file is unreadable or invalid
    ├── StorageError            the hub database failed or contains an unexpected state
    ├── RegistryError           enrolment, consumer or revocation request rejected
    │   └── UnknownCredential   no site or consumer has that name
    ├── EnvelopeInvalid         a posted body is not a TAXII envelope
    ├── ObjectRejected          one posted STIX object failed an intake check
    ├── PaginationTokenInvalid  a TAXII ``next`` token was forged, stale or reused elsewhere
    └── TaxiiError              a request that ends in a TAXII error resource
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fti.config_text import displayable_value


class HubError(Exception):
    """Root of every error raised by fusion_hub."""


class HubConfigError(HubError):
    """A configuration file cannot be used.

    Parameters
    ----------
    path : Path
        The configuration file.
    key : str or None
        Dotted key of the offending setting (``rounds.quorum_sites``), or None for
        file-level problems such as invalid YAML.
    value : Any
        The value found, or None when there is none.
    problem : str
        What is wrong with it.
    fix : str
        What the operator should change.
    line : int or None
        1-based line of the key in the file, when known.
    """

    def __init__(
        self,
        path: Path,
        *,
        key: str | None,
        value: Any,
        problem: str,
        fix: str,
        line: int | None = None,
    ) -> None:
        value = displayable_value(value)
        self.path = path
        self.key = key
        self.value = value
        self.problem = problem
        self.fix = fix
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        subject = f"{key} " if key else ""
        got = f"; got {value!r}" if key is not None and value is not None else ""
        super().__init__(f"{where}: {subject}{problem}{got}. {fix}")


class StorageError(HubError):
    """The hub database failed or contains a state the hub cannot continue from."""


class RegistryError(HubError):
    """A registry request (enrol, add consumer, revoke) was rejected.

    Parameters
    ----------
    name : str
        The site id or consumer name concerned.
    reason : str
        Why the request was rejected, including what to do instead.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class UnknownCredential(RegistryError):
    """No enrolled site or consumer has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "no site or consumer with this name; list them with the hub CLI")


class EnvelopeInvalid(HubError):
    """A POST body is not a TAXII 2.1 envelope (section 3.7).

    Parameters
    ----------
    reason : str
        What is wrong, with the byte offset when the JSON is malformed.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"request body is not a TAXII envelope: {reason}")


class EnvelopeTooManyObjects(HubError):
    """A POST body contains more objects than the hub accepts in one request.

    The parse stops at the first object past the limit, so a body packed with millions of
    tiny members costs little to reject.

    Parameters
    ----------
    limit : int
        Maximum number of objects per request (``hub.max_objects_per_request``).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the envelope has more than {limit} objects; this hub takes at most "
                         f"{limit} per request; send them in several requests")


class ObjectRejected(HubError):
    """One STIX object posted to a collection failed an intake check.

    Parameters
    ----------
    object_id : str
        The object's ``id`` (or a placeholder when it has none).
    reason : str
        Short machine-readable reason, used as a metrics label (``signature``, ``schema``...).
    message : str
        Human-readable explanation, returned in the TAXII status resource.
    """

    def __init__(self, object_id: str, reason: str, message: str) -> None:
        self.object_id = object_id
        self.reason = reason
        self.message = message
        super().__init__(f"{object_id}: {message}")


class PaginationTokenInvalid(HubError):
    """A TAXII ``next`` token was not issued for this query and caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid next token: {reason}; restart the query without next")


class TaxiiError(HubError):
    """A request that must end in a TAXII 2.1 error resource (section 3.6.1).

    Parameters
    ----------
    http_status : int
        HTTP status code of the response.
    title : str
        Short summary, the error resource's ``title``.
    description : str
        What went wrong and what the client should do.
    headers : dict of str to str, optional
        Extra response headers, such as ``WWW-Authenticate`` on 401.
    """

    def __init__(
        self,
        http_status: int,
        title: str,
        description: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.http_status = http_status
        self.title = title
        self.description = description
        self.headers = dict(headers or {})
        super().__init__(f"{http_status} {title}: {description}")
