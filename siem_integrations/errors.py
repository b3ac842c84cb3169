"""Exceptions raised by the SIEM integrations.

::

    SiemError
    ├── SinkEventInvalid   an event would be rejected by the SIEM, so it is not written
    ├── SinkWriteFailed    the output file could not be written or synced
    ├── TransportFailed    no HTTP response from the SIEM (connection refused, timeout, TLS)
    ├── SiemAuthFailed     the SIEM rejected the credential (401/403); sending stops
    ├── SiemRequestRejected the SIEM rejected a whole request for a configuration reason
    ├── SiemResponseInvalid the SIEM (or a proxy) answered with a body the client cannot read
    └── SyncFailed         a TAXII to SIEM sync round could not read its source or checkpoint
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


class TransportFailed(SiemError):
    """No HTTP response arrived from the SIEM; the request may be retried."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"no answer from {url}: {reason}")


class SiemAuthFailed(SiemError):
    """The SIEM rejected the credential; documents stay queued until it is fixed.

    The message names the endpoint and the SIEM's own text, never the credential.
    """

    def __init__(self, sink: str, url: str, status: int, text: str, code: int | None) -> None:
        self.sink, self.url, self.status, self.text, self.code = sink, url, status, text, code
        super().__init__(f"{sink}: {url} rejected the credential with {status} {text!r}"
                         f"{'' if code is None else f' (code {code})'}; documents stay queued; "
                         "fix the token or API key and restart")


class SiemRequestRejected(SiemError):
    """The SIEM rejected a whole request for a reason no retry can fix (index, channel)."""

    def __init__(self, sink: str, url: str, status: int, text: str, code: int | None) -> None:
        self.sink, self.url, self.status, self.text, self.code = sink, url, status, text, code
        super().__init__(f"{sink}: {url} rejected the request with {status} {text!r}"
                         f"{'' if code is None else f' (code {code})'}; documents stay queued")


class SiemResponseInvalid(SiemError):
    """Error for a SIEM response the client cannot read, so nothing in it counts as confirmed.

    The documents of the request stay queued and are sent again. Fixed ids make the
    repeat harmless.
    """

    def __init__(self, sink: str, url: str, status: int, reason: str, queued: int) -> None:
        self.sink, self.url, self.status, self.reason, self.queued = (sink, url, status, reason,
                                                                      queued)
        super().__init__(f"{sink}: {url} responded {status} with an invalid body ({reason}); "
                         f"its {queued} documents stay queued for the next flush; check for a "
                         "proxy in front of the SIEM")


class SyncFailed(SiemError):
    """A sync round could not read the TAXII source or its checkpoint."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"sync from {source} failed: {reason}")
