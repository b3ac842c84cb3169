"""The agent's metrics endpoint: a real HTTP server on loopback, parsed as Prometheus text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import AgentMetrics
from agent.metrics_server import MetricsServer


@pytest.fixture()
def server() -> Iterator[MetricsServer]:
    running = MetricsServer("127.0.0.1", 0)
    running.start()
    yield running
    running.close()


def test_metrics_served_and_parsed(server: MetricsServer) -> None:
    metrics = AgentMetrics("site-a", lines_malformed={"column_count": 3}, outbox_size=2, outbox_dropped=1,
                           tail_lines={"sources[0]": 40}, bytes_behind={"/logs/conn.log": 512},
                           rounds_by_status={"sent": 4, "beyond_horizon": 2}, epsilon_spent=1.5)
    server.update(metrics.render())

    response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}

    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert samples[("fti_agent_lines_read_total", (("site", "site-a"), ("source", "sources[0]")))] == 40
    assert samples[("fti_agent_lines_malformed_total", (("reason", "column_count"), ("site", "site-a")))] == 3
    assert samples[("fti_agent_bytes_behind", (("file", "/logs/conn.log"), ("site", "site-a")))] == 512
    assert samples[("fti_agent_outbox_size", (("site", "site-a"),))] == 2
    assert samples[("fti_agent_outbox_dropped_total", (("site", "site-a"),))] == 1
    assert samples[("fti_agent_rounds", (("site", "site-a"), ("status", "beyond_horizon")))] == 2
    assert samples[("fti_agent_rounds", (("site", "site-a"), ("status", "sent")))] == 4
    assert samples[("fti_agent_privacy_epsilon_spent", (("site", "site-a"),))] == 1.5


def test_metrics_other_path_not_found(server: MetricsServer) -> None:
    response = requests.get(f"http://127.0.0.1:{server.port}/", timeout=5)

    assert response.status_code == 404


def test_metrics_port_taken_raises(server: MetricsServer) -> None:
    with pytest.raises(OSError):
        MetricsServer("127.0.0.1", server.port)
