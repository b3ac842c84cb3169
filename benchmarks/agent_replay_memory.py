"""Peak resident memory of the agent's replay run and live run on a large conn log.

Usage: python benchmarks/agent_replay_memory.py CONN_LOG [--lines N] [--detector NAME]
       [--budget-epsilon E] [--with-pandas]

CONN_LOG is a Zeek TSV conn log. Its data rows are repeated into a temporary file of N lines
(default 1,000,000) by ``zeek_conn_throughput.build_inputs``. The script writes a site key, a
hub password and an agent configuration into the same folder: 60 s windows, 3,600 s rounds,
the private ranges and CTU's 147.32.0.0/16 as internal networks. The hub URL names a port on
127.0.0.1 that nothing listens on, so every summary stays in the outbox after one failed
attempt, and delivery costs next to nothing.

Each measurement runs in its own child process, one after the other in the same run. A
child's peak resident memory is the ``ru_maxrss`` that ``os.wait4`` returns for it, the
figure ``/usr/bin/time -v`` prints:

- ``imports``: imports the replay agent and the detector's pyod model, then exits. Every run
  pays this much before it reads a line.
- ``zat``: ``zat.zeek_log_reader.ZeekLogReader(...).readrows()`` over the same file, as a
  reference for the CPU time. It is skipped when zat is not installed (the ``bench`` extra).
- ``replay``: the real command, ``python -m fti.cli agent run --once --no-poll``.
- ``live``: the live agent, ``python -m fti.cli agent run --no-poll``, started on the whole
  file as a backlog. The script reads the agent's Prometheus endpoint on 127.0.0.1 until every
  line is read and no byte of the file is behind, then stops the agent with SIGTERM. The
  live agent reads ``live.max_poll_bytes`` of the file per poll and parses each poll's lines
  as one run, so its peak differs from the replay run's.

fti does not depend on pandas, but scikit-learn imports pandas whenever it is installed, and
zat from the ``bench`` extra installs it. By default the children therefore run with pandas
hidden, as on an fti install: a ``sitecustomize.py`` on ``PYTHONPATH`` makes ``import
pandas`` raise ImportError. ``--with-pandas`` runs them with the environment as it is.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from zeek_conn_throughput import BENCH_INTERNAL_NETWORKS, build_inputs

# The 300 MB resident target of the replay run, in MiB.
TARGET_MIB = 300e6 / (1 << 20)

HIDE_PANDAS = '''"""Make ``import pandas`` fail, as on an fti install without the bench extra."""
import sys


class HidePandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"{name} is hidden by the replay memory benchmark")
        return None


sys.meta_path.insert(0, HidePandas())
'''

IMPORTS_CODE = "import agent.service, pyod.models.{module}"
ZAT_CODE = ("import sys\nfrom zat.zeek_log_reader import ZeekLogReader\n"
            "print(sum(1 for _ in ZeekLogReader(sys.argv[1]).readrows()))")
DETECTORS = ("iforest", "ecod", "hbos")  # each is the pyod module of the same name

# How long the live agent may take to read the whole file before the script gives up, and to
# stop after SIGTERM before it gets SIGKILL.
LIVE_TIMEOUT_SECS = 900.0
STOP_TIMEOUT_SECS = 60.0


def closed_local_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago, so a connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_agent_config(folder: Path, log: Path, *, detector: str, budget_epsilon: float,
                       metrics_port: int = 0) -> Path:
    """Write a site key, a hub password and an agent configuration for replaying or following ``log``.

    The live agent serves its metrics on ``metrics_port`` of 127.0.0.1; 0 turns them off.
    """
    key = folder / "site.key"
    subprocess.run([sys.executable, "-m", "fti.cli", "keys", "generate", "--out", str(key)], check=True,
                   capture_output=True, timeout=60)
    password = folder / "hub.password"
    with os.fdopen(os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as stream:
        stream.write("not-used-by-a-closed-port\n")
    config = {
        "site": {"id": "site-bench", "signing_key": str(key), "internal_networks": list(BENCH_INTERNAL_NETWORKS)},
        "hub": {"url": f"http://127.0.0.1:{closed_local_port()}/taxii2/", "username": "site-bench",
                "password_file": str(password), "max_send_attempts": 1},
        "sources": [{"type": "zeek", "paths": [str(log)]}],
        "state_dir": str(folder / "state"),
        "windows": {"window_seconds": 60, "round_seconds": 3600},
        "detector": {"name": detector},
        "privacy": {"budget_epsilon": budget_epsilon},
        "metrics": {"enabled": metrics_port > 0, "port": metrics_port},
    }
    path = folder / "agent.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is valid YAML
    return path


def run_measured(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, object]:
    """Run ``command`` in ``cwd`` to its end and return its exit status, CPU seconds, peak RSS and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return {"exit": child.returncode, "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                "wall_seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                "stdout": out.read().decode(errors="replace").strip(),
                "stderr_tail": err.read().decode(errors="replace").strip()[-300:]}


