"""The live agent follows Sysmon .evtx files: growth, restarts, archives and backlogs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
import agent.evtx_follow as evtx_follow
from agent.events import EventStats, LineReporter
from agent.evtx_follow import EvtxFollower
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent
from agent.sysmon_files import EvtxRecord, iter_evtx_records
from privacy.random import seeded_random
from tests.agent.test_live import write_config

SAMPLE = "evtx-attack-samples/automatedtestingtools/PanacheSysmon_vs_AtomicRedTeam01.evtx"
HEADER = 4096
CHUNK = 65536
# Records of the sample in its first 5, 12 and 17 (all) chunks, ids 1 to 565 in order.
RECORDS_IN_CHUNKS = {5: 202, 12: 475, 17: 565}


@pytest.fixture()
def sample(shared_data_dir: Path) -> bytes:
    return (shared_data_dir / SAMPLE).read_bytes()


def sysmon_config(tmp_path: Path) -> Path:
    config_path = write_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["sources"].append({"type": "sysmon", "paths": [str(tmp_path / "logs" / "*.evtx")]})
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def chunks(data: bytes, first: int, end: int) -> bytes:
    return data[HEADER + first * CHUNK: HEADER + end * CHUNK]


@pytest.mark.shared_data
def test_evtx_growth_counted_once_across_restart(tmp_path: Path, sample: bytes) -> None:
    config = load_agent_config(sysmon_config(tmp_path))
    live_file = tmp_path / "logs" / "sysmon.evtx"
    live_file.write_bytes(sample[:HEADER] + chunks(sample, 0, 5))
    agent = Agent(config, rng=seeded_random(1))
    settings = LiveSettings(round_grace_secs=60)

    first = LiveAgent(agent, settings)
    reports = [first.step()]
    with live_file.open("ab") as stream:
        stream.write(chunks(sample, 5, 12))
    reports.append(first.step())
    first.commit()
    # A crash after the commit: the next run starts from the stored snapshot.
    with live_file.open("ab") as stream:
        stream.write(chunks(sample, 12, 17) + b"\0" * 1000)  # a partial chunk being copied
    second = LiveAgent(agent, settings)
    reports.append(second.step())
    reports.append(second.step())
    agent.close()

    assert [r.lines for r in reports] == [202, 475 - 202, 565 - 475, 0]
    assert sum(second.event_stats.events.values()) == 565 - 475
    assert second.event_stats.errors == {}


@pytest.mark.shared_data
def test_evtx_records_after_commit_read_again_after_crash(tmp_path: Path, sample: bytes) -> None:
    config = load_agent_config(sysmon_config(tmp_path))
    live_file = tmp_path / "logs" / "sysmon.evtx"
    live_file.write_bytes(sample[:HEADER] + chunks(sample, 0, 5))
    agent = Agent(config, rng=seeded_random(1))
    settings = LiveSettings(round_grace_secs=60, commit_interval_secs=3600)

    first = LiveAgent(agent, settings)
    first.step()
    first.commit()
    with live_file.open("ab") as stream:
        stream.write(chunks(sample, 5, 12))
    lost = first.step()
    # A crash here loses the second step, which no snapshot contains.
    second = LiveAgent(agent, settings)
    again = second.step()
    agent.close()

    assert lost.lines == 475 - 202
    assert not lost.committed
    assert again.lines == 475 - 202


@pytest.mark.shared_data
def test_evtx_created_empty_not_read_as_lines(tmp_path: Path, sample: bytes) -> None:
    config = load_agent_config(sysmon_config(tmp_path))
    live_file = tmp_path / "logs" / "sysmon.evtx"
    live_file.write_bytes(b"")
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))

    empty = live.step()
    live_file.write_bytes(sample[:HEADER] + chunks(sample, 0, 5))
    written = live.step()
    agent.close()

    assert empty.lines == 0
    assert written.lines == 202
    assert live.malformed.counts == {}
    assert live.tail_stats()[1].files_opened == 0


@pytest.mark.shared_data
def test_evtx_archive_and_copy_not_read_again(tmp_path: Path, sample: bytes) -> None:
    config = load_agent_config(sysmon_config(tmp_path))
    logs = tmp_path / "logs"
    (logs / "sysmon.evtx").write_bytes(sample[:HEADER] + chunks(sample, 0, 12))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))

    first = live.step()
    # Windows archives the full log under a new name and starts the live file afresh.
    os.rename(logs / "sysmon.evtx", logs / "Archive-Sysmon-2019-07-19.evtx")
    shutil.copy(logs / "Archive-Sysmon-2019-07-19.evtx", logs / "copy.evtx")
    archived = live.step()
    # A log that overwrites its oldest chunks: the first record differs, the ids go on.
    (logs / "sysmon.evtx").write_bytes(sample[:HEADER] + chunks(sample, 3, 17))
    overwritten = live.step()
    agent.close()

    assert first.lines == 475
    assert archived.lines == 0
    assert overwritten.lines == 565 - 475


@pytest.mark.shared_data
def test_evtx_backlog_read_in_bounded_slices(tmp_path: Path, sample: bytes) -> None:
    config = load_agent_config(sysmon_config(tmp_path))
    (tmp_path / "logs" / "sysmon.evtx").write_bytes(sample)
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60, max_poll_bytes=64 << 10))

    reports = [live.step() for _ in range(40)]
    agent.close()

    slices = [r.lines for r in reports if r.lines]
    assert sum(slices) == 565
    assert len(slices) > 5
    assert all(r.behind for r in reports[: len(slices) - 1])
    assert not reports[-1].behind


@pytest.mark.shared_data
def test_evtx_start_at_end_skips_existing(tmp_path: Path, sample: bytes) -> None:
    config = load_agent_config(sysmon_config(tmp_path))
    live_file = tmp_path / "logs" / "sysmon.evtx"
    live_file.write_bytes(sample[:HEADER] + chunks(sample, 0, 5))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60, start_at="end"))

    first = live.step()
    with live_file.open("ab") as stream:
        stream.write(chunks(sample, 5, 17))
    second = live.step()
    agent.close()

    assert first.lines == 0
    assert second.lines == 565 - 202


def record(record_id: int, timestamp: str, computer: str = "pc1") -> EvtxRecord:
    return EvtxRecord(record_id, timestamp, f"<Event><System><EventRecordID>{record_id}</EventRecordID>"
                      f"<Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>{computer}"
                      "</Computer></System></Event>")


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (record(50, "2024-01-01T00:00:00.0000000Z UTC"), 100),  # overlaps what was read
        (record(101, "2024-01-01T00:00:00.0000000Z UTC"), 0),  # starts past it
        (record(1, "2024-02-01T00:00:00.0000000Z UTC"), 0),  # numbering restarted by a clear
        (record(50, "2024-01-01T00:00:00.0000000Z UTC", computer="pc2"), 0),  # another computer
    ],
)
def test_unknown_evtx_file_start(first: EvtxRecord, expected: int) -> None:
    follower = EvtxFollower(["unused/*.evtx"], state={
        "files": {}, "marks": {"pc1/Microsoft-Windows-Sysmon/Operational": [100, "2024-01-15T00:00:00.0000000Z UTC"]}})

    assert follower._start_after("unknown", first, "x.evtx") == expected


def follow(follower: EvtxFollower, stats: EventStats) -> list[int]:
    """Poll once and return the record ids yielded."""
    return [found.record_id for _, found in follower.poll(lambda path: LineReporter(path, stats))]


@pytest.mark.shared_data
def test_evtx_unchanged_chunks_not_parsed_again(tmp_path: Path, sample: bytes,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    live_file = tmp_path / "sysmon.evtx"
    live_file.write_bytes(sample[:HEADER] + chunks(sample, 0, 12))
    parsed = []
    read_chunk = evtx_follow.read_evtx_chunk
    monkeypatch.setattr(evtx_follow, "read_evtx_chunk",
                        lambda header, chunk, *args, **kwargs: parsed.append(chunk) or read_chunk(header, chunk, *args,
                                                                                                  **kwargs))
    follower, stats = EvtxFollower([str(tmp_path / "*.evtx")]), EventStats()

    first = follow(follower, stats)
    parsed_first = len(parsed)
    with live_file.open("ab") as stream:
        stream.write(chunks(sample, 12, 17))
    grown = follow(follower, stats)

    assert first == list(range(1, 476))
    assert grown == list(range(476, 566))
    assert parsed_first == 12
    assert parsed[parsed_first:] == [chunks(sample, i, i + 1) for i in range(12, 17)]


@pytest.mark.shared_data
def test_evtx_chunk_rewritten_in_place_read_again(tmp_path: Path, sample: bytes) -> None:
    """Windows fills the newest chunk in place, so a chunk of the same size can hold new records."""
    live_file = tmp_path / "sysmon.evtx"
    live_file.write_bytes(sample[:HEADER] + chunks(sample, 0, 4) + b"\0" * CHUNK)
    follower, stats = EvtxFollower([str(tmp_path / "*.evtx")]), EventStats()

    before = follow(follower, stats)
    with live_file.open("r+b") as stream:
        stream.seek(HEADER + 4 * CHUNK)
        stream.write(chunks(sample, 4, 5))
    after = follow(follower, stats)

    assert before == list(range(1, 163))
    assert after == list(range(163, 203))
    assert stats.errors == {}


@pytest.mark.shared_data
def test_evtx_damaged_chunk_reported_once(tmp_path: Path, sample: bytes) -> None:
    live_file = tmp_path / "sysmon.evtx"
    damaged = sample[:HEADER] + chunks(sample, 0, 2) + b"x" * CHUNK + chunks(sample, 3, 5)
    live_file.write_bytes(damaged)
    follower, stats = EvtxFollower([str(tmp_path / "*.evtx")]), EventStats()
    whole_file = EventStats()
    list(iter_evtx_records(live_file, LineReporter(str(live_file), whole_file), check_chunks=False))

    first = follow(follower, stats)
    with live_file.open("ab") as stream:
        stream.write(chunks(sample, 5, 6))
    grown = follow(follower, stats)

    assert first == [*range(1, 88), *range(125, 203)]
    assert grown == list(range(203, 242))
    assert stats.errors == whole_file.errors == {"invalid_record": 1}
    assert [error.line for error in stats.kept] == [error.line for error in whole_file.kept] == [88]
