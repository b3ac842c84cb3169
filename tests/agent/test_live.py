"""The live agent: rounds close on event time, and a crash loses and repeats nothing.

The crash test runs the live agent as a separate process and kills it with SIGKILL at random
moments while a writer appends Zeek JSON conn records and sshd lines and rotates the logs.
While the agent is down the writer appends more lines and often rotates again: the conn log
is renamed and compressed, and the sshd log is rotated by ``copytruncate``. After each kill it
starts the agent again, and at the end it checks that every connection was counted in exactly
one round. The count comes from the local
contact table, which is written in the same transaction as each round's record and summary.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent
from privacy.random import seeded_random
from privacy.signing import generate_signing_key

ROUND_SECONDS = 600
START = 1_717_372_800
ENTITIES = 8
SCANNERS = ("185.220.101.1", "185.220.101.2", "185.220.101.3")


def conn_line(number: int) -> str:
    """The ``number``-th connection: one per second, eight hosts, three external peers."""
    record = {"ts": START + number * 1.0, "uid": f"C{number}", "id.orig_h": f"10.2.0.{number % ENTITIES + 1}",
              "id.orig_p": 40000 + number % 1000, "id.resp_h": SCANNERS[number % 3], "id.resp_p": 443,
              "proto": "tcp", "duration": 0.5, "orig_bytes": 100 + number % 50, "resp_bytes": 800,
              "conn_state": "SF", "_path": "conn"}
    return json.dumps(record) + "\n"


def auth_line(number: int) -> str:
    """The ``number``-th failed sshd login, at the time of the ``number``-th connection."""
    stamp = datetime.fromtimestamp(START + number, tz=timezone.utc).isoformat()
    return (f"{stamp} srv{number % ENTITIES} sshd[{2000 + number % 97}]: Failed password for root from "
            f"{SCANNERS[number % 3]} port {50000 + number % 1000} ssh2\n")


def write_config(folder: Path, *, hub_port: int = 9, with_auth: bool = False) -> Path:
    key = generate_signing_key()
    key.to_file(folder / "site.key")
    config = {
        "site": {"id": "site-live", "signing_key": "site.key"},
        # Port 9 (discard) on loopback refuses the connection: summaries stay in the outbox.
        "hub": {"url": f"http://127.0.0.1:{hub_port}/taxii2/", "username": "site-live", "password": "unused",
                "max_send_attempts": 1, "retry_backoff_secs": 0.01, "timeout_secs": 1.0},
        "sources": [{"type": "zeek", "paths": [str(folder / "logs" / "conn*.log")]}]
                   + ([{"type": "sshd", "paths": [str(folder / "logs" / "auth*.log")]}] if with_auth else []),
        "state_dir": "state",
        "windows": {"window_seconds": 60, "round_seconds": ROUND_SECONDS},
        "detector": {"name": "ecod", "baseline_rounds": 1},
        "privacy": {"epsilon_per_round": 0.5, "budget_epsilon": 100.0},
    }
    (folder / "logs").mkdir(exist_ok=True)
    path = folder / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def counted_per_round(state_dir: Path) -> tuple[dict[int, int], dict[int, str]]:
    with sqlite3.connect(state_dir / "agent.sqlite") as db:
        counts = dict(db.execute("SELECT round_start, SUM(connections) FROM contacts GROUP BY round_start"))
        statuses = dict(db.execute("SELECT round_start, status FROM rounds"))
    return counts, statuses


def test_live_rounds_close_on_event_time(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path))
    log_file = tmp_path / "logs" / "conn.log"
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))

    log_file.write_text("".join(conn_line(n) for n in range(ROUND_SECONDS)))
    first = live.step()
    with log_file.open("a") as stream:
        stream.write("".join(conn_line(n) for n in range(ROUND_SECONDS, ROUND_SECONDS + 61)))
    second = live.step()
    agent.close()

    assert first.lines == ROUND_SECONDS
    assert first.rounds == {}
    assert second.rounds == {START: "queued"}
    counts, statuses = counted_per_round(config.state_dir)
    assert counts == {START: ROUND_SECONDS}
    assert statuses == {START: "queued"}
    metrics = (config.state_dir / "metrics.prom").read_text()
    assert f'fti_agent_records_read_total{{site="site-live"}} {ROUND_SECONDS + 61}' in metrics
    assert 'fti_agent_outbox_size{site="site-live"} 1' in metrics


def test_live_restart_resumes_buffer_and_offsets(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path))
    log_file = tmp_path / "logs" / "conn.log"
    log_file.write_text("".join(conn_line(n) for n in range(300)))
    agent = Agent(config, rng=seeded_random(1))
    first = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    first.step()
    first.commit()

    with log_file.open("a") as stream:
        stream.write("".join(conn_line(n) for n in range(300, ROUND_SECONDS + 61)))
    second = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    report = second.step()
    agent.close()

    assert report.lines == ROUND_SECONDS + 61 - 300
    assert counted_per_round(config.state_dir)[0] == {START: ROUND_SECONDS}


def test_live_late_connection_dropped_and_counted(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path))
    log_file = tmp_path / "logs" / "conn.log"
    log_file.write_text("".join(conn_line(n) for n in range(ROUND_SECONDS + 61)))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    live.step()

    with log_file.open("a") as stream:
        stream.write(conn_line(5))
    report = live.step()
    agent.close()

    assert report.late == 1
    assert live.late_connections == 1


def test_live_backlog_beyond_horizon_not_sent(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path))
    (tmp_path / "logs" / "conn.log").write_text("".join(conn_line(n) for n in range(0, 4 * ROUND_SECONDS + 61, 3)))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60, restart_horizon_rounds=2))

    report = live.step()
    agent.close()

    assert report.rounds == {START: "beyond_horizon", START + ROUND_SECONDS: "beyond_horizon",
                             START + 2 * ROUND_SECONDS: "queued", START + 3 * ROUND_SECONDS: "queued"}


def test_beyond_horizon_dropped_once_untrained(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rounds beyond the horizon are dropped at once, not found again at each poll before training."""
    config_path = write_config(tmp_path)
    settings = yaml.safe_load(config_path.read_text())
    settings["detector"]["baseline_rounds"] = 2
    config_path.write_text(yaml.safe_dump(settings))
    config = load_agent_config(config_path)
    (tmp_path / "logs" / "conn.log").write_text("".join(conn_line(n) for n in range(0, 3 * ROUND_SECONDS + 61, 3)))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60, restart_horizon_rounds=1))

    first = live.step()
    second = live.step()
    agent.close()

    # One round inside the horizon is fewer than the two baseline rounds, so it waits.
    assert first.rounds == {START: "beyond_horizon", START + ROUND_SECONDS: "beyond_horizon"}
    assert second.rounds == {}
    assert caplog.text.count("rounds older than the restart horizon") == 1
    assert counted_per_round(config.state_dir)[1] == {START: "beyond_horizon", START + ROUND_SECONDS: "beyond_horizon"}


