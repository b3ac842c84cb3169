"""Deliver queued round summaries to the hub's ``summaries`` collection with taxii2-client.

A summary leaves the outbox only when the hub's status resource lists it as a success, or as
a failure the hub will never accept, such as a second contribution or an invalid signature.
Anything else is transient: a refused connection, a 5xx page from a proxy, a response with the
wrong media type. The summary then stays queued and the next attempt sends the same bytes.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import requests
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Collection

from agent.config import HubSection
from agent.errors import DeliveryError
from agent.state import AgentState, OutboxItem
from agent.taxii_client import delivery_error, open_collection

log = logging.getLogger(__name__)

# Seconds between polls of a pending status resource; the hub usually returns it complete.
_STATUS_POLL_SECS = 0.2

# Maximum wait between two attempts, whatever the attempt count. The doubling reaches it
# after a handful of failures, and a hub back after an outage is then found within minutes.
MAX_RETRY_DELAY_SECS = 300.0


def backoff_delay_secs(attempt: int, base_secs: float, *, rng: random.Random) -> float:
    """Return the wait after failed attempt ``attempt`` (1-based): exponential, capped, full jitter.

    The wait is uniform in ``[0, min(MAX_RETRY_DELAY_SECS, base_secs * 2 ** (attempt - 1))]``.
    Drawing it from the whole range keeps agents that failed together from retrying in
    lockstep after a hub restart.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1; got {attempt}")
    # The exponent is capped too, so that a long outage cannot overflow the float.
    ceiling = min(MAX_RETRY_DELAY_SECS, base_secs * 2.0 ** min(attempt - 1, 64))
    return rng.uniform(0.0, ceiling)


@dataclass
class DeliveryReport:
    delivered: int = 0
    rejected: int = 0
    pending: int = 0


class SummarySender:
    """Send outbox items, retrying transient failures with exponential backoff and jitter."""

    def __init__(self, hub: HubSection, password: str, state: AgentState, *, site_id: str,
                 rng: random.Random | None = None) -> None:
        self.hub, self._password, self.state, self.site_id = hub, password, state, site_id
        self._collection: Collection | None = None
        # Jitter only spreads retries in time, so it needs no cryptographic generator.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311

    def deliver_pending(self) -> DeliveryReport:
        """Send the outbox in round order until a summary cannot be delivered.

        A failure that is not the hub's verdict on one summary (a refused connection, an
        HTTP error, a bad credential) would repeat for every later summary. The run therefore
        stops there and leaves the rest queued instead of spending every summary's retries.
        """
        report = DeliveryReport()
        items = self.state.pending()
        for index, item in enumerate(items):
            outcome = self._deliver_with_retries(item)
            if outcome == "pending":
                report.pending += len(items) - index
                if len(items) - index > 1:
                    log.error("site %s: delivery stopped at round %d; %d later summaries stay in the outbox "
                              "for the next run", self.site_id, item.round_start, len(items) - index - 1)
                break
            setattr(report, outcome, getattr(report, outcome) + 1)
        return report

    def _deliver_with_retries(self, item: OutboxItem) -> str:
        for attempt in range(1, self.hub.max_send_attempts + 1):
            try:
                return self._deliver(item)
            except DeliveryError as err:
                self.state.mark_attempt(item.summary_id, err.reason)
                if not err.transient:
                    log.error("site %s: summary %s for round %d not delivered: %s; kept in the outbox",
                              self.site_id, item.summary_id, item.round_start, err)
                    return "pending"
                if attempt == self.hub.max_send_attempts:
                    log.error("site %s: summary %s for round %d still undelivered after %d attempts: %s; "
                              "kept in the outbox", self.site_id, item.summary_id, item.round_start, attempt, err)
                    return "pending"
                delay = backoff_delay_secs(attempt, self.hub.retry_backoff_secs, rng=self._rng)
                log.warning("site %s: delivery of round %d failed (%s); retry %d of %d in %.2f s",
                            self.site_id, item.round_start, err.reason, attempt, self.hub.max_send_attempts - 1, delay)
                self._collection = None
                time.sleep(delay)
        return "pending"

    def _deliver(self, item: OutboxItem) -> str:
        collection = self._summaries()
        envelope = ('{"objects":[' + item.body + "]}").encode("utf-8")
        try:
            status = collection.add_objects(
                envelope, wait_for_completion=True, poll_interval=_STATUS_POLL_SECS, timeout=self.hub.timeout_secs
            )
        except (requests.RequestException, TAXIIServiceException, ValueError) as err:
            raise delivery_error(collection.url, err) from err

        successes = {s.get("id") for s in (status.successes or [])}
        failures = {f.get("id"): f.get("message", "") for f in (status.failures or [])}
        if item.summary_id in successes:
            self.state.mark_delivered(item.summary_id)
            log.info("site %s: round %d summary %s delivered", self.site_id, item.round_start, item.summary_id)
            return "delivered"
        if item.summary_id in failures:
            # The hub checked the summary and will never accept these bytes: keeping them
            # would only repeat the failure. Record it for the operator.
            self.state.mark_delivered(item.summary_id, status="rejected")
            log.error("site %s: hub rejected round %d summary %s: %s",
                      self.site_id, item.round_start, item.summary_id, failures[item.summary_id])
            return "rejected"
        raise DeliveryError(collection.url, f"status {status.status} does not list summary {item.summary_id}",
                            transient=True)

    def _summaries(self) -> Collection:
        if self._collection is None:
            self._collection = open_collection(self.hub, self._password, self.hub.summaries_collection)
        return self._collection

