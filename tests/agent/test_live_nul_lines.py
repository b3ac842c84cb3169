"""Damaged Zeek lines get the same verdicts from the live agent as from a replay of the same file.

The cases are NUL bytes inside lines, NUL holes where lines start, and damaged lines whose
reading must not depend on where a poll begins.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent, RunReport
from privacy.random import seeded_random
from tests.agent.test_conn_blocks_agent import parse_counts, windows_by_key
from tests.agent.test_live import write_config
from tests.support.conn_logs import NETWORKS, read_lines

TSV_CONN_LOG = "stratosphere-testing/008-zeek-mixed/data/conn.log.labeled"
JSON_CONN_LOG = "stratosphere-testing/002-zeek-scenario-port-scanning/conn.log"


def damaged_log(shared: Path, *, as_json: bool) -> bytes:
    """A real conn log's first 3,000 lines with a NUL inside three data lines."""
    lines = read_lines(shared / (JSON_CONN_LOG if as_json else TSV_CONN_LOG), 3000)
    data = [text.encode() for text in lines if text]
    for index in (100, 1500, len(data) - 2):
        data[index] = data[index][:20] + b"\x00" + data[index][21:]
    return b"\n".join(data) + b"\n"


def configure(folder: Path) -> Path:
    folder.mkdir()
    config_path = write_config(folder)
    config = yaml.safe_load(config_path.read_text())
    config["site"]["internal_networks"] = list(NETWORKS)
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def replay_counts(folder: Path, data: bytes) -> tuple[dict, int, dict]:
    config_path = configure(folder)
    (folder / "logs" / "conn.log").write_bytes(data)
    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    try:
        report = RunReport(site_id="site-live")
        feeder = agent.read_sources(report)
    finally:
        agent.close()
    return parse_counts(report.parse_stats), report.connections, windows_by_key(feeder)["network"]


def live_counts(folder: Path, data: bytes, split: int | None = None) -> tuple[dict, int, dict, dict]:
    """Follow ``data`` written in two parts, split at byte ``split`` or after the line in the middle."""
    config_path = configure(folder)
    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=10**9))
    log_file = folder / "logs" / "conn.log"
    try:
        middle = data.index(b"\n", len(data) // 2) + 1 if split is None else split
        for part in (data[:middle], data[middle:]):
            with log_file.open("ab") as stream:
                stream.write(part)
            live.step()
    finally:
        agent.close()
    return (parse_counts(live.parse_stats), live.orientation.connections, windows_by_key(live._feeder)["network"],
            dict(live.malformed.counts))


@pytest.mark.parametrize("as_json", [False, True], ids=["tsv", "json"])
def test_live_nul_lines_match_replay(tmp_path: Path, shared_data_dir: Path, as_json: bool) -> None:
    data = damaged_log(shared_data_dir, as_json=as_json)

    replayed, replay_connections, replay_windows = replay_counts(tmp_path / "replay", data)
    followed, live_connections, live_windows, by_source = live_counts(tmp_path / "live", data)

    assert replayed["malformed"] == {"nul_byte": 3}
    assert followed == replayed
    assert by_source == {("sources[0]", "nul_byte"): 3}
    assert live_connections == replay_connections > 2000
    assert live_windows == replay_windows


def tsv_lines(shared: Path) -> list[bytes]:
    return [text.encode() for text in read_lines(shared / TSV_CONN_LOG, 600) if text]


def after_line(lines: list[bytes], count: int) -> int:
    """Return the byte offset after the first ``count`` lines."""
    return sum(len(line) + 1 for line in lines[:count])


@pytest.mark.parametrize("case", ["brace after NUL line", "brace line", "long NUL hole", "NUL hole at the end",
                                  "NUL-only line"])
def test_live_damaged_lines_match_replay(tmp_path: Path, shared_data_dir: Path, case: str) -> None:
    """Each case is written in two parts, the second starting at line 400."""
    lines = tsv_lines(shared_data_dir)
    if case == "brace after NUL line":
        # The first line after the NUL line starts with a brace, which must not make the rest JSON.
        lines[250] = lines[250][:20] + b"\x00" + lines[250][21:]
        lines[251] = b'{"x":1}'
    elif case == "brace line":
        lines[399] = b'{"x":1}'
    elif case == "long NUL hole":
        # A copytruncate hole is as long as the file was, here longer than a line may be.
        lines[300] = b"\x00" * ((1 << 20) + 10) + lines[300]
    elif case == "NUL hole at the end":
        lines.append(b"\x00" * 100)
    else:
        lines[300] = b"\x00" * 40
    data = b"\n".join(lines) + (b"" if case == "NUL hole at the end" else b"\n")

    replayed, replay_connections, replay_windows = replay_counts(tmp_path / "replay", data)
    followed, live_connections, live_windows, _ = live_counts(tmp_path / "live", data, after_line(lines, 399))

    assert followed == replayed
    assert live_connections == replay_connections > 580
    assert live_windows == replay_windows


def test_live_stored_header_error_counted_once(tmp_path: Path, shared_data_dir: Path) -> None:
    """A header without #fields is reported when it is read, not again at every later read."""
    lines = [line for line in tsv_lines(shared_data_dir) if not line.startswith(b"#fields")]
    data = b"\n".join(lines) + b"\n"

    replayed, _, _ = replay_counts(tmp_path / "replay", data)
    followed, _, _, by_source = live_counts(tmp_path / "live", data, after_line(lines, 300))

    assert replayed["malformed"]["invalid_header"] == 1
    assert followed == replayed
    assert by_source[("sources[0]", "invalid_header")] == 1


def test_live_copytruncated_log_takes_header_of_copy(tmp_path: Path, shared_data_dir: Path) -> None:
    """An agent that first starts after a copytruncate reads the headerless rows with the copy's header."""
    lines = tsv_lines(shared_data_dir)
    header = [line for line in lines if line.startswith(b"#") and not line.startswith(b"#close")]
    rows = [line for line in lines if not line.startswith(b"#")]
    config_path = configure(tmp_path / "live")
    logs = tmp_path / "live" / "logs"
    (logs / "conn.log.1").write_bytes(b"\n".join(header + rows[:300]) + b"\n")
    (logs / "conn.log").write_bytes(b"\n".join(rows[300:]) + b"\n")

    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=10**9))
    try:
        live.step()
    finally:
        agent.close()

    # The source's pattern, conn*.log, leaves out the copy, so only the emptied file is read.
    assert live.parse_stats.malformed == {}
    assert live.parse_stats.records == len(rows) - 300


