"""A backlog larger than one poll's ``max_poll_bytes`` is read in bounded slices."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from agent.config import load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent
import agent.tailer as tailer_module
from agent.tailer import LogTailer, TailCheckpoint
from privacy.random import seeded_random
from tests.agent.test_live import ROUND_SECONDS, START, conn_line, counted_per_round, write_config

LINE = b"x" * 99 + b"\n"  # 100 bytes a line


def poll_counts(tailer: LogTailer) -> tuple[int, int]:
    """Return the lines of one poll and the bytes they span, newlines included."""
    lines = list(tailer.poll_batches())
    count = sum(len(batch.lines) for batch in lines)
    return count, sum(len(line) + 1 for batch in lines for line in batch.lines)


def test_backlog_read_in_bounded_slices(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(LINE * 1000)
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=4096)

    slices = [poll_counts(tailer) for _ in range(25)]
    offsets = [checkpoint.offset for checkpoint in tailer.checkpoints()]
    tailer.close()

    # 4096 bytes hold 40 whole lines; the 41st would end past the bound.
    assert slices == [(40, 4000)] * 25
    assert offsets == [100_000]
    assert not tailer.behind


def test_backlog_offset_stops_at_slice(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(LINE * 1000)
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=4096)

    first = poll_counts(tailer)
    saved = tailer.checkpoints()
    behind = tailer.behind
    bytes_behind = tailer.stats.bytes_behind[str(path)]
    tailer.close()
    resumed = LogTailer([str(path)], use_inotify=False, checkpoints=saved, max_poll_bytes=1 << 20)
    rest = poll_counts(resumed)
    resumed.close()

    assert first == (40, 4000)
    assert [c.offset for c in saved] == [4000]
    assert behind
    assert bytes_behind == 96_000
    assert rest == (960, 96_000)


def test_line_longer_than_bound_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    long_line = b"y" * 9999 + b"\n"
    path.write_bytes(long_line + LINE * 3)
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=4096)

    slices = [poll_counts(tailer) for _ in range(3)]
    tailer.close()

    assert slices == [(1, 10_000), (3, 300), (0, 0)]


def test_partial_last_line_not_counted_behind(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(LINE * 2 + b"no newline yet")
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=4096)

    first = poll_counts(tailer)
    tailer.close()

    assert first == (2, 200)
    assert not tailer.behind


def test_rotated_file_drained_before_close(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(LINE * 100)
    tailer = LogTailer([str(path)], use_inotify=False, rotate_wait_secs=0, max_poll_bytes=4096)
    first = poll_counts(tailer)
    os.rename(path, tmp_path / "app.log.1")

    rest = [poll_counts(tailer) for _ in range(3)]
    closed = tailer.stats.files_closed
    tailer.close()

    assert first == (40, 4000)
    assert rest == [(40, 4000), (20, 2000), (0, 0)]
    assert closed == 1


def test_bytes_behind_sums_rotated_file_and_successor(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(LINE * 100)
    tailer = LogTailer([str(path)], use_inotify=False, rotate_wait_secs=0, max_poll_bytes=4096)
    poll_counts(tailer)
    os.rename(path, tmp_path / "app.log.1")
    path.write_bytes((b"n" * 99 + b"\n") * 50)  # other first bytes, so a new file

    poll_counts(tailer)  # 40 lines of the rotated file, 40 of the new one
    both = tailer.stats.bytes_behind[str(path)]
    poll_counts(tailer)  # the rotated file's last 20 lines, then it closes; 10 of the new one
    successor_only = tailer.stats.bytes_behind[str(path)]
    tailer.close()

    assert both == (100 - 80) * 100 + (50 - 40) * 100
    assert successor_only == 0
    assert tailer.stats.files_closed == 1


def test_gzip_backlog_read_in_slices(tmp_path: Path) -> None:
    path = tmp_path / "app.log.gz"
    path.write_bytes(gzip.compress(LINE * 30_000))
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=4096)

    slices = [poll_counts(tailer) for _ in range(4)]
    tailer.close()

    # A compressed file is decompressed 1 MiB at a time, and a poll stops at the first read
    # that would start past the bound. The first MiB contains 10,485 whole lines; the 76 bytes of
    # the next line wait, with the reader, for the second poll.
    assert slices == [(10_485, 1_048_500), (10_486, 1_048_600), (9_029, 902_900), (0, 0)]


def test_gzip_backlog_decompressed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each poll goes on with the previous poll's reader instead of decompressing from the start again."""
    path = tmp_path / "app.log.gz"
    path.write_bytes(gzip.compress(LINE * 30_000))
    opened = []
    open_gzip = tailer_module._open_gzip
    monkeypatch.setattr(tailer_module, "_open_gzip", lambda fd: opened.append(fd) or open_gzip(fd))
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=4096)

    poll_counts(tailer)
    opened_by_first_poll = len(opened)
    rest = [poll_counts(tailer) for _ in range(2)]
    tailer.close()

    assert sum(count for count, _ in rest) == 30_000 - 10_485
    assert len(opened) == opened_by_first_poll
    assert tailer.stats.bytes_read == 3_000_000