def test_live_rounds_wait_for_enough_baseline_windows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A first round too quiet to train the detector stays open instead of stopping the agent."""
    config = load_agent_config(write_config(tmp_path))
    log_file = tmp_path / "logs" / "conn.log"
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))

    # Three connections in the first round, then one that closes it: three windows, not 32.
    log_file.write_text("".join(conn_line(n) for n in (0, 1, 2, ROUND_SECONDS + 60)))
    quiet = [live.step(), live.step()]
    with log_file.open("a") as stream:
        stream.write("".join(conn_line(n) for n in range(ROUND_SECONDS + 61, 2 * ROUND_SECONDS + 61)))
    busy = live.step()
    agent.close()

    assert [report.rounds for report in quiet] == [{}, {}]
    assert caplog.text.count("They stay open until newer rounds add windows") == 1
    assert busy.rounds == {START: "queued", START + ROUND_SECONDS: "queued"}
    assert counted_per_round(config.state_dir)[0] == {START: 3, START + ROUND_SECONDS: ROUND_SECONDS - 60}


def test_live_rounds_of_constant_windows_stay_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Windows whose features are all equal cannot train a detector, and the agent goes on."""
    config = load_agent_config(write_config(tmp_path))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    heartbeat = json.loads(conn_line(0))
    (tmp_path / "logs" / "conn.log").write_text("".join(
        json.dumps({**heartbeat, "ts": START + minute * 60.0, "uid": f"C{minute}"}) + "\n" for minute in range(60)))

    reports = [live.step(), live.step()]
    agent.close()

    assert [report.rounds for report in reports] == [{}, {}]
    assert caplog.text.count("features are constant") == 1


def live_snapshot(state_dir: Path) -> str | None:
    try:
        with sqlite3.connect(f"file:{state_dir / 'agent.sqlite'}?mode=ro", uri=True) as db:
            row = db.execute("SELECT value FROM checkpoints WHERE name = 'live'").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def wait_for_commit(state_dir: Path, *, after: str | None, timeout_secs: float = 30.0,
                    agent_log: Path | None = None) -> None:
    """Wait until the agent has committed a snapshot other than ``after``."""
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if live_snapshot(state_dir) not in (None, after):
            return
        time.sleep(0.05)
    tail = agent_log.read_text(errors="replace")[-3000:] if agent_log is not None and agent_log.exists() else ""
    raise AssertionError(f"the live agent committed nothing within {timeout_secs} s; its stderr ends with:\n{tail}")


