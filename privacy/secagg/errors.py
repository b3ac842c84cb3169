"""Exceptions raised by the secure aggregation protocol.

Every exception derives from :class:`SecAggError`, itself a
:class:`privacy.errors.PrivacyError`, and stores the values that describe the failure::

    SecAggError
    ├── ShareRejected        a Shamir share or encrypted share message is malformed,
    │                        replayed, or addressed to another site or round
    ├── MessageRejected      a key advertisement, masked input or unmask response is
    │                        malformed or comes from a site outside the expected set
    └── RoundAborted         fewer than ``threshold`` sites are left at a stage, or the
                             shares are inconsistent; nothing about the inputs is revealed
"""

from __future__ import annotations

from privacy.errors import PrivacyError

__all__ = ["MessageRejected", "RoundAborted", "SecAggError", "ShareRejected"]


class SecAggError(PrivacyError):
    """Root of every error raised by the secure aggregation protocol."""


class ShareRejected(SecAggError):
    """A share, or the encrypted message carrying it, is rejected.

    Parameters
    ----------
    sender : str
        Site that sent the share, as claimed by the message.
    reason : str
        Why it was rejected, e.g. ``"replayed: a share from this site was already accepted"``.
    """

    def __init__(self, sender: str, reason: str) -> None:
        self.sender = sender
        self.reason = reason
        super().__init__(f"share from site {sender!r} rejected: {reason}")


class MessageRejected(SecAggError):
    """A protocol message other than a share is rejected.

    Parameters
    ----------
    stage : str
        Stage whose input it was, e.g. ``"collect_masked_inputs"``.
    sender : str
        Site named in the message.
    reason : str
        Why it was rejected.
    """

    def __init__(self, stage: str, sender: str, reason: str) -> None:
        self.stage = stage
        self.sender = sender
        self.reason = reason
        super().__init__(f"{stage}: message from site {sender!r} rejected: {reason}")


class RoundAborted(SecAggError):
    """The round stops without an output.

    Parameters
    ----------
    round_id : str
        The aborted round.
    stage : str
        Stage at which it stopped.
    survivors : int
        Sites still taking part at that stage.
    threshold : int
        Minimum number of sites the stage needs.
    reason : str, optional
        Detail when the cause is not the number of sites.
    """

    def __init__(
        self, round_id: str, stage: str, *, survivors: int, threshold: int, reason: str = ""
    ) -> None:
        self.round_id = round_id
        self.stage = stage
        self.survivors = survivors
        self.threshold = threshold
        self.reason = reason
        detail = reason or (
            f"{survivors} sites left but the threshold is {threshold}; "
            "the round output is withheld, so retry the round with more sites online"
        )
        super().__init__(f"secure aggregation round {round_id!r} aborted at {stage}: {detail}")
