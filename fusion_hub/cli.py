"""Entry points of the ``fti hub`` subcommands; the ``fti`` command parses the arguments.

``serve`` is the hub's long-running process: it configures logging (the only place in
fusion_hub that does), serves until SIGINT or SIGTERM, and then stops cleanly. Open rounds stay
open across a restart: their state is in the database, and the deadline still applies.
The other functions change the registry in the database of a configuration, also while a hub
runs on it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fusion_hub.config import HubConfig, load_hub_config
from fusion_hub.registry import SiteRegistry
from fusion_hub.server import HubServer
from fusion_hub.sqlite_storage import SQLiteHubStorage

log = logging.getLogger(__name__)

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(config_path: Path, *, log_level: str = "INFO") -> int:
    """Run the hub in the foreground until SIGINT or SIGTERM; return the exit status.

    Raises
    ------
    HubConfigError
        If the configuration is invalid; nothing is started then.
    HubError
        If the hub cannot open its database or bind its address.
    """
    config = load_hub_config(config_path)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level.upper(), format=_LOG_FORMAT, stream=sys.stderr)
    log.info("configuration %s: %s", config_path, config)

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s received; stopping", signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    hub = HubServer(config)
    try:
        url = hub.start()
        print(f"fti hub serving TAXII 2.1 at {url}/taxii2/ (metrics at {url}/metrics)",
              flush=True)
        stop_requested.wait()
    finally:
        hub.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def enroll(config_path: Path, site_id: str, public_key_b64: str) -> str:
    """Enrol a site in the hub's database and return its password (shown once).

    Raises
    ------
    HubConfigError
        If the configuration is invalid.
    RegistryError
        If the site id is invalid or taken, or the key is not an Ed25519 public key.
    """
    config = load_hub_config(config_path)
    with _registry(config) as registry:
        return registry.enroll_site(site_id, public_key_b64)


def add_consumer(config_path: Path, name: str, read: Sequence[str]) -> str:
    """Add a read-only TAXII consumer and return its password (shown once).

    Raises
    ------
    HubConfigError, RegistryError
        As for :func:`enroll`.
    """
    config = load_hub_config(config_path)
    with _registry(config) as registry:
        return registry.add_consumer(name, read=read)


def revoke(config_path: Path, name: str) -> None:
    """Revoke a site or consumer; a running hub rejects its next request.

    Raises
    ------
    HubConfigError
        If the configuration is invalid.
    UnknownCredential
        If nothing has this name.
    """
    config = load_hub_config(config_path)
    with _registry(config) as registry:
        registry.revoke(name)


class _registry:
    """Open the configured database just long enough for one registry change."""

    def __init__(self, config: HubConfig) -> None:
        self._storage = SQLiteHubStorage(config.storage.path)
        self._registry = SiteRegistry(self._storage, auth=config.auth, fusion=config.fusion)

    def __enter__(self) -> SiteRegistry:
        return self._registry

    def __exit__(self, *exc_info: object) -> None:
        self._storage.close()
