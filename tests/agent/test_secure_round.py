"""The site's side of secure mode: configuration, budget split and the checks made before sending."""

from __future__ import annotations

import base64
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import load_agent_config
from agent.errors import ConfigError
from agent.observables import split_observable_key
from agent.secure_round import SecureBudget, SecureRoundAborted, SecureRoundRunner
from agent.summariser import HISTOGRAM_BINS, SCORE_QUANTUM, BoundedRound
from fusion_hub.config import AuthSettings, HubConfig, RoundSettings, SecureSettings, ServerSettings, StorageSettings
from fusion_hub.server import HubServer
from privacy.random import seeded_random
from privacy.signing import generate_signing_key
from stix_mappings.summary import FAMILIES
from tests.agent.test_config import VALID, write


def secure_config(tmp_path: Path, extra: str = "") -> Any:
    return load_agent_config(write(tmp_path, VALID + "  mode: secure\n" + extra))


def round_state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"site_ids": ["site-a", "site-b", "site-c"], "threshold": 3, "vector_length": 62,
                             "families": ["network", "authentication", "process"], "sketch_rows": 2,
                             "sketch_width": 16,
                             # The privacy settings of secure_config: VALID's epsilon and the defaults.
                             "privacy": SecureSettings(epsilon_per_round=0.5).round_privacy()}
    state.update(changes)
    return state


def test_secure_mode_loads_with_defaults(tmp_path: Path) -> None:
    privacy = secure_config(tmp_path).privacy

    assert privacy.mode == "secure"
    assert privacy.secure_min_sites == 3
    assert privacy.secure_stage_timeout_secs == 300.0


@pytest.mark.parametrize(("extra", "key"), [
    ("  mode: hidden\n", "privacy.mode"),
    ("  secure_min_sites: 1\n", "privacy.secure_min_sites"),
    ("  secure_stage_timeout_secs: 0\n", "privacy.secure_stage_timeout_secs"),
])
def test_secure_settings_rejected_with_key(tmp_path: Path, extra: str, key: str) -> None:
    text = VALID + extra if "mode" in extra else VALID + "  mode: secure\n" + extra

    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(write(tmp_path, text))

    assert excinfo.value.key == key


@pytest.mark.parametrize("families", [1, 2, 3])
def test_secure_budget_split_adds_up(families: int) -> None:
    budget = SecureBudget.split(epsilon=1.0, delta=3e-6, histogram_share=0.2, count_share=0.5, score_share=0.3,
                                families=families)

    per_family = budget.histogram_epsilon + budget.reveal_epsilon + budget.score_epsilon
    assert math.isclose(families * per_family + budget.sketch_epsilon, 1.0)
    assert math.isclose(families * 2 * budget.part_delta + budget.sketch_delta, 3e-6)
    # Each family's histogram and score sums get what plain mode gives a family of ``families``.
    assert math.isclose(budget.histogram_epsilon, 0.2 / families)
    assert math.isclose(budget.score_epsilon, 0.3 / families)


def test_round_with_low_threshold_refused(tmp_path: Path) -> None:
    """A site leaves a round whose threshold is below the sites its noise assumes."""
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)

    with pytest.raises(SecureRoundAborted, match="below privacy.secure_min_sites"):
        runner._check_round("2024-06-03T00:00:00.000Z", round_state(threshold=2), ("network",))


def test_round_without_site_refused(tmp_path: Path) -> None:
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)

    with pytest.raises(SecureRoundAborted, match="not invited"):
        runner._check_round("2024-06-03T00:00:00.000Z", round_state(site_ids=["site-b", "site-c", "site-d"]),
                            ("network",))


def test_round_with_wrong_layout_refused(tmp_path: Path) -> None:
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)

    with pytest.raises(SecureRoundAborted, match="vector length"):
        runner._check_round("2024-06-03T00:00:00.000Z", round_state(vector_length=42), ("network",))


def test_round_without_a_configured_family_refused(tmp_path: Path) -> None:
    """A site whose configured family the round does not sum leaves before sending anything."""
    runner = SecureRoundRunner(secure_config(tmp_path), "", rng=seeded_random(0), charge=None)

    with pytest.raises(SecureRoundAborted, match="does not sum family process"):
        runner._check_round("2024-06-03T00:00:00.000Z", round_state(families=["network"], vector_length=42),
                            ("network", "process"))


# Verify keys of the round's sites ------------------------------------------------------------

PEER_KEYS = {site: generate_signing_key() for site in ("site-a", "site-b", "site-c")}


