"""Errors raised by the agent.

``AgentError`` is the root. Its family:

- ``ConfigError``: a configuration value is invalid (file, line, key, value, fix).
- ``DetectorError``: the detector cannot be trained or used (``BaselineTooSmall``,
  ``DegenerateBaseline``).
- ``DeliveryError``: a summary could not be delivered to the hub (kept in the outbox).
- ``LogReadError``: a log file cannot be opened, read or decompressed.
- ``MalformedLogLine``: one log line cannot become a record. The Zeek reader does not raise it;
  it counts, logs and keeps it in ``agent.zeek.ParseStats`` and goes on with the next line.
"""

from __future__ import annotations

from typing import Any

from fti.config_text import displayable_value


class AgentError(Exception):
    """Root of every error raised by the agent."""


# Configuration keys whose values errors never show.
SECRET_KEYS = ("password",)


class ConfigError(AgentError):
    """A configuration value is invalid."""

    def __init__(self, source: str, line: int, key: str, value: Any, fix: str) -> None:
        # A secret is never shown, even one of the wrong type.
        if value is not None and key.rsplit(".", 1)[-1] in SECRET_KEYS:
            value = "***"
        value = displayable_value(value)
        self.source, self.line, self.key, self.value, self.fix = source, line, key, value, fix
        where = f"{source}:{line}" if line else source
        if not key:
            subject = ""
        elif value is None:
            subject = f"{key}: "
        else:
            subject = f"{key} = {value!r}: "
        super().__init__(f"{where}: {subject}{fix}")


class DetectorError(AgentError):
    """The anomaly detector cannot be trained or applied."""


class BaselineTooSmall(DetectorError):
    def __init__(self, windows: int, required: int) -> None:
        self.windows, self.required = windows, required
        super().__init__(
            f"the baseline has {windows} windows but calibration needs at least {required}; "
            "raise detector.baseline_rounds or replay more data before the first round"
        )


class DegenerateBaseline(DetectorError):
    def __init__(self, windows: int, features: int) -> None:
        self.windows, self.features = windows, features
        super().__init__(
            f"all {features} features are constant over the {windows} baseline windows, so no "
            "detector can rank them; check that the sources carry real traffic"
        )


class DeliveryError(AgentError):
    """A summary could not be delivered to the hub."""

    def __init__(self, url: str, reason: str, *, transient: bool, retry_after_secs: float | None = None) -> None:
        self.url, self.reason, self.transient = url, reason, transient
        # The wait the server asked for in a Retry-After header, if it sent one.
        self.retry_after_secs = retry_after_secs
        kind = "will retry" if transient else "not retried"
        super().__init__(f"delivery to {url} failed ({kind}): {reason}")


class LogReadError(AgentError):
    """A log file cannot be opened, read or decompressed."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot read log file {path}: {reason}")


class MalformedLogLine(AgentError):
    """One log line that cannot become a record, with where it is and why.

    ``reason`` is the counter key in ``ParseStats.malformed`` (for example ``column_count`` or
    ``invalid_value:orig_bytes``); ``detail`` is the human-readable explanation.
    """

    def __init__(self, source: str, line: int, reason: str, detail: str) -> None:
        self.source, self.line, self.reason, self.detail = source, line, reason, detail
        super().__init__(f"{source} line {line}: {detail}; line skipped")
