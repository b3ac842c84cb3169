"""Fused indicators as Splunk HTTP Event Collector events, appended to an NDJSON file.

Each line is one HEC event object, the body format of ``/services/collector/event``. A batch
sent to HEC is these objects one after another, never a JSON array, which HEC rejects with
"Invalid data format" (code 6). A forwarder or ``curl --data-binary @file`` can post the file
as is. Events come from ``stix_mappings.splunk.indicator_to_hec_event``.

Before it is written, every event is checked against the rules HEC enforces at ingestion
(Splunk Enterprise 9.x, "Format events for HTTP Event Collector"):

- only the keys ``time``, ``host``, ``source``, ``sourcetype``, ``index``, ``event`` and
  ``fields``;
- a non-empty ``event`` (code 13, "Event field cannot be blank");
- flat ``fields``, each value a string, number or list of them (code 15, "Error in handling
  indexed fields").

An event that breaks a rule is left out and reported in the result, so one bad event never
blocks the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from siem_integrations.errors import SinkEventInvalid
from siem_integrations.ndjson_file import NdjsonAppender, dump_line
from siem_integrations.sink import SinkResult
from stix_mappings.splunk import hec_event_problems, indicator_to_hec_event

log = logging.getLogger(__name__)

HEC_KEYS = frozenset({"time", "host", "source", "sourcetype", "index", "event", "fields"})


class SplunkHecFileSink:
    """Append fused indicators to a file of HEC events.

    Parameters
    ----------
    path : Path
        NDJSON output file.
    index : str or None
        Splunk index put in every event; None leaves it to the HEC token's default index.
    host : str
        HEC ``host`` of every event, usually the hub's name.
    """

    name = "splunk-hec-file"

    def __init__(self, path: Path, *, index: str | None, host: str) -> None:
        self.path = Path(path)
        self.index = index
        self.host = host
        self._appender = NdjsonAppender(self.path)

    def write_indicators(self, indicators: Sequence[Mapping[str, Any]]) -> SinkResult:
        """Convert, check and append one batch; fsync before returning.

        Raises
        ------
        SinkWriteFailed
            If the file cannot be written; nothing of the batch is reported as written.
        """
        lines: list[str] = []
        rejected: list[tuple[str, str]] = []
        for indicator in indicators:
            indicator_id = str(indicator.get("id", "?"))
            try:
                event = indicator_to_hec_event(dict(indicator), index=self.index, host=self.host)
                validate_hec_event(event, event_id=indicator_id)
                lines.append(dump_line(event))
            except (SinkEventInvalid, ValueError, KeyError, TypeError) as err:
                rejected.append((indicator_id, str(err)))
        self._appender.append(lines)
        if rejected:
            log.error("%s: %d of %d events left out of %s; first: %s", self.name, len(rejected),
                      len(indicators), self.path, rejected[0][1])
        return SinkResult(written=len(lines), rejected=tuple(rejected))


def validate_hec_event(event: Mapping[str, Any], *, event_id: str) -> None:
    """Check one event against the HEC rules listed in the module docstring.

    ``stix_mappings.splunk.hec_event_problems`` checks ``event``, ``time`` and ``fields``;
    the top-level keys and metadata types are checked here.

    Raises
    ------
    SinkEventInvalid
        Naming the first rule the event breaks.
    """
    problems = []
    unknown = sorted(set(event) - HEC_KEYS)
    if unknown:
        problems.append(f"HEC accepts no top-level key {unknown[0]!r}; move it into 'fields'")
    for key in ("host", "source", "sourcetype", "index"):
        if key in event and not isinstance(event[key], str):
            problems.append(f"{key!r} must be a string; got {event[key]!r}")
    problems.extend(hec_event_problems(event))
    if problems:
        raise SinkEventInvalid(SplunkHecFileSink.name, event_id, problems[0])