def keyed_state(**changes: Any) -> dict[str, Any]:
    keys = {site: key.public_key_b64 for site, key in PEER_KEYS.items()}
    return round_state(verify_keys=keys, **changes)


def keyed_runner(tmp_path: Path, extra: str = "") -> SecureRoundRunner:
    return SecureRoundRunner(secure_config(tmp_path, extra), "", rng=seeded_random(0), charge=None,
                             signing_key=PEER_KEYS["site-a"])


def test_round_with_listed_keys_accepted(tmp_path: Path) -> None:
    config = keyed_runner(tmp_path)._check_round("2024-06-03T00:00:00.000Z", keyed_state(), ("network",))

    assert config.verify_keys["site-b"] == base64.b64decode(PEER_KEYS["site-b"].public_key_b64)


def test_round_without_verify_keys_refused(tmp_path: Path) -> None:
    with pytest.raises(SecureRoundAborted, match="does not list a verify key for every invited site"):
        keyed_runner(tmp_path)._check_round("2024-06-03T00:00:00.000Z", round_state(), ("network",))


def test_round_listing_other_own_key_refused(tmp_path: Path) -> None:
    """A hub that lists a key of its own for this site could pose as this site to the others."""
    state = keyed_state()
    state["verify_keys"]["site-a"] = generate_signing_key().public_key_b64

    with pytest.raises(SecureRoundAborted, match="not the key in site.signing_key"):
        keyed_runner(tmp_path)._check_round("2024-06-03T00:00:00.000Z", state, ("network",))


def test_round_with_unpinned_peer_key_refused(tmp_path: Path) -> None:
    pinned = tmp_path / "peers.txt"
    pinned.write_text(f"# pinned at enrolment\nsite-b {PEER_KEYS['site-b'].public_key_b64}\n"
                      f"site-c {generate_signing_key().public_key_b64}\n")
    runner = keyed_runner(tmp_path, f"  secure_peer_keys: {pinned}\n")

    with pytest.raises(SecureRoundAborted, match="for site-c that are missing from or differ from"):
        runner._check_round("2024-06-03T00:00:00.000Z", keyed_state(), ("network",))


def test_round_with_pinned_peer_keys_accepted(tmp_path: Path) -> None:
    pinned = tmp_path / "peers.txt"
    pinned.write_text("".join(f"{site} {key.public_key_b64}\n" for site, key in PEER_KEYS.items()))
    runner = keyed_runner(tmp_path, f"  secure_peer_keys: {pinned}\n")

    config = runner._check_round("2024-06-03T00:00:00.000Z", keyed_state(), ("network",))

    assert set(config.verify_keys) == set(PEER_KEYS)


def test_malformed_pinned_key_file_names_line(tmp_path: Path) -> None:
    pinned = tmp_path / "peers.txt"
    pinned.write_text(f"site-b {PEER_KEYS['site-b'].public_key_b64}\nsite-c not-a-key\n")
    runner = keyed_runner(tmp_path, f"  secure_peer_keys: {pinned}\n")

    with pytest.raises(SecureRoundAborted, match=r"peers.txt:2: privacy.secure_peer_keys = 'site-c not-a-key'"):
        runner._check_round("2024-06-03T00:00:00.000Z", keyed_state(), ("network",))


# A secure round of three sites through a real hub, every family in the vector ---------------

ROUND_START = 1_717_372_800  # 2024-06-03T00:00:00Z
EVIL_DOMAIN = "evil-c2.example"
EVIL_JA3 = "e7d705a3286e19ea42f587b344ee6865"
SCANNER = "185.220.101.1"
EVIL_SHA256 = "5f" * 32
# Each family's observables per unit, as agent keys, and the calibrated score of its windows.
FAMILY_KEYS = {"network": ([EVIL_DOMAIN, f"ja3:{EVIL_JA3}"], 0.9), "authentication": ([SCANNER], 0.8),
               "process": ([f"sha256:{EVIL_SHA256}"], 0.7)}
# Enough hosts per site to clear its own partition selection (threshold 40 at these settings).
UNITS = 60


def bounded_round(family: str, site_index: int) -> BoundedRound:
    """Build a round of ``UNITS`` hosts that each have the family's keys.

    Its histogram counts differ by family and site.
    """
    keys, score = FAMILY_KEYS[family]
    units = {f"{family}-host-{n}": list(keys) for n in range(UNITS)}
    histogram = [0] * HISTOGRAM_BINS
    histogram[int(score * HISTOGRAM_BINS)] = UNITS
    histogram[0] = 5 * (site_index + 1) + len(keys)
    return BoundedRound(kept={}, histogram=tuple(histogram), unit_observables=units,
                        unit_counts={key: UNITS for key in keys},
                        score_sums={key: UNITS * round(score * SCORE_QUANTUM) for key in keys})


