"""The hub as one object: storage, registry, rounds and the TAXII server on waitress.

``HubServer(config)`` wires the parts together; ``start()`` serves HTTP on a background thread
and returns the base URL, and ``stop()`` shuts everything down. A second background thread,
the ticker, closes rounds whose deadline passed, every ``tick_seconds``, and every
``SIEM_FLUSH_INTERVAL_SECS`` revokes expired indicators and resends the SIEM spools.

The demo and the tests use the parts directly: ``storage``, ``registry`` (enrol sites, add
consumers) and ``rounds`` (``close_all_open_rounds`` at the end of a replay).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from fusion_hub.auth import Authenticator
from fusion_hub.auth_limits import AuthLimits
from fusion_hub.backends import describe_storage, open_storage
from fusion_hub.config import HubConfig
from fusion_hub.errors import HubError
from fusion_hub.fusion import FusionStrategy, create_strategy
from fusion_hub.intake import Intake
from fusion_hub.metrics import HubMetrics
from fusion_hub.pagination import PageTokens
from fusion_hub.publisher import Publisher
from fusion_hub.ratelimit import build_rate_limiter
from fusion_hub.registry import SiteRegistry
from fusion_hub.rounds import RoundManager
from fusion_hub.secure_rounds import SecureRoundCoordinator
from fusion_hub.taxii import HubServices, create_app
from fusion_hub.timeutil import utc_now
from fusion_hub.tls import TlsServer
from fusion_hub.transport import taxii_channel
from privacy.random import RandomSource
from siem_integrations.elastic_bulk_file import ElasticBulkFileSink
from siem_integrations.hub_sinks import build_http_sinks
from siem_integrations.sink import IndicatorSink
from siem_integrations.splunk_hec_file import SplunkHecFileSink

log = logging.getLogger(__name__)

# Bytes waitress reads from a socket at a time, against its default of 8 KiB. An envelope of
# 1,000 indicators is about 440 KiB, and each read is a turn of waitress's event loop, which
# competes with the request threads for the interpreter. This took about 1 ms off each such
# envelope on the benchmark machine. Waitress still buffers the body before a thread runs it.
RECV_BYTES = 256 * 1024

# How long stop() waits for the HTTP loop, the ticker and in-flight requests.
_STOP_TIMEOUT_SECS = 10.0

# How often the ticker flushes the SIEM sinks when no round closes (seconds of hub clock).
SIEM_FLUSH_INTERVAL_SECS = 60.0


def build_sinks(config: HubConfig) -> list[IndicatorSink]:
    """Return the SIEM file sinks enabled in the configuration."""
    sinks: list[IndicatorSink] = []
    if config.siem.splunk_hec_path is not None:
        sinks.append(SplunkHecFileSink(config.siem.splunk_hec_path,
                                       index=config.siem.splunk_index,
                                       host=config.siem.splunk_host or config.hub.name))
    if config.siem.elastic_bulk_path is not None:
        sinks.append(ElasticBulkFileSink(config.siem.elastic_bulk_path,
                                         index=config.siem.elastic_index))
    sinks.extend(build_http_sinks(config.siem, hub_name=config.hub.name))
    return sinks


class HubServer:
    """A fusion hub: TAXII 2.1 over HTTP, round closing and publication.

    Parameters
    ----------
    config : HubConfig
        Loaded with ``load_hub_config`` or built in code.
    clock : callable returning datetime, optional
        Hub time for intake checks, round deadlines and indicator timestamps; tests pass a
        controllable clock.
    rng : RandomSource, optional
        Source of the fusion noise (``corroboration`` strategy); the operating system's CSPRNG
        by default, a seeded one in tests and evaluation runs.
    """

    def __init__(self, config: HubConfig, *, clock: Callable[[], datetime] = utc_now,
                 rng: RandomSource | None = None) -> None:
        self.config = config
        self._clock = clock
        self.metrics = HubMetrics()
        self.storage = open_storage(config.storage, clock=clock)
        self.registry = SiteRegistry(self.storage, auth=config.auth, fusion=config.fusion,
                                     clock=clock)
        self.publisher = Publisher(self.storage, hub_name=config.hub.name, fusion=config.fusion,
                                   sinks=build_sinks(config), metrics=self.metrics)
        self.rounds = RoundManager(
            self.storage, rounds=config.rounds, fusion=config.fusion, registry=self.registry,
            strategy=_strategy(config, rng), publisher=self.publisher,
            metrics=self.metrics, clock=clock,
        )
        self.secure: SecureRoundCoordinator | None = None
        if config.secure.mode == "secure":
            self.secure = SecureRoundCoordinator(
                self.storage, settings=config.secure, rounds=config.rounds, fusion=config.fusion,
                registry=self.registry, strategy=_strategy(config, rng),
                publisher=self.publisher, metrics=self.metrics, hub_name=config.hub.name, clock=clock,
            )
        self.intake = Intake(self.storage, registry=self.registry, rounds=self.rounds,
                             settings=config.rounds, metrics=self.metrics, clock=clock,
                             secure=self.secure)
        self.authenticator = Authenticator(self.registry, self.metrics, realm=config.hub.name,
                                           limits=AuthLimits(config.auth))
        self.app = create_app(HubServices(
            config=config, storage=self.storage, authenticator=self.authenticator,
            intake=self.intake, metrics=self.metrics,
            page_tokens=PageTokens.from_storage(self.storage),
            rate_limiter=build_rate_limiter(self.storage, config.hub.rate_limit_per_minute),
        ))
        # Consumers need the hub identity and extension definitions before any indicator.
        self.publisher.publish_reference_objects()

        self._server: object | None = None
        self._tls_server: TlsServer | None = None
        self._http_thread: threading.Thread | None = None
        self._ticker_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.base_url: str | None = None

    def start(self) -> str:
        """Serve HTTP in a background thread and start the round ticker.

        Returns
        -------
        str
            Base URL such as ``http://127.0.0.1:54321``; discovery is at ``<base>/taxii2/``.

        Raises
        ------
        HubError
            If the server is already running or cannot bind its address.
        """
        if self._server is not None:
            raise HubError(f"hub already running at {self.base_url}")
        settings = self.config.hub
        if self.config.tls.cert_file is not None:
            return self._start_tls()
        try:
            # Waitress caps bodies well above max_content_length, so Flask rejects oversized
            # envelopes itself, with a TAXII error resource.
            server = create_server(
                self.app, host=settings.host, port=settings.port, threads=settings.threads,
                # Waitress rejects a body of exactly its limit, cheroot one over it.
                max_request_body_size=settings.max_content_length_bytes * 2 + 65537,
                ident="fti-hub", recv_bytes=RECV_BYTES,
                **_proxy_settings(settings.trusted_proxy),
            )
        except OSError as err:
            raise HubError(f"cannot listen on {settings.host}:{settings.port}: "
                           f"{err.strerror}; choose another hub.port") from err
        # Waitress's own error responses then carry TAXII error resources.
        server.channel_class = taxii_channel(  # type: ignore[union-attr]
            settings.max_content_length_bytes)
        self._server = server
        host, port = server.effective_host, server.effective_port  # type: ignore[attr-defined]
        self.base_url = f"http://{_url_host(str(host))}:{port}"
        self._stopping.clear()
        self._http_thread = threading.Thread(target=server.run, name="fti-hub-http",
                                             daemon=True)
        self._http_thread.start()
        self._start_ticker()
        self._log_started()
        return self.base_url

    def _start_tls(self) -> str:
        tls_server = TlsServer(self.app, settings=self.config.hub, tls=self.config.tls)
        host, port = tls_server.bind()
        self._tls_server = tls_server
        self._server = tls_server
        self.base_url = f"https://{_url_host(host)}:{port}"
        self._stopping.clear()
        self._http_thread = threading.Thread(target=tls_server.serve, name="fti-hub-https",
                                             daemon=True)
        self._http_thread.start()
        self._start_ticker()
        log.info("hub %s serves TLS (client certificates %s)", self.config.hub.name,
                 tls_server.client_certificates)
        self._log_started()
        return self.base_url

    def _start_ticker(self) -> None:
        self._ticker_thread = threading.Thread(target=self._tick, name="fti-hub-ticker",
                                               daemon=True)
        self._ticker_thread.start()

    def _log_started(self) -> None:
        settings = self.config.hub
        log.info("hub %s started at %s (api root /%s/, storage %s, quorum %d sites, deadline "
                 "%d s, round %d s, strategy %s, threshold %g, sinks: %s)", settings.name,
                 self.base_url, settings.api_root, describe_storage(self.config.storage),
                 self.config.rounds.quorum_sites, self.config.rounds.deadline_seconds,
                 self.config.rounds.round_seconds, self.config.fusion.strategy,
                 self.config.fusion.publish_threshold,
                 ", ".join(s.name for s in self.publisher.sinks) or "none")

    def is_alive(self) -> bool:
        """Whether the HTTP loop and the round ticker are both running."""
        threads = (self._http_thread, self._ticker_thread)
        return all(thread is not None and thread.is_alive() for thread in threads)

    @property
    def discovery_url(self) -> str:
        """URL of the TAXII discovery endpoint (after ``start``)."""
        return f"{self.base_url}/taxii2/"

    @property
    def api_root_url(self) -> str:
        """URL of the hub's TAXII API root (after ``start``)."""
        return f"{self.base_url}/{self.config.hub.api_root}/"

    def stop(self) -> None:
        """Stop serving, stop the ticker and close the database. Safe to call twice."""
        server = self._server
        if server is None:
            self.storage.close()
            return
        self._stopping.set()
        if self._tls_server is not None:
            self._stop_tls(self._tls_server)
            return

        # Close the sockets from inside waitress's loop thread, which then returns.
        trigger = server.trigger  # type: ignore[attr-defined]
        trigger.pull_trigger(lambda: _close_dispatchers(server))
        for thread in (self._http_thread, self._ticker_thread):
            if thread is not None:
                thread.join(_STOP_TIMEOUT_SECS)
                if thread.is_alive():
                    log.warning("hub thread %s did not stop within %.0f s", thread.name,
                                _STOP_TIMEOUT_SECS)
        # Let requests already running finish before the database goes away.
        server.task_dispatcher.shutdown(timeout=_STOP_TIMEOUT_SECS)  # type: ignore[attr-defined]
        trigger.close()
        self._server = None
        self.authenticator.flush_failure_log(final=True)
        self.storage.close()
        log.info("hub %s stopped", self.config.hub.name)

    def _stop_tls(self, tls_server: TlsServer) -> None:
        # cheroot's stop() waits for its worker threads, so requests in flight finish first.
        tls_server.stop()
        for thread in (self._http_thread, self._ticker_thread):
            if thread is not None:
                thread.join(_STOP_TIMEOUT_SECS)
        self._tls_server = None
        self._server = None
        self.authenticator.flush_failure_log(final=True)
        self.storage.close()
        log.info("hub %s stopped", self.config.hub.name)

    def _tick(self) -> None:
        interval = self.config.hub.tick_seconds
        last_flush = self._clock()
        while not self._stopping.wait(interval):
            # Without this, failures held back from the log would stay unreported once the
            # guessing stops, since only the next failure would write their summary.
            self.authenticator.flush_failure_log()
            try:
                self.rounds.close_due_rounds(self._clock())
                if self.secure is not None:
                    self.secure.advance_due(self._clock())
            except Exception:
                # The ticker must survive a failed round; the next tick retries it.
                log.exception("closing rounds past their deadline failed")

            # Without rounds nothing else removes expired indicators or resends the spools.
            now = self._clock()
            if (now - last_flush).total_seconds() < SIEM_FLUSH_INTERVAL_SECS:
                continue
            last_flush = now
            try:
                self.publisher.flush_sinks(now)
            except Exception:
                log.exception("flushing the SIEM sinks failed")
            try:
                self.purge_statuses(now)
            except Exception:
                log.exception("deleting expired status resources failed")

    def purge_statuses(self, now: datetime) -> int:
        """Delete the status resources older than ``hub.status_retention_days`` and return how many."""
        days = self.config.hub.status_retention_days
        deleted = self.storage.purge_statuses(now - timedelta(days=days))
        if deleted:
            log.info("deleted %d status resources older than %d days", deleted, days)
        return deleted


