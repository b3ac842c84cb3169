"""Prometheus counters of one hub, served as text at ``/metrics``.

Each ``HubServer`` owns its own ``CollectorRegistry`` instead of the process-global one, so
several hubs in one process (tests, the demo) keep separate counts. Label values are bounded
sets (endpoint templates, status codes, rejection reasons), never ids or site names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class HubMetrics:
    """The hub's counters; see each attribute for its labels."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fti_hub_requests", "HTTP requests answered, by endpoint template and status.",
            ["method", "endpoint", "status"], registry=self.registry,
        )
        self.request_seconds = Histogram(
            "fti_hub_request_duration_seconds", "Time spent answering HTTP requests.",
            ["endpoint"], registry=self.registry,
        )
        self.auth_failures = Counter(
            "fti_hub_auth_failures", "Rejected credentials and API tokens, by reason.",
            ["reason"], registry=self.registry,
        )
        self.auth_throttled = Counter(
            "fti_hub_auth_throttled",
            "Credential checks answered 429 before argon2id ran, by the limit that applied "
            "(address, username, address_concurrency or concurrency).",
            ["scope"], registry=self.registry,
        )
        self.rate_limited = Counter(
            "fti_hub_rate_limited", "Requests rejected with 429 by the per-credential limit.",
            ["credential_kind"], registry=self.registry,
        )
        self.summaries_accepted = Counter(
            "fti_hub_summaries_accepted", "Round summaries stored as a site's contribution.",
            registry=self.registry,
        )
        self.summaries_rejected = Counter(
            "fti_hub_summaries_rejected", "Objects posted to summaries and rejected, by reason.",
            ["reason"], registry=self.registry,
        )
        self.rounds_closed = Counter(
            "fti_hub_rounds_closed", "Rounds closed, by what closed them.",
            ["reason"], registry=self.registry,
        )
        self.indicators_published = Counter(
            "fti_hub_indicators_published", "Fused indicator versions stored and exported.",
            registry=self.registry,
        )
        self.indicators_refused = Counter(
            "fti_hub_indicators_refused", "Fused indicators not published, by reason.",
            ["reason"], registry=self.registry,
        )
        self.indicators_revoked = Counter(
            "fti_hub_indicators_revoked", "Fused indicators revoked after their valid_until.",
            registry=self.registry,
        )
        self.sink_failures = Counter(
            "fti_hub_sink_failures", "SIEM file batches that could not be written, by sink.",
            ["sink"], registry=self.registry,
        )

    def render(self) -> bytes:
        """Return every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)
