"""The outbox bound: past ``max_outbox`` the oldest rounds' summaries go, never the newest."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.state import AgentState

START = 1_717_372_800


def summary(round_start: int) -> dict:
    return {"id": f"x-fti-round-summary--{round_start}", "evidence": []}


def test_full_outbox_drops_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = AgentState(tmp_path / "agent.sqlite", max_outbox=3)

    with caplog.at_level(logging.WARNING, logger="agent.state"):
        for hour in range(5):
            state.queue_summary(START + hour * 3600, summary(START + hour * 3600), [])
    pending = [item.round_start for item in state.pending()]
    statuses = state.round_statuses()
    counts = state.count_rounds_by_status()
    dropped = state.outbox_dropped
    state.close()

    assert pending == [START + 2 * 3600, START + 3 * 3600, START + 4 * 3600]
    assert statuses[START] == "dropped"
    assert statuses[START + 3600] == "dropped"
    assert counts == {"dropped": 2, "queued": 3}
    assert dropped == 2
    assert [r.getMessage() for r in caplog.records] == [
        "outbox full (3 summaries, outbox.max_summaries): dropped the summaries of the oldest rounds "
        "2024-06-03T00:00:00+00:00; they will not be sent",
        "outbox full (3 summaries, outbox.max_summaries): dropped the summaries of the oldest rounds "
        "2024-06-03T01:00:00+00:00; they will not be sent",
    ]


def test_full_outbox_keeps_newest(tmp_path: Path) -> None:
    """A summary queued last stays, whatever its round: the bound never drops the newest."""
    state = AgentState(tmp_path / "agent.sqlite", max_outbox=1)

    state.queue_summary(START + 3600, summary(START + 3600), [])
    state.queue_summary(START, summary(START), [])
    pending = [item.round_start for item in state.pending()]
    state.close()

    assert pending == [START]


def test_unbounded_outbox_keeps_everything(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "agent.sqlite")

    for hour in range(20):
        state.queue_summary(START + hour * 3600, summary(START + hour * 3600), [])
    size = state.outbox_size()
    state.close()

    assert size == 20


def test_outbox_bound_below_one_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_outbox must be >= 1; got 0"):
        AgentState(tmp_path / "agent.sqlite", max_outbox=0)