def _strategy(config: HubConfig, rng: RandomSource | None) -> FusionStrategy:
    return create_strategy(config.fusion.strategy,
                           corroboration_epsilon=config.fusion.corroboration_epsilon, rng=rng)


def _close_dispatchers(server: Any) -> None:
    """Close the listening socket and every connection; runs in waitress's loop thread.

    The trigger pipe only leaves the loop's map here. Its file descriptors are closed by
    ``stop()`` after the loop ended, because the thread that pulled the trigger may still be
    writing to it, and a closed descriptor number can be reused by any file opened meanwhile.
    """
    for dispatcher in list(server._map.values()):
        if dispatcher is server.trigger:
            dispatcher.del_channel()
        elif dispatcher is server:
            # BaseWSGIServer.close() would close the trigger too, so bypass it.
            wasyncore.dispatcher.close(dispatcher)
        else:
            dispatcher.close()
    server._map.clear()


def _proxy_settings(trusted_proxy: str) -> dict[str, Any]:
    """Return waitress settings that take the client address from a trusted proxy."""
    if not trusted_proxy:
        return {}
    # Only the last X-Forwarded-For entry, which the proxy itself added, is trusted. Any
    # entry before it comes from the client. Requests from other peers lose the header.
    return {"trusted_proxy": trusted_proxy, "trusted_proxy_headers": {"x-forwarded-for"},
            "trusted_proxy_count": 1, "clear_untrusted_proxy_headers": True}


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
