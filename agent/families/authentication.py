"""The authentication family: login attempts per entity window, from sshd and Zeek ssh.

sshd lines give the outcome of each attempt (``failed_*``, ``accepted_*``, ``invalid_user``).
The entity is the host that wrote the line (syslog's host field), because that is the machine
being logged into. The remote address is the observable when it may be shared. An rsyslog
``message repeated N times`` line counts N attempts.

Zeek's ssh.log records the same logins on the wire. Its ``auth_success`` is T, F or unset (Zeek
could not determine the outcome), and ``auth_attempts`` counts the attempts in the session. A
session without an attempt is left to the network family. The entity is the internal endpoint. Zeek records no user names, so ``distinct_users`` stays 0 for its windows.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from agent.events import Event
from agent.families import FamilySpec
from agent.families.windows import WindowTable, counter_from
from agent.features import Window, burstiness
from agent.observables import ObservableFilter
from agent.zeek_observables import ZeekObservation

__all__ = ["AUTHENTICATION", "AuthenticationWindows", "AuthAttempt", "attempt_from_sshd", "attempt_from_zeek"]

AUTHENTICATION = FamilySpec(
    name="authentication",
    feature_names=("attempt_count", "failed_count", "accepted_count", "invalid_user_count",
                   "distinct_remote_addresses", "distinct_users", "failed_ratio", "interarrival_burstiness"),
    log_scaled=frozenset({"attempt_count", "failed_count", "accepted_count", "invalid_user_count",
                          "distinct_remote_addresses", "distinct_users"}),
    feature_schema_version="authentication-1",
)


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """One or more login attempts with one outcome: ``failed``, ``accepted``, ``invalid_user`` or ``unknown``."""

    ts: float
    entity: str
    outcome: str
    count: int
    peer: str | None  # the remote address, which stays on the site
    remote: str | None  # the peer when it may be shared
    user: str | None  # stays on the site


@dataclass
class AuthAccumulator:
    """Running state of one (entity, window) pair: its attempt times as doubles, as network windows keep theirs."""

    entity: str
    start: int
    timestamps: array[float] = field(default_factory=partial(array, "d"))
    outcomes: Counter[str] = field(default_factory=Counter)
    peers: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    remotes: Counter[str] = field(default_factory=Counter)


class AuthenticationWindows(WindowTable[AuthAccumulator]):
    """Open authentication windows."""

    def add(self, attempt: AuthAttempt) -> None:
        accumulator = self.accumulator(attempt.entity, attempt.ts)
        accumulator.timestamps.append(attempt.ts)
        accumulator.outcomes[attempt.outcome] += attempt.count
        if attempt.peer is not None:
            accumulator.peers.add(attempt.peer)
        if attempt.user is not None:
            accumulator.users.add(attempt.user)
        if attempt.remote is not None:
            accumulator.remotes[attempt.remote] += attempt.count

    def new_accumulator(self, entity: str, start: int) -> AuthAccumulator:
        return AuthAccumulator(entity, start)

    def close_accumulator(self, accumulator: AuthAccumulator) -> Window | None:
        outcomes = accumulator.outcomes
        attempts = sum(outcomes.values())
        if attempts == 0:
            return None
        failed = outcomes["failed"] + outcomes["invalid_user"]
        features = (float(attempts), float(outcomes["failed"]), float(outcomes["accepted"]),
                    float(outcomes["invalid_user"]), float(len(accumulator.peers)), float(len(accumulator.users)),
                    failed / attempts, burstiness(accumulator.timestamps))
        return Window(accumulator.entity, accumulator.start, features, dict(accumulator.remotes))

    def dump_accumulator(self, accumulator: AuthAccumulator) -> Any:
        return {"e": accumulator.entity, "s": accumulator.start, "t": accumulator.timestamps.tolist(),
                "o": dict(accumulator.outcomes), "p": sorted(accumulator.peers), "u": sorted(accumulator.users),
                "r": dict(accumulator.remotes)}

    def load_accumulator(self, item: Any) -> AuthAccumulator:
        return AuthAccumulator(item["e"], int(item["s"]), array("d", [float(t) for t in item["t"]]),
                               counter_from(item["o"]),
                               set(item["p"]), set(item["u"]), counter_from(item["r"]))

    def key_of(self, accumulator: AuthAccumulator) -> tuple[str, int]:
        return accumulator.entity, accumulator.start


def attempt_from_sshd(event: Event, observables: ObservableFilter) -> AuthAttempt | None:
    """Return the attempt an sshd event records, or None for a session line."""
    kind = event.kind
    if kind.startswith("failed_"):
        outcome = "invalid_user" if event.fields.get("invalid_user") else "failed"
    elif kind.startswith("accepted_"):
        outcome = "accepted"
    elif kind == "invalid_user":
        outcome = "invalid_user"
    else:
        return None
    host = event.fields.get("host")
    if not isinstance(host, str) or not host:
        return None
    address = event.fields.get("src_ip")
    repeat = event.fields.get("repeat")
    return AuthAttempt(ts=event.ts.timestamp(), entity=host, outcome=outcome,
                       count=repeat if isinstance(repeat, int) and repeat > 0 else 1,
                       peer=address if isinstance(address, str) else None,
                       remote=observables.address(address) if isinstance(address, str) else None,
                       user=event.fields.get("user"))


def attempt_from_zeek(observation: ZeekObservation) -> AuthAttempt | None:
    """Return the attempts of a Zeek ssh observation that has an entity."""
    # A session without an attempt (a banner grab, a scan) is the network family's to score.
    attempts = int(observation.fields.get("auth_attempts", 0))
    if observation.log_path != "ssh" or observation.entity is None or attempts == 0:
        return None
    success = observation.fields.get("auth_success")
    outcome = "unknown"
    if success is True:
        outcome = "accepted"
    elif success is False:
        outcome = "failed"
    remote = observation.observables[0] if observation.observables else None
    return AuthAttempt(ts=observation.ts, entity=observation.entity, outcome=outcome,
                       count=attempts, peer=remote, remote=remote, user=None)