class RecordingRunner(SecureRoundRunner):
    """A runner that keeps the noised vector it masks, to compare with the hub's unmasked sum."""

    vector: np.ndarray

    def _noised_vector(self, *args: Any, **kwargs: Any) -> np.ndarray:
        self.vector = super()._noised_vector(*args, **kwargs)
        return self.vector


@pytest.mark.slow
def test_secure_round_sums_and_reveals_every_family(tmp_path: Path) -> None:
    """Each family's histogram sum and revealed evidence reach the hub exactly as the sites sent them."""
    settings = SecureSettings(mode="secure", min_sites=3, sketch_rows=2, sketch_width=64, sketch_threshold=30,
                              stage_timeout_seconds=30.0, epsilon_per_round=10, max_observables_per_entity=2)
    hub_config = HubConfig(hub=ServerSettings(host="127.0.0.1", port=0, tick_seconds=0.2),
                           storage=StorageSettings(path=tmp_path / "hub.sqlite3"),
                           # The three sites log in at once from one address, which may use half
                           # the argon2id slots, so no site has to wait out a 429.
                           auth=AuthSettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1,
                                             max_concurrent_verifications=6),
                           rounds=RoundSettings(round_seconds=600, quorum_sites=3, deadline_seconds=3600,
                                                retention_days=100_000),
                           secure=settings)
    server = HubServer(hub_config)
    hub_url = f"http://127.0.0.1:{server.start().rstrip('/').rsplit(':', 1)[1]}/taxii2/"
    sites = ("site-a", "site-b", "site-c")
    # site-c configures network and authentication only, so its process histogram is noised zeros.
    site_families = {"site-a": tuple(FAMILIES), "site-b": tuple(FAMILIES), "site-c": ("network", "authentication")}
    try:
        runners = {}
        for site in sites:
            folder = tmp_path / site
            folder.mkdir()
            key = generate_signing_key()
            (folder / "hub.password").write_text(server.registry.enroll_site(site, key.public_key_b64))
            text = VALID.replace("site-a", site).replace("http://127.0.0.1:8443/taxii2/", hub_url).replace(
                "epsilon_per_round: 0.5", "epsilon_per_round: 10")
            config = load_agent_config(write(folder, text + "  mode: secure\n  budget_epsilon: 100\n"
                                             "  max_observables_per_entity: 2\n  secure_stage_timeout_secs: 30\n"))
            runners[site] = RecordingRunner(config, config.read_hub_password(), rng=seeded_random(len(runners)),
                                            charge=None, signing_key=key)
        bounded = {site: {family: bounded_round(family, index) for family in site_families[site]}
                   for index, site in enumerate(sites)}
        with ThreadPoolExecutor(max_workers=len(sites)) as pool:
            revealed = dict(zip(sites, pool.map(lambda s: runners[s].run(ROUND_START, bounded[s]), sites)))
        assert server.secure is not None
        result = server.secure.results_["2024-06-03T00:00:00.000Z"]
        evidence = server.secure._evidence["2024-06-03T00:00:00.000Z"]
    finally:
        server.stop()

    # The hub's histograms are exactly the sums of the sites' noised histograms, family by family.
    total = sum(runners[site].vector for site in sites)
    assert len(total) == len(FAMILIES) * HISTOGRAM_BINS + 2 * 64
    for index, family in enumerate(FAMILIES):
        part = tuple(int(v) for v in total[index * HISTOGRAM_BINS:(index + 1) * HISTOGRAM_BINS])
        assert result.histograms[family] == part
        assert result.window_counts[family] == sum(part)

    # Every family's evidence, hashes and fingerprints included, is revealed by each site that has it.
    expected = {(site, family, *split_observable_key(key))
                for site in sites for family in site_families[site] for key in FAMILY_KEYS[family][0]}
    assert {(e.site_id, e.family, e.observable_type, e.value) for e in evidence} == expected
    counts = {(e.site_id, e.family, e.observable_type, e.value): e.noised_entity_count for e in evidence}
    for site in sites:
        assert set(revealed[site]) == set(site_families[site])
        for family, values in revealed[site].items():
            for key, count in values.items():
                assert counts[(site, family, *split_observable_key(key))] == max(1, count)