def test_gzip_file_read_to_end_not_opened_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive that a pattern keeps matching is decompressed once and keeps no descriptor open after."""
    path = tmp_path / "conn.00:00:00-01:00:00.log.gz"
    path.write_bytes(gzip.compress(LINE * 1000))
    heads = []
    gzip_head = tailer_module._gzip_head
    monkeypatch.setattr(tailer_module, "_gzip_head", lambda fd, verify=True: heads.append(verify) or gzip_head(fd, verify=verify))
    tailer = LogTailer([str(tmp_path / "*.log.gz")], use_inotify=False, rotate_wait_secs=0)

    counts = [poll_counts(tailer)[0] for _ in range(5)]
    still_open = len(tailer._open)
    saved = tailer.checkpoints()
    tailer.close()
    heads.clear()
    restarted = LogTailer([str(tmp_path / "*.log.gz")], use_inotify=False, rotate_wait_secs=0, checkpoints=saved)
    after_restart = [poll_counts(restarted)[0] for _ in range(3)]
    open_after_restart = len(restarted._open)
    restarted.close()

    assert counts == [1000, 0, 0, 0, 0]
    assert still_open == 0
    assert after_restart == [0, 0, 0]
    assert open_after_restart == 0
    assert heads == [False]  # one look at the first bytes, no decompression of the whole file


def test_gzip_file_replaced_at_same_inode_is_read(tmp_path: Path) -> None:
    path = tmp_path / "app.log.gz"
    path.write_bytes(gzip.compress(LINE * 10))
    tailer = LogTailer([str(tmp_path / "*.gz")], use_inotify=False, rotate_wait_secs=0)
    first = [poll_counts(tailer)[0] for _ in range(2)]
    with path.open("r+b") as stream:  # same inode, other content
        stream.truncate(0)
        stream.write(gzip.compress((b"z" * 99 + b"\n") * 7))

    second = [poll_counts(tailer)[0] for _ in range(2)]
    tailer.close()

    assert first == [10, 0]
    assert second == [7, 0]


def test_gzip_poll_abandoned_midway_loses_and_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / "app.log.gz"
    path.write_bytes(gzip.compress(b"".join(b"%099d\n" % number for number in range(30_000))))
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=4096)

    lines = [line for batch in tailer.poll_batches() for line in batch.lines]
    second = tailer.poll_batches()
    lines.extend(next(second).lines)
    second.close()  # a consumer that stops part-way through a poll
    while tailer.behind or tailer.stats.files_closed == 0:
        batches = list(tailer.poll_batches())
        if not batches:
            break
        lines.extend(line for batch in batches for line in batch.lines)
    tailer.close()

    assert [int(line) for line in lines] == list(range(30_000))


def test_backlog_memory_not_proportional_to_file(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    with path.open("wb") as stream:
        for _ in range(200):
            stream.write(LINE * 1000)  # 20 MB in all
    tailer = LogTailer([str(path)], use_inotify=False, max_poll_bytes=256 << 10)

    tracemalloc.start()
    lines = 0
    peaks = []
    try:
        for _ in range(200):
            # Each slice is held in full, as the live agent keeps it while parsing.
            batches = list(tailer.poll_batches())
            lines += sum(len(batch.lines) for batch in batches)
            del batches
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.reset_peak()
            if not tailer.behind:
                break
    finally:
        tracemalloc.stop()
        tailer.close()

    assert lines == 200_000
    # 256 KiB of 100-byte lines costs about 0.35 MB as bytes objects, against 20 MB of file.
    assert max(peaks) < 2_000_000


def live_tail_offsets(state_dir: Path) -> list[int]:
    with sqlite3.connect(state_dir / "agent.sqlite") as db:
        value = db.execute("SELECT value FROM checkpoints WHERE name = 'live'").fetchone()[0]
    return [TailCheckpoint.from_dict(c).offset for c in json.loads(value)["tail"]["0"]]


def test_live_backlog_counts_once_across_restart(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path))
    log_file = tmp_path / "logs" / "conn.log"
    lines = [conn_line(n) for n in range(ROUND_SECONDS + 61)]
    log_file.write_text("".join(lines))
    settings = LiveSettings(round_grace_secs=60, max_poll_bytes=16 << 10)
    agent = Agent(config, rng=seeded_random(1))

    first = LiveAgent(agent, settings)
    report = first.step()
    first.commit()
    offsets = live_tail_offsets(config.state_dir)
    second = LiveAgent(agent, settings)
    reports = [second.step() for _ in range(40)]
    agent.close()

    # The first slice contains the whole lines that fit in 16 KiB.
    ends = list(itertools.accumulate(len(line) for line in lines))
    read = sum(1 for end in ends if end <= 16 << 10)
    assert report.lines == read
    assert report.behind
    assert offsets == [sum(len(line) for line in lines[:read])]
    assert report.connections == read
    assert sum(r.lines for r in reports) == len(lines) - read
    assert not reports[-1].behind
    assert counted_per_round(config.state_dir)[0] == {START: ROUND_SECONDS}