@pytest.mark.parametrize("copy_name", ["conn.log.1", "conn.log-20240501.gz"])
def test_replay_copytruncated_log_takes_header_of_copy(tmp_path: Path, shared_data_dir: Path,
                                                        copy_name: str) -> None:
    """A replay reads an emptied log's rows with the header of its copy, without counting the copy's lines."""
    import gzip

    from agent.zeek import ParseStats, iter_zeek_records

    lines = tsv_lines(shared_data_dir)
    header = [line for line in lines if line.startswith(b"#") and not line.startswith(b"#close")]
    rows = [line for line in lines if not line.startswith(b"#")]
    copy = b"\n".join(header + rows[:300]) + b"\n"
    (tmp_path / copy_name).write_bytes(gzip.compress(copy) if copy_name.endswith(".gz") else copy)
    (tmp_path / "conn.log").write_bytes(b"\n".join(rows[300:]) + b"\n")
    (tmp_path / "conn.log.old").mkdir()  # a folder of a matching name is not a copy

    stats = ParseStats()
    records = list(iter_zeek_records(tmp_path / "conn.log", stats=stats))

    assert stats.malformed == {}
    assert stats.header_lines == 0
    assert [record.line for record in records] == list(range(1, len(rows) - 300 + 1))
    assert records[0].fields["ts"].timestamp() == float(rows[300].split(b"\t")[0])


def test_live_start_at_end_own_header(tmp_path: Path, shared_data_dir: Path) -> None:
    """An agent that starts at a file's end reads new rows with the header at the file's start."""
    lines = tsv_lines(shared_data_dir)
    header = [line for line in lines if line.startswith(b"#") and not line.startswith(b"#close")]
    rows = [line for line in lines if not line.startswith(b"#")]
    # A copy beside it whose header swaps the originator and responder columns.
    swapped = [line.replace(b"id.orig_h", b"id.tmp_h").replace(b"id.resp_h", b"id.orig_h").replace(b"id.tmp_h", b"id.resp_h")
               for line in header]
    config_path = configure(tmp_path / "live")
    logs = tmp_path / "live" / "logs"
    (logs / "conn.log.1").write_bytes(b"\n".join(swapped + rows[:10]) + b"\n")
    log_file = logs / "conn.log"
    log_file.write_bytes(b"\n".join(header + rows[:300]) + b"\n")

    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=10**9, start_at="end"))
    try:
        live.step()
        with log_file.open("ab") as stream:
            stream.write(b"\n".join(rows[300:400]) + b"\n")
        live.step()
    finally:
        agent.close()
    _, replay_connections, replay_windows = replay_counts(tmp_path / "replay", b"\n".join(header + rows[300:400]) + b"\n")

    assert live.parse_stats.malformed == {}
    assert live.parse_stats.records == 100
    assert live.orientation.connections == replay_connections
    assert windows_by_key(live._feeder)["network"] == replay_windows


def test_live_old_checkpoint_keeps_tsv_after_brace_line(tmp_path: Path, shared_data_dir: Path) -> None:
    """A checkpoint without the format of a file: its stored TSV header decides, not a damaged line."""
    lines = tsv_lines(shared_data_dir)
    config_path = configure(tmp_path / "live")
    log_file = tmp_path / "live" / "logs" / "conn.log"
    log_file.write_bytes(b"\n".join(lines[:300]) + b"\n")
    agent = Agent(load_agent_config(config_path), rng=seeded_random(1))
    try:
        first = LiveAgent(agent, LiveSettings(round_grace_secs=10**9))
        first.step()
        first._json_files.clear()  # as a checkpoint written before the format was kept
        first.commit()
        with log_file.open("ab") as stream:
            stream.write(b'{"ts": damaged\n' + b"\n".join(lines[300:320]) + b"\n")
        second = LiveAgent(agent, LiveSettings(round_grace_secs=10**9))
        second.step()
    finally:
        agent.close()

    assert second.parse_stats.malformed == {"column_count": 1}
    assert second.parse_stats.records == 20
