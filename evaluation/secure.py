"""Secure variant of the evaluation: a real fti hub in secure mode and the agent's secure rounds.

The variant starts the hub that ``fti hub serve`` runs (``fusion_hub.server.HubServer`` with
``secure.mode: secure`` and a temporary SQLite file) on 127.0.0.1 at a free port, and enrols
the evaluation's sites. In each round, every participating site runs the agent's own
``agent.secure_round.SecureRoundRunner`` in a thread of its own, because each stage waits for
the other sites. The hub's ``SecureRoundCoordinator`` unmasks only the sum of the sites'
noised score histograms and count-min sketches, and fuses the values the sites reveal in the
sketch's heavy buckets. The evaluation
reads the published indicators back from the ``fused-indicators`` collection over TAXII.

Sites absent from a round are invited and drop out at the first stage, so such a round waits
``stage_timeout_secs`` for them at the hub. A round that the hub or a site aborts publishes
nothing and is counted. The poisoning site cannot forge a reveal, because the hub accepts
only values in heavy buckets. It therefore feeds the protocol invented windows instead. Each
window is a new unit that contacts one of the benign decoys at score 1, and its true windows
are hidden.

After each round the sites post STIX opinions on the new indicators to the hub's ``feedback``
collection over TAXII (``post_opinions``). The hub's coordinator remembers which sites revealed
the values behind each unexpired indicator, so the opinions move trust as in plain mode.

Notes
-----
Runs repeat for a seed as far as the protocol allows. Each site's keys, shares and noise come
from its own seeded generator, but a site that misses a stage timeout under load changes the
round's survivors.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import requests
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import as_pages

from agent.config import AgentConfig, HubSection, PrivacySection, SiteSection
from agent.consumer import observables_in_pattern
from agent.detector import ScoredWindow
from agent.errors import DeliveryError
from agent.secure_round import SecureBudget, SecureRoundAborted, SecureRoundRunner, hub_secure_privacy
from agent.summariser import bound_round
from agent.taxii_client import open_collection
from fusion_hub.config import (
    AuthSettings,
    FusionSettings,
    HubConfig,
    RoundSettings,
    SecureSettings,
    ServerSettings,
    StorageSettings,
)
from fusion_hub.server import HubServer
from privacy.random import RandomSource
from privacy.secagg.noise import calibrate_distributed_gaussian
from privacy.secagg.sketch import CountMinSketch
from privacy.signing import SigningKey, generate_signing_key
from stix_mappings.timestamps import format_timestamp

log = logging.getLogger(__name__)

# Two rows of 1,024 buckets: a round of these scenarios has a few hundred distinct
# observables, so two values rarely share a bucket in both rows, and the noise sampling of
# 2,048 words per site stays fast.
SKETCH_ROWS = 2
SKETCH_WIDTH = 1024
# A bucket is heavy from three standard deviations of the summed sketch noise, so an empty
# bucket rarely passes and the sites are rarely asked to reveal for nothing.
HEAVY_STANDARD_DEVIATIONS = 3.0
# Registry passwords protect nothing here, so the minimal argon2 cost keeps enrolment fast.
_EVAL_AUTH = AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1,
                          credential_cache_seconds=600.0)
_READER = "eval-reader"
# The hub's identity name. The sites need it too, because they follow only its round objects.
_HUB_NAME = "fti-eval-hub"


@dataclass(frozen=True)
class SecureRoundReport:
    """Indicators one secure round published, and the cost of each site that took part."""

    published: dict[str, float]
    # Observable value -> id of the indicator version the round published for it.
    indicator_ids: dict[str, str]
    aborted_sites: tuple[str, ...]
    bytes_by_site: dict[str, int]
    seconds_by_site: dict[str, float]


@dataclass
class _RequestBytes:
    """Request bytes the hub received, per site: request line, headers and body."""

    by_user: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> dict[str, int]:
        """Return the totals so far and start counting from zero."""
        with self.lock:
            totals, self.by_user = self.by_user, {}
        return totals


class SecureFederation:
    """A secure-mode hub on 127.0.0.1 and the sites' secure rounds against it; a context manager.

    Parameters
    ----------
    site_ids : iterable of str
        Every site of the scenario; all are enrolled and invited to every round.
    privacy : PrivacySection
        The sites' privacy settings; ``mode``, ``secure_min_sites`` and the stage timeout are
        set here.
    fusion : FusionSettings
        The hub's strategy, lookback and publication thresholds.
    round_seconds : int
        Round length; round starts must be multiples of it.
    min_sites : int
        Minimum number of sites in any round. Both the hub's ``secure.min_sites`` and the
        sites' noise assume it. A larger value protects each site better but aborts more
        rounds.
    stage_timeout_secs : float, default 3.0
        How long the hub waits for the missing sites of a stage. Every round with an absent
        site lasts at least this long. A site slower than this under load is dropped from
        the round.
    """

    def __init__(self, site_ids: Iterable[str], *, privacy: PrivacySection, fusion: FusionSettings,
                 round_seconds: int, min_sites: int, stage_timeout_secs: float = 3.0) -> None:
        self.site_ids = tuple(sorted(site_ids))
        # A site waits for the hub's timeout of each stage, with room for a slow stage.
        self.privacy = replace(privacy, mode="secure", secure_min_sites=min_sites,
                               secure_stage_timeout_secs=10 * stage_timeout_secs + 30.0)
        self.fusion = fusion
        self.round_seconds = round_seconds
        self.min_sites = min_sites
        self.stage_timeout_secs = stage_timeout_secs
        self._work: tempfile.TemporaryDirectory[str] | None = None
        self._hub: HubServer | None = None
        self._passwords: dict[str, str] = {}
        self._signing_keys: dict[str, SigningKey] = {}
        self._discovery_url = ""
        self._bytes = _RequestBytes()

    def __enter__(self) -> SecureFederation:
        self._work = tempfile.TemporaryDirectory(prefix="fti-eval-secure-")
        work = Path(self._work.name)
        # The scenarios' sites read Zeek conn logs only, so rounds sum the network family alone
        # and keep its whole budget, as the plain path does.
        secure = SecureSettings(mode="secure", **hub_secure_privacy(self.privacy), families=("network",),
                                sketch_rows=SKETCH_ROWS,
                                sketch_width=SKETCH_WIDTH, sketch_threshold=heavy_threshold(self.privacy),
                                stage_timeout_seconds=self.stage_timeout_secs)
        config = HubConfig(
            # A fast ticker closes a stage soon after its timeout. The rate limit is off
            # because every site polls the round object many times per round.
            hub=ServerSettings(name=_HUB_NAME, host="127.0.0.1", port=0, tick_seconds=0.1,
                               rate_limit_per_minute=0, threads=max(4, len(self.site_ids))),
            storage=StorageSettings(path=work / "hub.sqlite3"),
            # Every site thread logs in from 127.0.0.1 at once, and an address gets half of
            # the concurrent password checks, so they must cover all sites and the reader.
            auth=replace(_EVAL_AUTH, max_concurrent_verifications=2 * (len(self.site_ids) + 1)),
            rounds=RoundSettings(round_seconds=self.round_seconds, quorum_sites=len(self.site_ids),
                                 retention_days=100_000),
            fusion=self.fusion,
            secure=secure,
        )
        hub = HubServer(config)
        hub.app.wsgi_app = _counting_wsgi(hub.app.wsgi_app, self._bytes)  # type: ignore[method-assign]
        self._hub = hub
        try:
            base_url = hub.start()
            for site_id in self.site_ids:
                self._signing_keys[site_id] = generate_signing_key()
                self._passwords[site_id] = hub.registry.enroll_site(site_id,
                                                                    self._signing_keys[site_id].public_key_b64)
            self._passwords[_READER] = hub.registry.add_consumer(_READER, read=["fused-indicators"])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._discovery_url = base_url.rstrip("/") + "/taxii2/"
        log.info("secure evaluation hub at %s: %d sites, min_sites %d, heavy from %d",
                 base_url, len(self.site_ids), self.min_sites, secure.sketch_threshold)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._hub is not None:
            self._hub.stop()
            self._hub = None
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def run_round(
        self, round_start: int, windows_by_site: Mapping[str, list[ScoredWindow]], *,
        rngs: Mapping[str, RandomSource], charge: Callable[[str, float, float], None],
    ) -> SecureRoundReport:
        """Run one secure round with the sites in ``windows_by_site``; return what it published.

        ``charge`` is called with the site and the round's (epsilon, delta) when a site is
        about to release.
        """
        self._bytes.take()
        present = sorted(windows_by_site)
        seconds: dict[str, float] = {}
        aborted: list[str] = []

        def take_part(site_id: str) -> None:
            began = time.thread_time()
            bounded = bound_round(windows_by_site[site_id], privacy=self.privacy, rng=rngs[site_id])
            runner = SecureRoundRunner(self._agent_config(site_id), self._passwords[site_id], rng=rngs[site_id],
                                       charge=lambda e, d: charge(site_id, e, d),
                                       signing_key=self._signing_keys[site_id])
            try:
                runner.run(round_start, bounded)
            except (SecureRoundAborted, DeliveryError) as err:
                log.warning("site %s: secure round %d not summed: %s", site_id, round_start, err)
                aborted.append(site_id)
            seconds[site_id] = time.thread_time() - began

        # One thread per site, because each stage waits for the other sites' messages.
        with ThreadPoolExecutor(max_workers=len(present), thread_name_prefix="fti-eval-site") as pool:
            for future in [pool.submit(take_part, site_id) for site_id in present]:
                future.result()
        sent = self._bytes.take()
        published, indicator_ids = self._published(round_start)
        return SecureRoundReport(published=published, indicator_ids=indicator_ids,
                                 aborted_sites=tuple(sorted(aborted)),
                                 bytes_by_site={s: sent.get(s, 0) for s in present}, seconds_by_site=seconds)

    def post_opinions(self, site_id: str, opinions: list[dict[str, Any]]) -> int:
        """Post a site's opinions to ``feedback`` over TAXII; return the request bytes the hub received.

        Raises
        ------
        DeliveryError
            If the request fails or the hub rejects an opinion.
        """
        if not opinions:
            return 0
        self._bytes.take()
        collection = open_collection(self._hub_section(site_id), self._passwords[site_id], "feedback")
        try:
            status = collection.add_objects({"objects": opinions})
        except (requests.RequestException, TAXIIServiceException, ValueError) as err:
            raise DeliveryError(collection.url, f"{type(err).__name__}: {err}", transient=True) from err
        if status.failure_count:
            raise DeliveryError(collection.url, f"the hub rejected {status.failure_count} opinions of "
                                f"site {site_id}: {status.failures}", transient=False)
        return self._bytes.take().get(site_id, 0)

    def trust_weights(self) -> dict[str, float]:
        """Return the hub's trust weight of every enrolled site."""
        if self._hub is None:
            raise RuntimeError("the secure evaluation hub is not running")
        return self._hub.registry.trust_weights()

    def _agent_config(self, site_id: str) -> AgentConfig:
        work = Path(self._work.name) if self._work is not None else Path(".")
        return AgentConfig(site=SiteSection(id=site_id, signing_key=work / f"{site_id}.key"),
                           hub=self._hub_section(site_id), sources=(), state_dir=work / site_id,
                           privacy=self.privacy)

    def _hub_section(self, user: str) -> HubSection:
        return HubSection(url=self._discovery_url, username=user, password=self._passwords[user], timeout_secs=30.0,
                          name=_HUB_NAME)

    def _published(self, round_start: int) -> tuple[dict[str, float], dict[str, str]]:
        """Read the indicators the round published from ``fused-indicators``, as a consumer.

        Returns each observable value's fused score and indicator id.
        """
        round_text = format_timestamp(datetime.fromtimestamp(round_start, tz=timezone.utc))
        collection = open_collection(self._hub_section(_READER), self._passwords[_READER], "fused-indicators")
        published: dict[str, float] = {}
        indicator_ids: dict[str, str] = {}
        try:
            pages = list(as_pages(collection.get_objects, per_request=500, type="indicator"))
        except (requests.RequestException, TAXIIServiceException, ValueError) as err:
            raise DeliveryError(collection.url, f"{type(err).__name__}: {err}", transient=True) from err
        for envelope in pages:
            for indicator in envelope.get("objects", []):
                details = next((e for e in (indicator.get("extensions") or {}).values()
                                if isinstance(e, Mapping) and "fused_score" in e), {})
                if indicator.get("revoked") or details.get("round_start") != round_text:
                    continue
                for value in observables_in_pattern(indicator["pattern"]):
                    published[value] = float(details["fused_score"])
                    indicator_ids[value] = indicator["id"]
        return published, indicator_ids


