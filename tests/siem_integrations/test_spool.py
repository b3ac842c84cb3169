"""The SIEM spool keeps its delivered and dead-letter tables within their caps."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from siem_integrations.spool import Spool, SpooledDocument


def documents(count: int) -> list[SpooledDocument]:
    return [SpooledDocument(f"indicator--{n}@2024-06-03T01:00:00.000Z", "{}") for n in range(count)]


def test_delivered_keys_capped_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", max_delivered_rows=3)
    batch = documents(5)
    spool.enqueue(batch)

    for document in batch:
        spool.mark_delivered([document.key])

    assert [spool.is_delivered(d.key) for d in batch] == [False, False, True, True, True]
    # Recent keys still deduplicate.
    assert spool.enqueue(batch[-1:]) == 0
    spool.close()


def test_dead_letters_capped_counted_and_logged(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool.sqlite", max_dead_letters=2)
    batch = documents(4)
    spool.enqueue(batch)

    with caplog.at_level(logging.WARNING, logger="siem_integrations.spool"):
        for document in batch:
            spool.dead_letter(document.key, reason="mapping error", code="400")

    assert [d.key for d in spool.dead_letters()] == [d.key for d in batch[2:]]
    assert spool.dead_letters_dropped == 2
    assert "1 oldest dead letters dropped over the cap of 2 (2 dropped so far)" in caplog.text
    spool.close()
