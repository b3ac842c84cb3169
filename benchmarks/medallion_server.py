"""Run medallion, the OASIS reference TAXII 2.1 server, on 127.0.0.1 for tests and benchmarks.

medallion 3.0 reads one JSON configuration naming its users and its backend. With the memory
backend the whole server state lives in one JSON document: the discovery resource, then per
API root its information, status resources and collections, each with ``objects`` and
``manifest`` lists. ``running_medallion`` writes both files into a folder, starts medallion's
own command in a child process on a free loopback port, and waits until discovery responds.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
API_ROOT = "api1"
# medallion compares passwords in plain text, so these are throwaway values for loopback runs.
USER = "fti-test"
PASSWORD = "medallion-test-password"
# Startup takes about a second. A stuck child fails the caller instead of hanging it.
START_TIMEOUT_SECS = 30.0


@dataclass(frozen=True)
class Medallion:
    """A running medallion: its discovery URL and the URL of each collection by title."""

    discovery_url: str
    api_root_url: str
    collection_ids: dict[str, str]
    user: str = USER
    password: str = PASSWORD

    def collection_url(self, title: str) -> str:
        """Return the URL of a collection given its title."""
        return f"{self.api_root_url}collections/{self.collection_ids[title]}/"


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(folder: Path, port: int, titles: list[str], *, max_page_size: int) -> Path:
    """Write medallion's configuration and memory-backend data and return the config path."""
    base = f"http://127.0.0.1:{port}/"
    collections = [
        {"id": str(uuid.uuid4()), "title": title, "can_read": True, "can_write": True,
         "media_types": ["application/stix+json;version=2.1"], "objects": [], "manifest": []}
        for title in titles
    ]
    data = {
        "/discovery": {"title": "medallion for fti tests", "default": f"{base}{API_ROOT}/",
                       "api_roots": [f"{base}{API_ROOT}/"]},
        API_ROOT: {
            "information": {"title": "fti test root", "versions": [TAXII_MEDIA_TYPE],
                           "max_content_length": 100 * 1024 * 1024},
            "status": [],
            "collections": collections,
        },
    }
    data_path = folder / "medallion-data.json"
    data_path.write_text(json.dumps(data), encoding="utf-8")
    config = {
        "backend": {"module": "medallion.backends.memory_backend",
                    "module_class": "MemoryBackend", "filename": str(data_path)},
        "users": {USER: PASSWORD},
        "taxii": {"max_page_size": max_page_size},
    }
    config_path = folder / "medallion-config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return config_path


@contextmanager
def running_medallion(
    folder: Path, titles: list[str], *, max_page_size: int = 1000
) -> Iterator[Medallion]:
    """Start medallion with empty collections named ``titles``, and stop it afterwards.

    Raises
    ------
    RuntimeError
        If medallion exits or does not respond to discovery within ``START_TIMEOUT_SECS``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = write_config(folder, port, titles, max_page_size=max_page_size)
    log_file = (folder / "medallion.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "medallion.scripts.run", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "ERROR", str(config_path)],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    try:
        data = json.loads((folder / "medallion-data.json").read_text(encoding="utf-8"))
        collection_ids = {c["title"]: c["id"] for c in data[API_ROOT]["collections"]}
        server = Medallion(discovery_url=f"http://127.0.0.1:{port}/taxii2/",
                           api_root_url=f"http://127.0.0.1:{port}/{API_ROOT}/",
                           collection_ids=collection_ids)
        _wait_until_up(child, server, folder / "medallion.log")
        yield server
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        log_file.close()


def _wait_until_up(child: subprocess.Popen[bytes], server: Medallion, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"medallion exited with code {child.returncode}: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            response = requests.get(server.discovery_url, auth=(server.user, server.password),
                                    headers={"Accept": TAXII_MEDIA_TYPE}, timeout=2)
            if response.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"medallion did not respond at {server.discovery_url} within "
                       f"{START_TIMEOUT_SECS} s. Its log is in {log_path}")
