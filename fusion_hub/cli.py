"""Entry points of the ``fti hub`` subcommands; the ``fti`` command parses the arguments.

``serve`` is the hub's long-running process: it configures logging (the only place in
fusion_hub that does), serves until SIGINT or SIGTERM, and then stops cleanly. SIGHUP reloads
the configuration file. Under systemd (``Type=notify``) it reports readiness, reloads and
stops, and pings the watchdog while the hub's threads run. Open rounds stay open across a
restart: their state is in the database, and the deadline still applies.
The other functions change the registry in the database of a configuration, also while a hub
runs on it.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fusion_hub.backends import open_storage
from fusion_hub.config import HubConfig, load_hub_config
from fusion_hub.errors import HubConfigError, HubError
from fusion_hub.registry import SiteRegistry, beta_mean
from fti.sd_notify import SystemdNotifier
from fusion_hub.server import HubServer
from fusion_hub.timeutil import from_micros

log = logging.getLogger(__name__)

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(config_path: Path, *, log_level: str = "INFO") -> int:
    """Run the hub in the foreground until SIGINT or SIGTERM; return the exit status.

    SIGHUP reloads the configuration file. A valid new configuration replaces the running
    hub: the old one stops (requests in flight finish) and a new one starts on the new
    settings. An invalid file, or a new hub that cannot start, is logged as an error and the
    previous configuration keeps serving.

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

    # The handler only records the signal; the loop below acts on it outside signal context.
    received: list[int] = []
    wake = threading.Event()

    def record_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        wake.set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, record_signal) for sig in handled}
    notifier = SystemdNotifier(os.environ)
    hub = HubServer(config)
    try:
        url = hub.start()
        # The objects built so far live as long as the process. Freezing them keeps the full
        # collections that a large envelope's objects trigger from scanning them every time.
        gc.freeze()
        print(f"fti hub serving TAXII 2.1 at {url}/taxii2/ (metrics at {url}/metrics)",
              flush=True)
        notifier.notify("READY=1", f"STATUS=serving TAXII 2.1 at {url}/taxii2/")
        hub = _serve_until_stopped(config_path, hub, notifier, received, wake)
        notifier.notify("STOPPING=1", "STATUS=stopping")
    finally:
        hub.stop()
        notifier.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _serve_until_stopped(
    config_path: Path, hub: HubServer, notifier: SystemdNotifier, received: list[int],
    wake: threading.Event,
) -> HubServer:
    """Ping the watchdog, reload on SIGHUP and return the running hub on SIGINT or SIGTERM."""
    interval = notifier.watchdog_interval_secs
    while True:
        # A hub whose HTTP loop or ticker died gets no ping, so systemd restarts it.
        if interval is not None and hub.is_alive():
            notifier.notify("WATCHDOG=1")
        wake.wait(interval)
        wake.clear()
        while received:
            signum = received.pop(0)
            if signum != signal.SIGHUP:
                log.info("signal %s received; stopping", signal.Signals(signum).name)
                return hub
            log.info("signal SIGHUP received; reloading %s", config_path)
            hub = _reload(config_path, hub, notifier)


def _reload(config_path: Path, hub: HubServer, notifier: SystemdNotifier) -> HubServer:
    """Return a hub on the reloaded configuration, or ``hub`` itself when that fails."""
    notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        config = load_hub_config(config_path)
    except HubConfigError as err:
        log.error("reload failed; the previous configuration keeps serving: %s", err)
        notifier.notify("READY=1", "STATUS=reload failed; serving the previous configuration")
        return hub
    if config == hub.config:
        log.info("configuration %s unchanged; nothing to reload", config_path)
        notifier.notify("READY=1")
        return hub

    # Two hubs cannot share the port, so the old one stops before the new one binds it.
    hub.stop()
    log.info("configuration %s: %s", config_path, config)
    replacement = HubServer(config)
    try:
        url = replacement.start()
    except HubError as err:
        replacement.stop()
        log.error("reloaded hub cannot start (%s); restarting the previous configuration", err)
        hub = HubServer(hub.config)
        url = hub.start()
        notifier.notify("READY=1", f"STATUS=reload failed; serving the previous configuration at {url}/taxii2/")
        return hub
    print(f"fti hub serving TAXII 2.1 at {url}/taxii2/ (metrics at {url}/metrics)", flush=True)
    notifier.notify("READY=1", f"STATUS=serving TAXII 2.1 at {url}/taxii2/")
    return replacement


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


def issue_token(config_path: Path, name: str) -> str:
    """Create an API token for a site or consumer and return it (shown once).

    Raises
    ------
    HubConfigError, RegistryError, UnknownCredential
        If the configuration is invalid, or the credential is unknown or revoked.
    """
    config = load_hub_config(config_path)
    with _registry(config) as registry:
        return registry.issue_token(name)


def revoke_token(config_path: Path, token_id: str) -> None:
    """Revoke one API token by its id; a running hub rejects its next request."""
    config = load_hub_config(config_path)
    with _registry(config) as registry:
        registry.revoke_token(token_id)


def format_sites(config_path: Path) -> str:
    """Return a table of every site and consumer: kind, state, enrolment time and trust."""
    config = load_hub_config(config_path)
    storage = open_storage(config.storage)
    try:
        credentials = storage.list_credentials()
    finally:
        storage.close()
    rows = [("NAME", "KIND", "STATE", "ENROLLED", "TRUST", "READS")]
    for credential in credentials:
        state = "revoked " + _stamp(credential.revoked_us) if credential.revoked_us else "active"
        trust = f"{beta_mean(credential):.3f}" if credential.kind == "site" else "-"
        reads = ",".join(credential.read_collections) if credential.kind == "consumer" else "-"
        rows.append((credential.name, credential.kind, state, _stamp(credential.created_us),
                     trust, reads))
    return _table(rows)


def format_rounds(config_path: Path, *, limit: int = 20) -> str:
    """Return a table of the ``limit`` most recent rounds, newest first, with their outcome."""
    if limit < 1:
        raise HubError(f"--limit must be >= 1; got {limit}")
    config = load_hub_config(config_path)
    rows = [("ROUND START", "STATE", "CLOSED", "SITES", "PUBLISHED", "REFUSED", "REVOKED")]
    storage = open_storage(config.storage)
    try:
        for record in storage.list_rounds(limit=limit):
            if record.closed_us is None:
                # Counts are recorded at closing; an open round shows its contributors so far.
                sites = storage.count_active_contributors(record.round_start_us)
                rows.append((_stamp(record.round_start_us), "open", "-", str(sites), "-", "-",
                             "-"))
                continue
            rows.append((_stamp(record.round_start_us), f"closed ({record.close_reason})",
                         _stamp(record.closed_us), str(record.contributors),
                         str(record.published), str(record.refused), str(record.revoked)))
    finally:
        storage.close()
    return _table(rows)


def _stamp(micros: int | None) -> str:
    if micros is None:
        return "-"
    return from_micros(micros).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


class _registry:
    """Open the configured database just long enough for one registry change."""

    def __init__(self, config: HubConfig) -> None:
        self._storage = open_storage(config.storage)
        self._registry = SiteRegistry(self._storage, auth=config.auth, fusion=config.fusion)

    def __enter__(self) -> SiteRegistry:
        return self._registry

    def __exit__(self, *exc_info: object) -> None:
        self._storage.close()
