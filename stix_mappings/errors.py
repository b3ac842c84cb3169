"""Errors raised while building, parsing or mapping STIX objects.

Every error derives from :class:`StixMappingError`, which is a :class:`ValueError`
because each one reports an input value that the wire contract does not allow::

    StixMappingError
    ├── TimestampInvalid      a timestamp is naive or not a STIX timestamp
    ├── PatternRejected       an observable value cannot become a STIX pattern
    ├── SummaryInvalid        a round summary breaks its schema or a semantic rule
    ├── IndicatorInvalid      an argument of the fused-indicator builder is out of range
    └── UnsupportedIndicator  an indicator cannot be mapped to ECS or Splunk HEC

Each error stores the fields that describe the failure, so callers (the hub's
intake status, the agent's log) can report them without parsing the message.
"""

from __future__ import annotations

from collections.abc import Sequence


class StixMappingError(ValueError):
    """Root of every error raised by stix_mappings."""


class TimestampInvalid(StixMappingError):
    """A timestamp is naive, unparsable or not in STIX form.

    Parameters
    ----------
    field : str
        Name of the property or argument that contains the timestamp.
    value : object
        The value received.
    reason : str
        The rule it breaks.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} {reason}; got {value!r}")


class PatternRejected(StixMappingError):
    """An observable value cannot be turned into a STIX pattern of the given kind.

    Parameters
    ----------
    value : str
        The observable value.
    kind : str
        The observable kind the caller assigned (``ipv4-addr``, ``file_path``...).
    reason : str
        Why the value does not fit the kind, for example "not an IPv4 address/CIDR".
    """

    def __init__(self, value: str, kind: str, reason: str) -> None:
        self.value = value
        self.kind = kind
        self.reason = reason
        super().__init__(f"cannot build a STIX pattern for {kind} value {value!r}: {reason}")


class SummaryInvalid(StixMappingError):
    """A round summary fails its JSON schema or a semantic check.

    Parameters
    ----------
    object_id : str
        The summary's ``id`` ("" when it has none).
    errors : sequence of str
        Every problem found, one readable sentence each.
    """

    def __init__(self, object_id: str, errors: Sequence[str]) -> None:
        self.object_id = object_id
        self.errors = tuple(errors)
        listed = "; ".join(self.errors)
        super().__init__(f"round summary {object_id or '(no id)'} is invalid: {listed}")


class IndicatorInvalid(StixMappingError):
    """An argument of the fused-indicator builder is out of range.

    Parameters
    ----------
    field : str
        The argument name.
    value : object
        The value received.
    reason : str
        The rule, written so that "<field> <reason>" reads as a sentence.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} {reason}; got {value!r}")


class UnsupportedIndicator(StixMappingError):
    """An indicator cannot be mapped to a SIEM document.

    Parameters
    ----------
    indicator_id : str
        The indicator's ``id`` ("" when it has none).
    reason : str
        What is missing or not supported.
    """

    def __init__(self, indicator_id: str, reason: str) -> None:
        self.indicator_id = indicator_id
        self.reason = reason
        super().__init__(f"cannot map indicator {indicator_id or '(no id)'}: {reason}")