def heavy_threshold(privacy: PrivacySection) -> int:
    """Return the summed count from which a sketch bucket is heavy, at the sites' own noise."""
    budget = SecureBudget.split(epsilon=privacy.epsilon_per_round, delta=privacy.delta_per_round,
                                histogram_share=privacy.histogram_share, count_share=privacy.count_share,
                                score_share=privacy.score_share)
    shape = CountMinSketch("shape", rows=SKETCH_ROWS, width=SKETCH_WIDTH)
    l1, l2 = shape.sensitivity(privacy.max_observables_per_entity)
    noise = calibrate_distributed_gaussian(epsilon=budget.sketch_epsilon, delta=budget.sketch_delta,
                                           min_sites=privacy.secure_min_sites, l1_sensitivity=l1,
                                           l2_sensitivity=l2, dimension=shape.length)
    summed_sd = math.sqrt(noise.sigma_squared_per_site * privacy.secure_min_sites)
    return max(1, math.ceil(HEAVY_STANDARD_DEVIATIONS * summed_sd))


def poison_windows(pool: list[str], *, count: int, windows_per_decoy: int, round_start: int,
                   rng: np.random.Generator) -> list[ScoredWindow]:
    """Return a poisoning site's invented windows: each contacts one benign decoy at score 1."""
    if not pool:
        return []
    chosen = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return [ScoredWindow(f"decoy-unit-{i}-{k}", round_start, 1.0, {pool[i]: 1})
            for i in sorted(chosen) for k in range(windows_per_decoy)]


def _counting_wsgi(app: Callable[..., Any], counter: _RequestBytes) -> Callable[..., Any]:
    """Wrap a WSGI app so that it adds each request's size to its Basic-auth user's total."""
    def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        user = ""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth.startswith("Basic "):
            try:
                user = base64.b64decode(auth[6:]).decode("utf-8").split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError):
                user = ""
        target = environ.get("PATH_INFO", "") + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        size = len(f"{environ.get('REQUEST_METHOD', '')} {target} {environ.get('SERVER_PROTOCOL', '')}\r\n")
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                size += len(key) - 5 + len(str(value)) + 4
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                size += len(key) + len(environ[key]) + 4
        size += int(environ.get("CONTENT_LENGTH") or 0) + 2
        with counter.lock:
            counter.by_user[user] = counter.by_user.get(user, 0) + size
        return app(environ, start_response)

    return counted
