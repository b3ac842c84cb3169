"""Agent metrics in the Prometheus text exposition format.

A replay run writes them to ``metrics.prom`` in the state folder, the file layout that the
node exporter's textfile collector reads. ``fti agent run`` writes the same file at each
checkpoint and also serves the text over HTTP on loopback (:mod:`agent.metrics_server`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class AgentMetrics:
    site_id: str
    lines_read: int = 0
    lines_malformed: dict[str, int] = field(default_factory=dict)
    connections: int = 0
    rounds_released: int = 0
    rounds_budget_exhausted: int = 0
    observables_released: int = 0
    summaries_delivered: int = 0
    summaries_rejected: int = 0
    outbox_size: int = 0
    alerts_written: int = 0
    # Conn records without a usable ts, id.orig_h or id.resp_h, which parse but make no connection.
    conn_records_skipped: int = 0
    epsilon_spent: float = 0.0
    epsilon_budget: float = 0.0
    budget_exhausted: bool = False
    # Live run only: complete lines read per source ("sources[0]"), bytes between the last
    # line read and each open file's end, summaries dropped from a full outbox, and rounds in
    # the state by status (queued, sent, beyond_horizon, dropped, ...).
    tail_lines: dict[str, int] = field(default_factory=dict)
    bytes_behind: dict[str, int] = field(default_factory=dict)
    outbox_dropped: int = 0
    rounds_by_status: dict[str, int] = field(default_factory=dict)
    # Live run only: malformed lines by (source, reason).
    parse_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    # Live run only: events whose round had been released when they arrived, so they were dropped.
    events_late: int = 0

    def observe_parse(self, stats: Any, connections: int) -> None:
        self.lines_read += getattr(stats, "records", 0)
        for reason, count in dict(getattr(stats, "malformed", {}) or {}).items():
            self.lines_malformed[reason] = self.lines_malformed.get(reason, 0) + count
        self.connections += connections

    def observe_release(self, observables: int) -> None:
        self.rounds_released += 1
        self.observables_released += observables

    def observe_budget(self, status: Any) -> None:
        self.epsilon_spent = status.epsilon_spent
        self.epsilon_budget = status.epsilon_budget
        self.budget_exhausted = bool(status.exhausted) or self.rounds_budget_exhausted > 0

    def observe_delivery(self, delivery: Any, outbox_size: int) -> None:
        self.summaries_delivered += delivery.delivered
        self.summaries_rejected += delivery.rejected
        self.outbox_size = outbox_size

    def render(self) -> str:
        site = _label(self.site_id)
        lines = []

        def metric(name: str, kind: str, help_text: str, value: float, labels: str = "") -> None:
            if not any(line.startswith(f"# TYPE {name} ") for line in lines):
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
            lines.append(f'{name}{{site="{site}"{labels}}} {value}')

        for source, count in sorted(self.tail_lines.items()):
            metric("fti_agent_lines_read_total", "counter", "Complete log lines read, by configured source.",
                   count, f',source="{_label(source)}"')
        for path, behind in sorted(self.bytes_behind.items()):
            metric("fti_agent_bytes_behind", "gauge", "Bytes between the last line read and the end of the file.",
                   behind, f',file="{_label(path)}"')
        metric("fti_agent_records_read_total", "counter", "Log records parsed.", self.lines_read)
        for reason, count in sorted(self.lines_malformed.items()):
            metric("fti_agent_lines_malformed_total", "counter", "Malformed log lines skipped, by reason.",
                   count, f',reason="{_label(reason)}"')
        for (source, reason), count in sorted(self.parse_errors.items()):
            metric("fti_agent_parse_errors_total", "counter", "Malformed log lines skipped, by source and reason.",
                   count, f',source="{_label(source)}",reason="{_label(reason)}"')
        metric("fti_agent_connections_total", "counter", "Connections with a site entity.", self.connections)
        metric("fti_agent_conn_records_skipped_total", "counter",
               "Conn records skipped because ts, id.orig_h or id.resp_h is missing or invalid.",
               self.conn_records_skipped)
        metric("fti_agent_events_late_total", "counter",
               "Events dropped because their round had been released when they arrived.", self.events_late)
        metric("fti_agent_rounds_released_total", "counter", "Rounds summarised and queued.", self.rounds_released)
        metric("fti_agent_rounds_budget_exhausted_total", "counter",
               "Rounds not released because the privacy budget was spent.", self.rounds_budget_exhausted)
        metric("fti_agent_observables_released_total", "counter", "Observables released by partition selection.",
               self.observables_released)
        metric("fti_agent_summaries_delivered_total", "counter", "Summaries the hub accepted.",
               self.summaries_delivered)
        metric("fti_agent_summaries_rejected_total", "counter", "Summaries the hub rejected for good.",
               self.summaries_rejected)
        metric("fti_agent_outbox_size", "gauge", "Summaries waiting for delivery.", self.outbox_size)
        metric("fti_agent_outbox_dropped_total", "counter",
               "Summaries of the oldest rounds dropped because the outbox was full.", self.outbox_dropped)
        for status, count in sorted(self.rounds_by_status.items()):
            metric("fti_agent_rounds", "gauge", "Rounds recorded in the agent's state, by status.",
                   count, f',status="{_label(status)}"')
        metric("fti_agent_alerts_written_total", "counter", "Local alerts written.", self.alerts_written)
        metric("fti_agent_privacy_epsilon_spent", "gauge", "Epsilon composed over the budget period.",
               self.epsilon_spent)
        metric("fti_agent_privacy_epsilon_budget", "gauge", "Configured epsilon budget for the period.",
               self.epsilon_budget)
        metric("fti_agent_privacy_budget_exhausted", "gauge", "1 when releases stopped for lack of budget.",
               int(self.budget_exhausted))
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        """Replace the metrics file atomically, so a scraper never reads half of it."""
        temporary = path.with_suffix(".tmp")
        temporary.write_text(self.render(), encoding="utf-8")
        os.replace(temporary, path)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