def append_lines(path: Path, make_line: Callable[[int], str], first: int, end: int) -> None:
    with path.open("a") as stream:
        stream.write("".join(make_line(n) for n in range(first, end)))


def rotate_while_down(logs: Path, number: int, rng: random.Random) -> None:
    """Rename and compress the conn log, and ``copytruncate`` the sshd log.

    The compressed conn log matches no pattern, so only the restart's search beside the old
    path finds it. The sshd copy matches the pattern ``auth*.log`` or not, at random.
    """
    conn_log, auth_log = logs / "conn.log", logs / "auth.log"
    if conn_log.exists() and rng.random() < 0.5:
        renamed = conn_log.rename(logs / f"conn-down{number:03d}.log")
        with renamed.open("rb") as source, gzip.open(logs / f"conn-down{number:03d}.log.gz", "wb") as target:
            shutil.copyfileobj(source, target)
        renamed.unlink()
    if auth_log.exists() and rng.random() < 0.5:
        copy = logs / (f"auth-{number:03d}.log" if rng.random() < 0.5 else f"auth.log.{number}")
        shutil.copyfile(auth_log, copy)
        with auth_log.open("r+") as stream:
            stream.truncate(0)


AGENT_PROCESS = """
import sys, threading
from agent.config import load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.service import Agent
agent = Agent(load_agent_config(__import__("pathlib").Path(sys.argv[1])))
LiveAgent(agent, LiveSettings(poll_interval_secs=0.05, rotate_wait_secs=0.2, round_grace_secs=30,
                              commit_interval_secs=0.3)).run(threading.Event(), deliver=False)
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_counts_lines_once(tmp_path: Path) -> None:
    """Zeek conn and sshd lines, each counted once in the contacts of its round's families."""
    config_path = write_config(tmp_path, with_auth=True)
    config = load_agent_config(config_path)
    logs = tmp_path / "logs"
    rng = random.Random(20261204)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    written = 0
    rotations = 0
    kills = 0

    agent_log = tmp_path / "agent-stderr.log"

    def start() -> subprocess.Popen[bytes]:
        with agent_log.open("ab") as stderr:
            return subprocess.Popen([sys.executable, "-c", AGENT_PROCESS, str(config_path)], cwd=tmp_path, env=env,
                                    stdout=subprocess.DEVNULL, stderr=stderr)

    snapshot_before = None
    process = start()
    try:
        while kills < 20:
            # Write a burst, sometimes rotating the live file by renaming it first.
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.25:
                    rotations += 1
                    (logs / "conn.log").rename(logs / f"conn-{rotations:03d}.log") if (logs / "conn.log").exists() \
                        else None
                burst = rng.randint(20, 400)
                append_lines(logs / "conn.log", conn_line, written, written + burst)
                append_lines(logs / "auth.log", auth_line, written, written + burst)
                written += burst
                time.sleep(rng.uniform(0.0, 0.15))

            # Kill at a random moment once the agent is past its start-up, then start again.
            # Each start imports pyod and scikit-learn and fits the detectors, which takes
            # seconds, so the timeout allows for a loaded machine.
            wait_for_commit(config.state_dir, after=snapshot_before, timeout_secs=180, agent_log=agent_log)
            time.sleep(rng.uniform(0.0, 0.6))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            kills += 1
            snapshot_before = live_snapshot(config.state_dir)

            # While the agent is down: lines it has not read yet, then a rotation of the files
            # that contain them, then the successors' first lines.
            burst = rng.randint(0, 200)
            append_lines(logs / "conn.log", conn_line, written, written + burst)
            append_lines(logs / "auth.log", auth_line, written, written + burst)
            written += burst
            rotate_while_down(logs, kills, rng)
            burst = rng.randint(0, 200)
            append_lines(logs / "conn.log", conn_line, written, written + burst)
            append_lines(logs / "auth.log", auth_line, written, written + burst)
            written += burst
            process = start()

        # Close every round up to the last written one, then let the agent catch up.
        last_round_end = (START + written) // ROUND_SECONDS * ROUND_SECONDS
        with (logs / "conn.log").open("a") as stream:
            stream.write(conn_line(last_round_end - START + ROUND_SECONDS + 60 - 1 + 1))
        expected = {start: 0 for start in range(START, last_round_end, ROUND_SECONDS)}
        for number in range(written):
            round_start = (START + number) // ROUND_SECONDS * ROUND_SECONDS
            if round_start in expected:
                expected[round_start] += 2  # one connection and one login attempt
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            counts, statuses = counted_per_round(config.state_dir)
            if set(expected) <= set(statuses):
                break
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    counts, statuses = counted_per_round(config.state_dir)
    assert kills >= 20
    assert {start: counts.get(start) for start in expected} == expected
    with sqlite3.connect(config.state_dir / "agent.sqlite") as db:
        per_round = db.execute("SELECT round_start, COUNT(*) FROM outbox GROUP BY round_start").fetchall()
    assert all(count == 1 for _, count in per_round)


