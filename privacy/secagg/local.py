"""Run a whole secure aggregation round in one process, with chosen sites dropping out.

The hub and the sites normally exchange these messages through the hub's ``keys``
collection. Tests, the privacy audit and the benchmark drive the same stage methods
directly, which is what this module does: it is the protocol's reference schedule.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import nacl.signing
import numpy as np

from privacy.random import RandomSource
from privacy.secagg.client import SecAggClient
from privacy.secagg.messages import SecAggConfig
from privacy.secagg.server import SecAggServer
from privacy.signing import SigningKey

__all__ = ["DROPOUT_STAGES", "Dropouts", "generate_signing_keys", "run_local_round", "verify_keys_of"]

# A site can vanish before each of the five messages it sends.
DROPOUT_STAGES = ("advertise_keys", "share_keys", "mask_input", "consistency_check", "unmask")


@dataclass(frozen=True)
class Dropouts:
    """Sites that stop responding before a given stage (and so miss every later stage)."""

    before: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def at(cls, stage: str, sites: set[str] | frozenset[str] | list[str]) -> Dropouts:
        """Return dropouts of ``sites`` before ``stage``."""
        if stage not in DROPOUT_STAGES:
            raise ValueError(f"stage must be one of {', '.join(DROPOUT_STAGES)}; got {stage!r}")
        return cls({stage: frozenset(sites)})

    def active(self, stage: str, sites: set[str]) -> set[str]:
        """Return the sites still responding at ``stage``."""
        gone: set[str] = set()
        for name in DROPOUT_STAGES[: DROPOUT_STAGES.index(stage) + 1]:
            gone |= self.before.get(name, frozenset())
        return sites - gone


def run_local_round(
    config: SecAggConfig,
    inputs: Mapping[str, np.ndarray],
    *,
    rng: RandomSource,
    signing_keys: Mapping[str, SigningKey],
    dropouts: Dropouts | None = None,
) -> np.ndarray:
    """Run every stage for every site and return the unmasked sum modulo 2^32.

    Parameters
    ----------
    config : SecAggConfig
        Round parameters.
    inputs : mapping of str to numpy.ndarray
        Each site's ``uint32`` input vector; every site of ``config.site_ids`` needs one.
    rng : RandomSource
        Source of every site's keys and shares.
    signing_keys : mapping of str to SigningKey
        Each site's enrolled Ed25519 key, matching ``config.verify_keys``.
    dropouts : Dropouts, optional
        Sites that stop responding, by stage.

    Raises
    ------
    RoundAborted
        If too many sites drop out for the threshold.
    """
    dropouts = dropouts or Dropouts()
    clients = {site: SecAggClient(config, site, rng=rng, signing_key=signing_keys[site]) for site in config.site_ids}
    server = SecAggServer(config)
    everyone = set(config.site_ids)

    active = dropouts.active("advertise_keys", everyone)
    relayed = server.collect_advertisements(clients[s].advertise_keys() for s in sorted(active))

    active = dropouts.active("share_keys", active)
    messages = [m for s in sorted(active) for m in clients[s].share_keys(relayed)]
    routed = server.route_shares(messages)

    active = dropouts.active("mask_input", active) & set(routed)
    survivors = server.collect_masked_inputs(
        clients[s].mask_input(inputs[s], routed[s]) for s in sorted(active)
    )

    active = dropouts.active("consistency_check", active)
    signatures = server.collect_consistency_signatures(clients[s].sign_survivors(survivors) for s in sorted(active))

    active = dropouts.active("unmask", active) & {item.site_id for item in signatures}
    server.collect_unmask_responses(clients[s].unmask(signatures) for s in sorted(active))
    return server.unmask()


def generate_signing_keys(site_ids: Iterable[str], rng: RandomSource) -> dict[str, SigningKey]:
    """Return an Ed25519 signing key per site, drawn from ``rng``, for tests and benchmarks.

    Real sites enrol the key in their configured key file instead.
    """
    return {site: SigningKey(nacl.signing.SigningKey(rng.getrandbits(256).to_bytes(32, "little")))
            for site in site_ids}


def verify_keys_of(signing_keys: Mapping[str, SigningKey]) -> dict[str, bytes]:
    """Return each site's raw Ed25519 public key, the form :class:`SecAggConfig` takes."""
    return {site: base64.b64decode(key.public_key_b64) for site, key in signing_keys.items()}
