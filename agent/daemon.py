"""Run the live agent as a long-running service: signals, reload, systemd notifications, metrics.

``fti agent run`` without ``--once`` runs :class:`AgentService`. It follows the configured logs
with :class:`agent.live.LiveAgent` until SIGTERM or SIGINT. The loop then finishes its current
step, the live agent commits its checkpoint (tail positions and open rounds, consistent with
what is in the outbox), and the process exits with status 0. The step in progress is bounded
by one delivery attempt, so the stop fits in the unit's ``TimeoutStopSec``. A SIGKILL after
that timeout loses nothing either: the agent resumes from its last checkpoint.

SIGHUP reloads the configuration file. The new file is checked by the same loader as at start.
When it is invalid, the error (file, line, key, value, fix) is logged and the running
configuration stays. When it is valid, the changed keys are logged, the live agent commits and
closes, and a new one starts on the new configuration from that checkpoint. ``site.id`` and
``state_dir`` cannot change on reload, because they name the site's identity and its state;
changing them needs a restart.

Under systemd (``Type=notify``) the service sends ``READY=1`` once it follows its sources,
``WATCHDOG=1`` from the loop at half of ``WATCHDOG_USEC``, ``RELOADING=1`` and ``STOPPING=1``,
and a ``STATUS=`` line whenever rounds, the outbox or the sources change.

Delivery to the hub happens in the loop, one attempt per due step. After a failure the next
attempt waits an exponential, capped and jittered delay (:func:`agent.sender.backoff_delay_secs`),
so a hub outage neither blocks the loop nor hammers the hub.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from agent.config import AgentConfig, load_agent_config
from agent.errors import AgentError, DeliveryError
from agent.live import LiveAgent, LiveSettings, StepReport
from agent.metrics_server import MetricsServer
from agent.sender import SummarySender, backoff_delay_secs
from agent.service import Agent
from fti.sd_notify import SystemdNotifier
from privacy.errors import PrivacyError
from privacy.signing import SigningKey

log = logging.getLogger(__name__)

__all__ = ["AgentService", "changed_settings"]

# Keys that a reload may not change (see the module docstring).
FIXED_ON_RELOAD = ("site.id", "state_dir")

# Values of these keys never reach the log.
SECRET_KEYS = ("hub.password",)


class AgentService:
    """The agent as a service: one live agent at a time, replaced on reload.

    Parameters
    ----------
    config_path : Path
        The configuration file, read again on SIGHUP.
    config : AgentConfig
        The configuration loaded from it at start.
    notifier : SystemdNotifier
        Where readiness, watchdog pings and status go.
    start_at : {"beginning", "end"} or None, default None
        Overrides ``live.start_at`` from the command line.
    clock : callable, default time.monotonic
        Seconds for the watchdog and the delivery schedule.
    """

    def __init__(self, config_path: Path, config: AgentConfig, *, notifier: SystemdNotifier,
                 start_at: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config_path = config_path
        self.config = config
        self.notifier = notifier
        self.start_at = start_at
        self.clock = clock
        self._stopping = False
        self._reload_requested = False
        self._run_stop = threading.Event()
        self._pending_config: AgentConfig | None = None
        self._agent: Agent | None = None
        self._live: LiveAgent | None = None
        self._metrics_server: MetricsServer | None = None
        self._last_watchdog = 0.0
        self._delivery_failures = 0
        self._next_delivery = 0.0
        self._status = ""
        self._rng = random.Random()  # noqa: S311 - jitter only spreads retries in time

    # -- signals ---------------------------------------------------------------------------

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        """Signal handler: finish the current step, commit and exit."""
        if not self._stopping:
            log.info("signal %s received; stopping after the current step", signal.Signals(signum).name)
            self.notifier.notify("STOPPING=1", "STATUS=stopping: committing state")
        self._stopping = True
        self._run_stop.set()

    def request_reload(self, signum: int, frame: FrameType | None = None) -> None:
        """Signal handler: reload the configuration after the current step."""
        self._reload_requested = True

    # -- the service -----------------------------------------------------------------------

    def run(self) -> int:
        """Follow the logs until SIGTERM or SIGINT, then return the exit status (0)."""
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
                    signal.SIGHUP: self.request_reload}
        previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
        try:
            self._start(self.config)
            self.notifier.notify("READY=1", f"STATUS={self._status_line()}")
            while True:
                # Cleared before the check: a SIGTERM between the two still ends the run.
                self._run_stop.clear()
                if self._stopping:
                    break
                assert self._live is not None
                self._live.run(self._run_stop, deliver=False, on_step=self._after_step)
                if self._pending_config is not None and not self._stopping:
                    self._switch(self._pending_config)
                    self.notifier.notify("READY=1", f"STATUS={self._status_line()}")
        finally:
            self._close()
            for number, handler in previous.items():
                signal.signal(number, handler)
            self.notifier.close()
        log.info("site %s: agent stopped", self.config.site.id)
        return 0

    def _start(self, config: AgentConfig) -> None:
        """Open the agent's state, start its live loop and its metrics endpoint."""
        agent = Agent(config)
        try:
            settings = LiveSettings(**{f.name: getattr(config.live, f.name) for f in fields(config.live)})
            if self.start_at is not None:
                settings = replace(settings, start_at=self.start_at)
            self._live = LiveAgent(agent, settings)
            if config.metrics.enabled:
                self._metrics_server = MetricsServer(config.metrics.address, config.metrics.port)
                self._metrics_server.start()
        except BaseException:
            agent.close()
            raise
        self._agent, self.config = agent, config
        self._delivery_failures, self._next_delivery = 0, 0.0
        self._refresh_metrics()
        log.info("site %s: agent started with %s: %d sources, hub %s, outbox limit %d, metrics %s",
                 config.site.id, self.config_path, len(config.sources), config.hub.url,
                 config.outbox.max_summaries,
                 f"on {config.metrics.address}:{self._metrics_server.port}" if self._metrics_server else "off")

    def _close(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        self._live = None

    def _switch(self, new: AgentConfig) -> None:
        """Replace the live agent with one on ``new``, keeping the old configuration if that fails."""
        old = self.config
        self._pending_config = None
        self._close()
        try:
            self._start(new)
        except (AgentError, OSError, ValueError) as err:
            log.error("site %s: the reloaded configuration cannot start (%s); restarting with the previous one",
                      old.site.id, err)
            self._start(old)
            return
        log.info("site %s: configuration %s reloaded", new.site.id, self.config_path)

    # -- one step --------------------------------------------------------------------------

    def _after_step(self, report: StepReport) -> None:
        """Deliver when due, refresh metrics and status, ping the watchdog, handle a reload."""
        now = self.clock()
        self._deliver_if_due(now, force=bool(report.rounds))
        assert self._live is not None
        self._live.malformed.flush()
        self._refresh_metrics()
        status = self._status_line()
        if status != self._status:
            self.notifier.notify(f"STATUS={status}")
            self._status = status
        self._ping_watchdog(now)
        if self._reload_requested:
            self._reload_requested = False
            self._reload()

    def _deliver_if_due(self, now: float, *, force: bool) -> None:
        """Try the outbox once when it contains summaries and the backoff has passed."""
        agent = self._agent
        assert agent is not None
        if agent.state.outbox_size() == 0 or (now < self._next_delivery and not force):
            return
        hub = replace(agent.config.hub, max_send_attempts=1)
        try:
            sender = SummarySender(hub, agent.config.read_hub_password(), agent.state, site_id=agent.config.site.id)
            delivery = sender.deliver_pending()
        except (DeliveryError, AgentError) as err:
            log.error("site %s: delivery failed: %s; summaries stay in the outbox", agent.config.site.id, err)
            delivery = None
        if delivery is not None:
            agent.metrics.observe_delivery(delivery, agent.state.outbox_size())
        if delivery is not None and delivery.pending == 0:
            self._delivery_failures = 0
            self._next_delivery = now
            return
        self._delivery_failures += 1
        delay = backoff_delay_secs(self._delivery_failures, hub.retry_backoff_secs, rng=self._rng)
        self._next_delivery = now + delay
        log.info("site %s: %d summaries wait in the outbox; next delivery attempt in %.1f s (failure %d)",
                 agent.config.site.id, agent.state.outbox_size(), delay, self._delivery_failures)

    def _ping_watchdog(self, now: float) -> None:
        interval = self.notifier.watchdog_interval_secs
        if interval is not None and now - self._last_watchdog >= interval:
            self.notifier.notify("WATCHDOG=1")
            self._last_watchdog = now

    def _reload(self) -> None:
        """Check the configuration file again and schedule a switch when it changed."""
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        log.info("signal SIGHUP received; reloading %s", self.config_path)
        try:
            new = load_agent_config(self.config_path)
            # The running agent stops before the new one starts, so the files the new one
            # needs at start are checked first. A failed switch could not fall back either
            # when the running configuration names the same missing file.
            new.read_hub_password()
            SigningKey.from_file(new.site.signing_key)
        except (AgentError, OSError, PrivacyError) as err:
            log.error("reload rejected, the running configuration stays: %s", err)
            self.notifier.notify("READY=1", "STATUS=reload rejected; running the previous configuration")
            return

        changes = changed_settings(self.config, new)
        fixed = [key for key in changes if key in FIXED_ON_RELOAD]
        if fixed:
            log.error("reload rejected, the running configuration stays: %s cannot change on reload; restart "
                      "the agent (systemctl restart fti-agent) to change it", ", ".join(fixed))
            self.notifier.notify("READY=1", "STATUS=reload rejected; running the previous configuration")
            return
        if not changes:
            log.info("configuration %s unchanged; nothing to reload", self.config_path)
            self.notifier.notify("READY=1")
            return

        for key, (before, after) in changes.items():
            log.info("reload changes %s: %s -> %s", key, _shown(key, before), _shown(key, after))
        self._pending_config = new
        self._run_stop.set()

    # -- metrics and status ----------------------------------------------------------------

    def _refresh_metrics(self) -> None:
        """Copy the loop's counters into the agent's metrics and hand the text to the server."""
        agent, live = self._agent, self._live
        assert agent is not None and live is not None
        metrics = agent.metrics
        metrics.tail_lines = {}
        metrics.bytes_behind = {}
        for index, stats in enumerate(live.tail_stats()):
            metrics.tail_lines[f"sources[{index}]"] = stats.lines
            metrics.bytes_behind.update(stats.bytes_behind)
        metrics.lines_read = live.parse_stats.records
        metrics.lines_malformed = dict(live.parse_stats.malformed)
        metrics.conn_records_skipped = live.orientation.missing_fields
        metrics.events_late = live.late_connections
        metrics.parse_errors = dict(live.malformed.counts)
        metrics.outbox_size = agent.state.outbox_size()
        metrics.outbox_dropped = agent.state.outbox_dropped
        metrics.rounds_by_status = agent.state.count_rounds_by_status()
        if self._metrics_server is not None:
            self._metrics_server.update(metrics.render())

    def _status_line(self) -> str:
        agent = self._agent
        assert agent is not None
        rounds = agent.metrics.rounds_by_status
        return (f"following {len(agent.config.sources)} sources; rounds sent {rounds.get('sent', 0)}, "
                f"queued {agent.metrics.outbox_size}, dropped {rounds.get('dropped', 0)}; "
                f"epsilon spent {agent.metrics.epsilon_spent:.3g} of {agent.config.privacy.budget_epsilon:g}")


def changed_settings(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Return the dotted keys whose values differ between two configurations, with both values."""
    if is_dataclass(old) and is_dataclass(new) and type(old) is type(new):
        changes: dict[str, tuple[Any, Any]] = {}
        for spec in fields(old):
            changes.update(changed_settings(getattr(old, spec.name), getattr(new, spec.name), prefix + spec.name + "."))
        return changes
    if old == new:
        return {}
    return {prefix.rstrip("."): (old, new)}


def _shown(key: str, value: Any) -> str:
    if key in SECRET_KEYS:
        return "'***'"
    return repr(value)