def run_live(command: list[str], env: dict[str, str], cwd: Path, *, metrics_port: int,
             lines: int) -> dict[str, object]:
    """Run the live agent until it has read ``lines`` lines and is behind on no file, then stop it.

    Returns the exit status, CPU and wall seconds, peak RSS and the end of stderr, as
    :func:`run_measured` does, and the seconds until the agent caught up (None if it exited
    or timed out first). The agent gets SIGTERM, and SIGKILL if it has not stopped after
    ``STOP_TIMEOUT_SECS``, also when this function fails.
    """
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        caught_up = None
        finished = None
        try:
            while time.monotonic() - started < LIVE_TIMEOUT_SECS:
                time.sleep(0.2)
                finished = os.wait4(child.pid, os.WNOHANG)
                if finished[0] == child.pid:
                    break
                finished = None
                if _caught_up(_scrape(url), lines):
                    caught_up = round(time.monotonic() - started, 2)
                    break
        finally:
            if finished is None:
                finished = _stop(child)
        _, status, usage = finished
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return {"exit": child.returncode, "caught_up_seconds": caught_up,
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "wall_seconds": round(wall, 2),
                "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                "stderr_tail": err.read().decode(errors="replace").strip()[-300:]}


def _stop(child: subprocess.Popen) -> tuple[int, int, resource.struct_rusage]:
    """Stop a child with SIGTERM, or SIGKILL after ``STOP_TIMEOUT_SECS``, and return what ``os.wait4`` returns."""
    child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECS
    while time.monotonic() < deadline:
        finished = os.wait4(child.pid, os.WNOHANG)
        if finished[0] == child.pid:
            return finished
        time.sleep(0.1)
    child.kill()
    return os.wait4(child.pid, 0)


def _scrape(url: str) -> str:
    """Return the text of the agent's metrics endpoint, or "" while it is not serving yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode("utf-8")
    except (OSError, http.client.HTTPException):
        return ""


def _caught_up(metrics: str, lines: int) -> bool:
    """Return whether the metrics count at least ``lines`` lines read and no byte behind.

    Lines count whether they parsed or not, so a malformed line cannot keep this False.
    """
    read = re.findall(r"^fti_agent_lines_read_total(?:\{[^}]*\})? (\d+)", metrics, re.MULTILINE)
    behind = re.findall(r"^fti_agent_bytes_behind(?:\{[^}]*\})? (\d+)", metrics, re.MULTILINE)
    return sum(map(int, read)) >= lines and bool(behind) and all(value == "0" for value in behind)


def has_zat() -> bool:
    found = subprocess.run([sys.executable, "-c", "import zat.zeek_log_reader"], capture_output=True, check=False)
    return found.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("conn_log", type=Path)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--detector", choices=DETECTORS, default="iforest")
    parser.add_argument("--budget-epsilon", type=float, default=10.0,
                        help="privacy.budget_epsilon; the default 10 stops releasing after 10 rounds of epsilon 1")
    parser.add_argument("--with-pandas", action="store_true", help="do not hide pandas from the children")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        tsv, jsonl = build_inputs(args.conn_log, args.lines, folder)
        jsonl.unlink()  # build_inputs also writes a JSON copy, which this run does not read
        metrics_port = closed_local_port()
        config = write_agent_config(folder, tsv, detector=args.detector, budget_epsilon=args.budget_epsilon,
                                    metrics_port=metrics_port)
        env = dict(os.environ)
        if not args.with_pandas:
            (folder / "hide").mkdir()
            (folder / "hide" / "sitecustomize.py").write_text(HIDE_PANDAS, encoding="utf-8")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder / "hide"), env.get("PYTHONPATH")) if p)

        print(f"# {args.lines} conn lines from {args.conn_log.name} ({tsv.stat().st_size >> 20} MiB); detector "
              f"{args.detector}; budget_epsilon {args.budget_epsilon}; pandas "
              f"{'as installed' if args.with_pandas else 'hidden'}; {os.cpu_count()} CPUs; Python "
              f"{sys.version.split()[0]}; load average {os.getloadavg()[0]:.2f}")
        commands = {"imports": [sys.executable, "-c", IMPORTS_CODE.format(module=args.detector)]}
        if has_zat():
            commands["zat"] = [sys.executable, "-c", ZAT_CODE, str(tsv)]
        commands["replay"] = [sys.executable, "-m", "fti.cli", "agent", "run", "--once", "--no-poll",
                              "--config", str(config)]
        results: dict[str, dict[str, object]] = {}
        for label, command in commands.items():
            # The children run in the temporary folder, so that ``python -c`` and ``-m`` import fti
            # from the installation or PYTHONPATH, not from the caller's working directory.
            results[label] = run_measured(command, env, folder)
            print(json.dumps({"name": label, **results[label]}))

        replay = results["replay"]
        # Exit status 3 means summaries stay pending, which the closed hub port makes certain.
        if replay["exit"] not in (0, 3):
            print(f"# replay failed with exit status {replay['exit']}", file=sys.stderr)
            return 1

        # The live agent gets a fresh state folder, so it reads the file from its start.
        shutil.rmtree(folder / "state")
        live_command = [sys.executable, "-m", "fti.cli", "agent", "run", "--no-poll", "--config", str(config)]
        with tsv.open("rb") as stream:
            file_lines = sum(block.count(b"\n") for block in iter(lambda: stream.read(1 << 20), b""))
        results["live"] = run_live(live_command, env, folder, metrics_port=metrics_port, lines=file_lines)
        print(json.dumps({"name": "live", **results["live"]}))
        live = results["live"]
        if live["caught_up_seconds"] is None:
            print(f"# the live agent did not catch up: {live['stderr_tail']}", file=sys.stderr)
            return 1

        summary = {"replay_peak_rss_mib": replay["peak_rss_mib"], "live_peak_rss_mib": live["peak_rss_mib"],
                   "target_mib": round(TARGET_MIB, 1),
                   "target_met": max(replay["peak_rss_mib"], live["peak_rss_mib"]) <= TARGET_MIB,
                   "above_imports_mib": round(replay["peak_rss_mib"] - results["imports"]["peak_rss_mib"], 1)}
        if "zat" in results and results["zat"]["cpu_seconds"]:
            summary["replay_cpu_of_zat"] = round(replay["cpu_seconds"] / results["zat"]["cpu_seconds"], 2)
        print(json.dumps(summary))
        print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
