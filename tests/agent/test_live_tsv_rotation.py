"""The live agent on Zeek logs: each rotated TSV file is read with its own header, and cut lines are counted."""

from __future__ import annotations

import gzip
from pathlib import Path

from agent.config import AgentConfig, load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent
from agent.tailer import MAX_LINE_BYTES
from privacy.random import seeded_random
from tests.agent.test_live import ROUND_SECONDS, SCANNERS, START, conn_line, counted_per_round, write_config

HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#open\t{opened}\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\torig_bytes\tresp_bytes\tconn_state\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tinterval\tcount\tcount\tstring\n"
)


def tsv_rows(first: int, end: int) -> str:
    """Connections ``first`` to ``end - 1``, one per second, as Zeek TSV rows."""
    return "".join(f"{START + n}.0\tC{n}\t10.2.0.{n % 8 + 1}\t{40000 + n % 1000}\t{SCANNERS[n % 3]}\t443\ttcp\t"
                   "0.5\t100\t800\tSF\n" for n in range(first, end))


def start_live(folder: Path) -> tuple[AgentConfig, Agent, LiveAgent]:
    """A live agent that closes a rotated file as soon as it is drained."""
    config = load_agent_config(write_config(folder))
    agent = Agent(config, rng=seeded_random(1))
    return config, agent, LiveAgent(agent, LiveSettings(round_grace_secs=60, rotate_wait_secs=0))


def test_rotation_one_poll_keeps_lines(tmp_path: Path) -> None:
    """Lines flushed to a renamed TSV log and its successor's header, read in one poll."""
    config, agent, live = start_live(tmp_path)
    log_file = tmp_path / "logs" / "conn.log"
    log_file.write_text(HEADER.format(opened="2024-06-03-00-00-00") + tsv_rows(0, 300))
    live.step()

    # Zeek's last writes to the old file and the new file's first rows arrive together.
    with log_file.open("a") as stream:
        stream.write(tsv_rows(300, 400))
    log_file.rename(tmp_path / "logs" / "conn.2024-06-03-00-06-40.log")
    log_file.write_text(HEADER.format(opened="2024-06-03-00-06-40") + tsv_rows(400, 2 * ROUND_SECONDS + 61))
    second = live.step()
    agent.close()

    counts, _ = counted_per_round(config.state_dir)
    assert second.rounds == {START: "queued", START + ROUND_SECONDS: "queued"}
    assert counts == {START: ROUND_SECONDS, START + ROUND_SECONDS: ROUND_SECONDS}
    assert live.parse_stats.malformed == {}


def test_rotation_restarts_line_numbers(tmp_path: Path) -> None:
    """A warning about the successor file names its own line number, not the old file's count."""
    config, agent, live = start_live(tmp_path)
    log_file = tmp_path / "logs" / "conn.log"
    log_file.write_text(HEADER.format(opened="2024-06-03-00-00-00") + tsv_rows(0, 50))
    live.step()

    log_file.rename(tmp_path / "logs" / "conn.2024-06-03-00-00-50.log")
    log_file.write_text(HEADER.format(opened="2024-06-03-00-00-50") + "not\ta\tconn\trow\n")
    live.step()
    agent.close()

    errors = [str(error) for error in live.parse_stats.errors]
    assert errors == [f"{log_file} line 9: 4 values but #fields declares 11 columns; line skipped"]


def test_rotation_while_stopped_keeps_header(tmp_path: Path) -> None:
    """Rows of a TSV log renamed and compressed while the agent was stopped use its own header."""
    config, agent, live = start_live(tmp_path)
    log_file = tmp_path / "logs" / "conn.log"
    log_file.write_text(HEADER.format(opened="2024-06-03-00-00-00") + tsv_rows(0, 300))
    live.step()
    live.commit()
    agent.close()

    # Zeek's last rows, then rotation and compression, all while the agent is stopped.
    with log_file.open("a") as stream:
        stream.write(tsv_rows(300, 400))
    (tmp_path / "logs" / "conn.2024-06-03-00-06-40.log.gz").write_bytes(gzip.compress(log_file.read_bytes()))
    log_file.unlink()
    log_file.write_text(HEADER.format(opened="2024-06-03-00-06-40") + tsv_rows(400, 2 * ROUND_SECONDS + 61))
    agent = Agent(config, rng=seeded_random(1))
    restarted = LiveAgent(agent, LiveSettings(round_grace_secs=60, rotate_wait_secs=0))
    report = restarted.step()
    agent.close()

    counts, _ = counted_per_round(config.state_dir)
    assert report.rounds == {START: "queued", START + ROUND_SECONDS: "queued"}
    assert counts == {START: ROUND_SECONDS, START + ROUND_SECONDS: ROUND_SECONDS}
    assert restarted.parse_stats.malformed == {}


def test_over_long_zeek_lines_counted_as_cut(tmp_path: Path) -> None:
    """A TSV or JSON conn line over the length limit counts as ``line_too_long``, and the next line is read."""
    config, agent, live = start_live(tmp_path)
    long_value = "x" * (MAX_LINE_BYTES + 10)
    tsv_file, json_file = tmp_path / "logs" / "conn.log", tmp_path / "logs" / "conn.json.log"
    tsv_file.write_text(HEADER.format(opened="2024-06-03-00-00-00") + tsv_rows(0, 1) + long_value + "\n"
                        + tsv_rows(1, 2))
    json_file.write_text(conn_line(2) + conn_line(3)[:-2] + f', "history": "{long_value}"}}\n' + conn_line(4))

    report = live.step()
    agent.close()

    assert report.connections == 4
    assert live.malformed.counts == {("sources[0]", "line_too_long"): 2}
    assert sorted(str(error) for error in live.parse_stats.errors) == [
        f"{json_file} line 2: line cut at {MAX_LINE_BYTES} bytes; line skipped",
        f"{tsv_file} line 10: line cut at {MAX_LINE_BYTES} bytes; line skipped",
    ]