@pytest.mark.slow
def test_fti_agent_run_follows_until_sigterm(tmp_path: Path) -> None:
    """``fti agent run`` without ``--once`` follows the log, and SIGTERM commits and exits 0."""
    config = load_agent_config(write_config(tmp_path))
    (tmp_path / "logs" / "conn.log").write_text("".join(conn_line(n) for n in range(ROUND_SECONDS + 400)))
    fti = Path(sys.executable).with_name("fti")

    process = subprocess.Popen([str(fti), "agent", "run", "--config", "agent.yaml"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_commit(config.state_dir, after=None, timeout_secs=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not counted_per_round(config.state_dir)[1]:
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)

    assert process.returncode == 0
    assert "live run stopped; state committed" in stderr
    assert counted_per_round(config.state_dir)[0] == {START: ROUND_SECONDS}


def test_live_checkpoint_holds_window_counters_not_events(tmp_path: Path) -> None:
    """An open round of conn and sshd lines is checkpointed as per-window counters."""
    config = load_agent_config(write_config(tmp_path, with_auth=True))
    (tmp_path / "logs" / "conn.log").write_text("".join(conn_line(n) for n in range(300)))
    (tmp_path / "logs" / "auth.log").write_text("".join(auth_line(n) for n in range(300)))
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))

    report = live.step()
    live.commit()
    agent.close()
    snapshot = json.loads(live_snapshot(config.state_dir) or "{}")

    assert report.connections == 600
    assert "open" not in snapshot
    assert {family: len(windows) for family, windows in snapshot["windows"].items()} == {
        "network": ENTITIES * 5, "authentication": ENTITIES * 5}
    assert sum(sum(w["o"].values()) for w in snapshot["windows"]["authentication"]) == 300


def test_live_sshd_lines_counted_once_across_restart(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path, with_auth=True))
    conn_log, auth_log = tmp_path / "logs" / "conn.log", tmp_path / "logs" / "auth.log"
    conn_log.write_text("".join(conn_line(n) for n in range(300)))
    auth_log.write_text("".join(auth_line(n) for n in range(300)))
    agent = Agent(config, rng=seeded_random(1))
    first = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    first.step()
    first.commit()

    with conn_log.open("a") as stream:
        stream.write("".join(conn_line(n) for n in range(300, ROUND_SECONDS + 61)))
    with auth_log.open("a") as stream:
        stream.write("".join(auth_line(n) for n in range(300, ROUND_SECONDS)))
    second = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    second.step()
    agent.close()

    assert counted_per_round(config.state_dir)[0] == {START: 2 * ROUND_SECONDS}


def test_live_start_at_end_only_first_start(tmp_path: Path) -> None:
    """A log that appears while the agent is stopped is read in full, also with ``start_at: end``."""
    config = load_agent_config(write_config(tmp_path, with_auth=True))
    (tmp_path / "logs" / "conn.log").write_text("".join(conn_line(n) for n in range(300)))
    agent = Agent(config, rng=seeded_random(1))
    first = LiveAgent(agent, LiveSettings(round_grace_secs=60, start_at="end"))
    skipped = first.step()
    first.commit()

    (tmp_path / "logs" / "auth.log").write_text("".join(auth_line(n) for n in range(300)))
    second = LiveAgent(agent, LiveSettings(round_grace_secs=60, start_at="end"))
    report = second.step()
    agent.close()

    assert skipped.lines == 0
    assert report.lines == 300


def test_live_metrics_count_late_and_unusable_records(tmp_path: Path) -> None:
    """A connection of a released round and a conn record without an originator are counted, not only logged."""
    config = load_agent_config(write_config(tmp_path))
    log_file = tmp_path / "logs" / "conn.log"
    agent = Agent(config, rng=seeded_random(1))
    live = LiveAgent(agent, LiveSettings(round_grace_secs=60))
    log_file.write_text("".join(conn_line(n) for n in range(ROUND_SECONDS + 61)))
    live.step()
    no_originator = json.loads(conn_line(ROUND_SECONDS + 62))
    del no_originator["id.orig_h"]
    with log_file.open("a") as stream:
        stream.write(conn_line(5) + json.dumps(no_originator) + "\n")
    live.step()
    live.commit()
    agent.close()

    metrics = (config.state_dir / "metrics.prom").read_text()
    assert 'fti_agent_events_late_total{site="site-live"} 1' in metrics
    assert 'fti_agent_conn_records_skipped_total{site="site-live"} 1' in metrics
