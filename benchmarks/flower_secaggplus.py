"""Run one round of Flower's SecAgg+ in one process, with the same sizes and dropouts as ours.

Flower (``flwr``, measured with 1.42.0) runs SecAgg+ inside its own client and server runtime.
Its client stages are plain functions of ``flwr.client.mod.secure_aggregation.secaggplus_mod``
(``_setup``, ``_share_keys``, ``_collect_masked_vectors``, ``_unmask``) over one
``SecAggPlusState``, so they are called here directly, as Flower's mod calls them. Flower's
server stages are methods of ``SecAggPlusWorkflow`` that talk to a ``Grid``. Their arithmetic
(adding masked vectors, rebuilding masks from ``combine_shares``) is repeated here line for line
from ``flwr/server/workflow/secure_aggregation/secaggplus_workflow.py`` with Flower's own
functions. Message transport, quantisation by the strategy and Flower's simulation engine
are left out on both sides, so the times compare the protocols' computation.

Flower is a benchmark extra (``pip install flwr``), never a dependency of fti.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from privacy.secagg import SecAggConfig


def run_flower(config: SecAggConfig, dropped: set[str]) -> dict[str, float]:
    """Run one Flower SecAgg+ round over the neighbourhoods of ``config`` and return timings.

    Sites in ``dropped`` leave after sharing keys, as in our benchmark. Each site's input is
    a float vector of ``config.vector_length`` entries that Flower quantises itself.
    """
    from flwr.client.mod.secure_aggregation.secaggplus_mod import (
        SecAggPlusState,
        _collect_masked_vectors,
        _setup,
        _share_keys,
        _unmask,
    )
    from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    sites = list(config.site_ids)
    nid = {site: index + 1 for index, site in enumerate(sites)}
    share_num = len(config.neighbourhoods[sites[0]])
    mod_range = 1 << 32
    setup = {Key.SAMPLE_NUMBER: len(sites), Key.SHARE_NUMBER: share_num, Key.THRESHOLD: config.threshold,
             Key.CLIPPING_RANGE: 8.0, Key.TARGET_RANGE: 1 << 22, Key.MOD_RANGE: mod_range, Key.MAX_WEIGHT: 1.0}
    states = {site: SecAggPlusState(nid=nid[site]) for site in sites}
    site_secs: dict[str, float] = dict.fromkeys(sites, 0.0)
    hub_secs = 0.0

    def timed(site: str, call: Any) -> Any:
        start = time.perf_counter()
        result = call()
        site_secs[site] += time.perf_counter() - start
        return result

    public = {site: timed(site, lambda s=site: _setup(states[s], setup)) for site in sites}

    # Stage 1: each site receives the keys of its neighbourhood (itself included).
    forwarded: dict[str, tuple[list[bytes], list[int]]] = {site: ([], []) for site in sites}
    for site in sites:
        keys = {str(nid[peer]): (public[peer][Key.PUBLIC_KEY_1], public[peer][Key.PUBLIC_KEY_2])
                for peer in sorted(config.neighbourhoods[site], key=nid.get)}
        sent = timed(site, lambda s=site, k=keys: _share_keys(states[s], k))
        by_nid = {nid[peer]: peer for peer in sites}
        for destination, ciphertext in zip(sent[Key.DESTINATION_LIST], sent[Key.CIPHERTEXT_LIST], strict=True):
            forwarded[by_nid[destination]][0].append(ciphertext)
            forwarded[by_nid[destination]][1].append(nid[site])

    # Stage 2: surviving sites send masked vectors; the hub adds them up.
    active = [site for site in sites if site not in dropped]
    vector = [np.linspace(-1.0, 1.0, config.vector_length, dtype=np.float32)]
    masked_total = None
    for site in active:
        configs = {Key.CIPHERTEXT_LIST: forwarded[site][0],
                   Key.SOURCE_LIST: [s for s in forwarded[site][1]]}
        result = timed(site, lambda s=site, c=configs: _collect_masked_vectors(
            states[s], c, 1, ndarrays_to_parameters(vector)))
        start = time.perf_counter()
        masked = [bytes_to_ndarray(b) for b in result[Key.MASKED_PARAMETERS]]
        masked_total = masked if masked_total is None else parameters_addition(masked_total, masked)
        hub_secs += time.perf_counter() - start
    start = time.perf_counter()
    masked_total = parameters_mod(masked_total, mod_range)
    hub_secs += time.perf_counter() - start

    # Stage 3: shares of seeds of survivors and of keys of dropped neighbours.
    collected: dict[int, list[bytes]] = {nid[site]: [] for site in sites}
    for site in active:
        neighbours = config.neighbourhoods[site]
        configs = {Key.ACTIVE_NODE_ID_LIST: [nid[p] for p in sorted(neighbours) if p not in dropped],
                   Key.DEAD_NODE_ID_LIST: [nid[p] for p in sorted(neighbours) if p in dropped]}
        response = timed(site, lambda s=site, c=configs: _unmask(states[s], c))
        start = time.perf_counter()
        for owner, share in zip(response[Key.NODE_ID_LIST], response[Key.SHARE_LIST], strict=True):
            collected[owner].append(share)
        hub_secs += time.perf_counter() - start

    # The hub's unmask, as in SecAggPlusWorkflow.unmask_stage.
    start = time.perf_counter()
    by_nid = {nid[site]: site for site in sites}
    total = masked_total
    for owner, shares in collected.items():
        secret = combine_shares(shares)
        owner_site = by_nid[owner]
        if owner_site not in dropped:
            total = parameters_subtraction(total, pseudo_rand_gen(secret, mod_range, get_parameters_shape(total)))
            continue
        for neighbour in sorted(config.neighbourhoods[owner_site] - {owner_site}):
            shared_key = generate_shared_key(bytes_to_private_key(secret),
                                             bytes_to_public_key(public[neighbour][Key.PUBLIC_KEY_1]))
            mask = pseudo_rand_gen(shared_key, mod_range, get_parameters_shape(total))
            if owner > nid[neighbour]:
                total = parameters_addition(total, mask)
            else:
                total = parameters_subtraction(total, mask)
    total = parameters_mod(total, mod_range)
    factor, _ = factor_extract(total)
    hub_secs += time.perf_counter() - start

    per_site = [site_secs[s] for s in active]
    return {
        "site_mean_secs": float(np.mean(per_site)),
        "site_p99_secs": float(np.percentile(per_site, 99)),
        "hub_secs": hub_secs,
        # Each survivor's weight factor is 2^22; their sum survives unmasking only if every mask cancelled.
        "correct": float(int(factor) == len(active) * setup[Key.TARGET_RANGE]),
    }
