"""Measure secure aggregation cost per round: each site's stages and the hub's stages.

Every site and the hub run in this one process, one after another, so the per-site time is
the mean over sites of its own stage times and the hub time is the sum of the hub's stage
times. Sites that drop out leave after sharing keys, the worst case for the hub because
their pairwise masks must be rebuilt from shares.

Usage::

    python benchmarks/secagg_bench.py                # the full grid, several minutes
    python benchmarks/secagg_bench.py --sites 100 --length 1024
    python benchmarks/secagg_bench.py --flower       # also Flower's SecAgg+ (pip install flwr)

Each site's share of distributed noise is timed on its own, in CPU seconds: the vectorised
exact discrete Gaussian sampler (``privacy.fast_sampling``) at s² = 65 for the whole vector.
That is close to the per-site variance of the demo's sketch, which its settings put at
about 70.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Iterable

import numpy as np

from privacy.fast_sampling import sample_discrete_gaussian_vector
from privacy.random import system_random
from privacy.secagg import (
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    decode_signed,
    encode_signed,
    generate_signing_keys,
    verify_keys_of,
)
from privacy.signing import SigningKey

# Degree and threshold of the SecAgg+ graph used from 300 sites on. Each neighbourhood has
# 41 sites, the threshold 28 keeps a strict majority and tolerates 13 dropouts per
# neighbourhood; with 10 % of sites dropping independently, more than 13 of 40 neighbours
# drop with probability below 1e-4.
SPARSE_FROM_SITES = 300
NEIGHBOURS = 40
SPARSE_THRESHOLD = 28


def build_config(sites: int, length: int) -> tuple[SecAggConfig, dict[str, SigningKey]]:
    """Return the complete graph below SPARSE_FROM_SITES sites and SecAgg+ above, with the sites' keys."""
    site_ids = tuple(f"site-{i:04d}" for i in range(sites))
    keys = generate_signing_keys(site_ids, system_random())
    if sites < SPARSE_FROM_SITES:
        config = SecAggConfig(round_id="bench", site_ids=site_ids, threshold=sites * 2 // 3 + 1,
                              vector_length=length, verify_keys=verify_keys_of(keys))
    else:
        config = SecAggConfig(round_id="bench", site_ids=site_ids, threshold=SPARSE_THRESHOLD,
                              vector_length=length, neighbours_per_site=NEIGHBOURS, verify_keys=verify_keys_of(keys))
    return config, keys


def timed(costs: dict[str, float], site: str, call):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = call()
    costs[site] = costs.get(site, 0.0) + time.perf_counter() - start
    return result


def run(sites: int, length: int, dropout_fraction: float) -> dict[str, float]:
    """Run one round and return mean and max site seconds, hub seconds, and a check flag."""
    config, keys = build_config(sites, length)
    rng = system_random()
    clients = {s: SecAggClient(config, s, rng=rng, signing_key=keys[s]) for s in config.site_ids}
    server = SecAggServer(config)
    site_costs: dict[str, float] = {}
    hub_costs: dict[str, float] = {}
    dropped = set(config.site_ids[:: max(1, round(1 / dropout_fraction))]) if dropout_fraction else set()
    inputs = {s: encode_signed(np.full(length, i % 7)) for i, s in enumerate(config.site_ids)}

    adverts = [timed(site_costs, s, c.advertise_keys) for s, c in clients.items()]
    relayed = timed(hub_costs, "hub", lambda: server.collect_advertisements(adverts))
    messages = [m for s, c in clients.items() for m in timed(site_costs, s, lambda c=c: c.share_keys(relayed))]
    routed = timed(hub_costs, "hub", lambda: server.route_shares(messages))
    active = [s for s in config.site_ids if s not in dropped]

    def masked_inputs() -> Iterable:  # type: ignore[type-arg]
        for s in active:
            yield timed(site_costs, s, lambda s=s: clients[s].mask_input(inputs[s], routed[s]))

    # Sites' masking time is recorded inside the hub's call, so subtract it afterwards.
    before = sum(site_costs.values())
    start = time.perf_counter()
    survivors = server.collect_masked_inputs(masked_inputs())
    hub_costs["hub"] += time.perf_counter() - start - (sum(site_costs.values()) - before)

    signed = [timed(site_costs, s, lambda s=s: clients[s].sign_survivors(survivors)) for s in active]
    signatures = timed(hub_costs, "hub", lambda: server.collect_consistency_signatures(signed))
    responses = [timed(site_costs, s, lambda s=s: clients[s].unmask(signatures)) for s in active]
    timed(hub_costs, "hub", lambda: server.collect_unmask_responses(responses))
    total = timed(hub_costs, "hub", server.unmask)

    expected = sum(i % 7 for i, s in enumerate(config.site_ids) if s not in dropped)
    per_site = [site_costs[s] for s in active]
    return {
        "site_mean_secs": statistics.fmean(per_site),
        "site_p99_secs": float(np.percentile(per_site, 99)),
        "site_max_secs": max(per_site),
        "hub_secs": hub_costs["hub"],
        "correct": float(bool(np.all(decode_signed(total) == expected))),
        "dropped": float(len(dropped)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--length", type=int, nargs="*", default=[1024, 65536])
    parser.add_argument("--dropout", type=float, default=0.1, help="fraction of sites that drop, 0 to 0.5")
    parser.add_argument("--flower", action="store_true", help="run Flower's SecAgg+ at the same sizes")
    args = parser.parse_args()
    if args.flower:
        from flower_secaggplus import run_flower

    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"dropout {args.dropout:.0%}")
    header = ("| sites | entries | graph | site mean (ms) | site p99 (ms) | site max (ms) | noise CPU (ms) | hub (ms) "
              "| sum correct |")
    if args.flower:
        header += " Flower site mean (ms) | Flower hub (ms) | Flower sum correct | site ratio | hub ratio |"
    print(header)
    print("|" + " ---: |" * (header.count("|") - 1))
    for sites in args.sites:
        for length in args.length:
            result = run(sites, length, args.dropout)
            graph = "complete" if sites < SPARSE_FROM_SITES else f"SecAgg+ k={NEIGHBOURS}"
            # CPU time of this process, so that other load on the machine does not count.
            start = time.process_time()
            sample_discrete_gaussian_vector(65, length, system_random())
            noise_ms = (time.process_time() - start) * 1e3
            row = (f"| {sites} | {length} | {graph} | {result['site_mean_secs'] * 1e3:.1f} | "
                   f"{result['site_p99_secs'] * 1e3:.1f} | {result['site_max_secs'] * 1e3:.1f} | {noise_ms:.0f} | "
                   f"{result['hub_secs'] * 1e3:.0f} | {'yes' if result['correct'] else 'NO'} |")
            if args.flower:
                config, _ = build_config(sites, length)
                dropped = set(config.site_ids[:: max(1, round(1 / args.dropout))]) if args.dropout else set()
                flower = run_flower(config, dropped)
                row += (f" {flower['site_mean_secs'] * 1e3:.1f} | {flower['hub_secs'] * 1e3:.0f} | "
                        f"{'yes' if flower['correct'] else 'NO'} | "
                        f"{flower['site_mean_secs'] / result['site_mean_secs']:.1f}x | "
                        f"{flower['hub_secs'] / result['hub_secs']:.1f}x |")
            print(row, flush=True)


if __name__ == "__main__":
    main()
