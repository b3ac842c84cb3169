"""Result type and interface of SIEM file sinks, so the hub can count and log rejected events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SinkResult:
    """Outcome of one batch: events written, and the ids of indicators left out with why."""

    written: int
    rejected: tuple[tuple[str, str], ...] = field(default=())


class IndicatorSink(Protocol):
    """A destination for published STIX indicators."""

    # Short name used in logs and metrics labels.
    name: str

    def write_indicators(self, indicators: Sequence[Mapping[str, Any]]) -> SinkResult:
        """Convert and append one batch of indicators; return what was written."""
        ...
