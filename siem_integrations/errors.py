"""Exceptions raised by the SIEM integrations.

::

    SiemError
    ├── SinkEventInvalid   an event would be rejected by the SIEM, so it is not written
    └── SinkWriteFailed    the output file could not be written or synced
"""

from __future__ import annotations

from pathlib import Path


class SiemError(Exception):
    """Root of every error raised by siem_integrations."""


class SinkEventInvalid(SiemError):
    """An event breaks a rule of the SIEM's input format.

    Parameters
    ----------
    sink : str
        Sink name (``splunk-hec-file``, ``elastic-bulk-file``).
    event_id : str
        Id of the STIX object the event was built from.
    reason : str
        The rule it breaks.
    """

    def __init__(self, sink: str, event_id: str, reason: str) -> None:
        self.sink = sink
        self.event_id = event_id
        self.reason = reason
        super().__init__(f"{sink}: event for {event_id} not written: {reason}")


class SinkWriteFailed(SiemError):
    """Appending a batch to an NDJSON file failed; nothing after the failure was synced."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot append to {path}: {reason}; check the folder exists and is "
                         "writable by the hub")
