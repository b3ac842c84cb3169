"""Open feature windows of one family, keyed by (entity, window start), with a compact snapshot.

A table keeps one accumulator per open window. The live agent closes the windows of a round
once the round's time has passed and stores the rest in its checkpoint. So each accumulator
can be written as a small JSON value and read back. That value contains the window's counters
and sets and the event times that burstiness needs, instead of every event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, Generic, TypeVar

from agent.features import Window

__all__ = ["WindowTable"]

A = TypeVar("A")


class WindowTable(ABC, Generic[A]):
    """Accumulators of one family's open windows.

    Parameters
    ----------
    window_seconds : int
        Length of a tumbling window aligned to the epoch.
    """

    def __init__(self, window_seconds: int) -> None:
        self.window_seconds = window_seconds
        self.open: dict[tuple[str, int], A] = {}

    def accumulator(self, entity: str, ts: float) -> A:
        """Return the accumulator of ``entity``'s window that contains ``ts``, opening it if needed."""
        return self.accumulator_at(entity, int(ts // self.window_seconds) * self.window_seconds)

    def accumulator_at(self, entity: str, start: int) -> A:
        """Return the accumulator of ``entity``'s window that starts at ``start``, opening it if needed."""
        key = (entity, start)
        found = self.open.get(key)
        if found is None:
            found = self.open[key] = self.new_accumulator(entity, start)
        return found

    def rounds(self, round_seconds: int) -> set[int]:
        """Return the starts of the rounds that have an open window."""
        return {start - start % round_seconds for _, start in self.open}

    def close(self, rounds: set[int] | None = None, *, round_seconds: int = 1) -> list[Window]:
        """Close and return the windows of ``rounds`` (every window when None), sorted by start."""
        closed = []
        for key in list(self.open):
            if rounds is not None and key[1] - key[1] % round_seconds not in rounds:
                continue
            window = self.close_accumulator(self.open.pop(key))
            if window is not None:
                closed.append(window)
        closed.sort(key=lambda w: (w.start, w.entity))
        return closed

    def discard(self, rounds: set[int], *, round_seconds: int) -> None:
        """Drop the open windows of ``rounds`` without closing them."""
        for key in [k for k in self.open if k[1] - k[1] % round_seconds in rounds]:
            del self.open[key]

    def to_state(self) -> list[Any]:
        """Return the open windows as a JSON-ready list."""
        return [self.dump_accumulator(a) for a in self.open.values()]

    def load_state(self, items: list[Any]) -> None:
        """Add the windows of a list made by :meth:`to_state`."""
        for item in items:
            accumulator = self.load_accumulator(item)
            entity, start = self.key_of(accumulator)
            self.open[(entity, start)] = accumulator

    @abstractmethod
    def new_accumulator(self, entity: str, start: int) -> A: ...

    @abstractmethod
    def close_accumulator(self, accumulator: A) -> Window | None:
        """Return the window's features and observables, or None when it has no scorable event."""

    @abstractmethod
    def dump_accumulator(self, accumulator: A) -> Any: ...

    @abstractmethod
    def load_accumulator(self, item: Any) -> A: ...

    @abstractmethod
    def key_of(self, accumulator: A) -> tuple[str, int]: ...


def counter_from(items: dict[str, int] | None) -> Counter[str]:
    """Return a Counter of a JSON object of counts."""
    return Counter({str(k): int(v) for k, v in (items or {}).items()})
