"""Measure a legitimate login to the hub during a flood of wrong passwords.

A hub with the RFC 9106 argon2id defaults runs on 127.0.0.1. Flood threads send wrong
passwords for one site from 127.0.0.1 as fast as the hub responds. Meanwhile a second site
logs in once a second from 127.0.0.2, with the verified-password cache off
(``auth.credential_cache_seconds: 0``), so each of its logins needs argon2id as the first
login after a cache expiry does. The run is repeated with the failed-login limits off
(limits 0, 64 concurrent verifications) and with their defaults, and once without a flood
for the login time of an idle hub.

Reported per run: the legitimate logins' status codes and latency (median and maximum), and
the flood's responses by status. Each 200 and 401 costs one argon2id computation, and a 429
costs none.

Usage::

    python benchmarks/hub_auth_flood.py                 # 20 s per run, 8 flood threads
    python benchmarks/hub_auth_flood.py --seconds 10 --flood-threads 4
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from fusion_hub.config import (  # noqa: E402
    AuthSettings,
    HubConfig,
    ServerSettings,
    StorageSettings,
)
from fusion_hub.server import HubServer  # noqa: E402
from privacy.signing import generate_signing_key  # noqa: E402

TAXII = "application/taxii+json;version=2.1"
# Seconds between two logins of the legitimate site.
LOGIN_INTERVAL_SECS = 1.0


def get_collections(port: int, username: str, password: str, source: str) -> int:
    """Send one authenticated GET from the loopback address ``source``. Return its status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120,
                                            source_address=(source, 0))
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    try:
        connection.request("GET", "/fti/collections/",
                           headers={"Accept": TAXII, "Authorization": f"Basic {credentials}"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def run(label: str, auth: AuthSettings, *, seconds: float, flood_threads: int) -> dict[str, Any]:
    """Run one flood against a fresh hub and return what it measured."""
    with tempfile.TemporaryDirectory() as folder:
        config = HubConfig(hub=ServerSettings(name="bench-hub", rate_limit_per_minute=0),
                           storage=StorageSettings(path=Path(folder) / "hub.sqlite3"),
                           auth=auth)
        hub = HubServer(config)
        hub.start()
        try:
            hub.registry.enroll_site("site-target", generate_signing_key().public_key_b64)
            password = hub.registry.enroll_site("site-good",
                                                generate_signing_key().public_key_b64)
            assert hub.base_url is not None
            port = int(hub.base_url.rsplit(":", 1)[1])
            return measure(label, port, password, seconds=seconds, flood_threads=flood_threads)
        finally:
            hub.stop()


def measure(label: str, port: int, password: str, *, seconds: float,
            flood_threads: int) -> dict[str, Any]:
    stop = threading.Event()
    flood_statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def flood() -> None:
        while not stop.is_set():
            status = get_collections(port, "site-target", "wrong-password", "127.0.0.1")
            with lock:
                flood_statuses[status] += 1

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(flood_threads)]
    for thread in threads:
        thread.start()
    login_statuses: Counter[int] = Counter()
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        login_statuses[get_collections(port, "site-good", password, "127.0.0.2")] += 1
        latencies.append(time.perf_counter() - started)
        time.sleep(max(0.0, LOGIN_INTERVAL_SECS - latencies[-1]))
    stop.set()
    for thread in threads:
        thread.join(timeout=180)
    return {
        "label": label, "logins": dict(login_statuses),
        "median_ms": statistics.median(latencies) * 1000, "max_ms": max(latencies) * 1000,
        "flood": dict(flood_statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="length of each run in seconds (default 20)")
    parser.add_argument("--flood-threads", type=int, default=8,
                        help="concurrent connections sending wrong passwords (default 8)")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 600:
        parser.error(f"--seconds must be in [1, 600]; got {args.seconds}")
    if not 1 <= args.flood_threads <= 64:
        parser.error(f"--flood-threads must be in [1, 64]; got {args.flood_threads}")

    defaults = AuthSettings(credential_cache_seconds=0.0)
    unlimited = dataclasses.replace(defaults, max_failures_per_address=0,
                                    max_failures_per_username=0,
                                    max_concurrent_verifications=64)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}, "
          f"{args.seconds:.0f} s per run, {args.flood_threads} flood threads")
    print("| limits | logins (status: count) | login median ms | login max ms "
          "| flood responses (status: count) |")
    print("| --- | --- | ---: | ---: | --- |")
    runs = (("no flood", defaults, 0), ("off", unlimited, args.flood_threads),
            ("defaults", defaults, args.flood_threads))
    for label, auth, flood_threads in runs:
        result = run(label, auth, seconds=args.seconds, flood_threads=flood_threads)
        print(f"| {result['label']} | {result['logins']} | {result['median_ms']:.0f} "
              f"| {result['max_ms']:.0f} | {result['flood']} |",
              flush=True)


if __name__ == "__main__":
    main()
