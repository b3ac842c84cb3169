"""Measure the CPU cost that Ed25519 signatures add to one secure aggregation round.

A site signs its key advertisement and the survivor set, verifies its neighbours'
advertisements, and verifies consistency signatures until ``threshold`` verify. The hub
verifies every advertisement and every survivor's consistency signature. This script times
exactly those calls, in CPU seconds of this process, on the graph and threshold that
``benchmarks/secagg_bench.py`` uses, with 10 % of sites dropped before the masked input.

Usage::

    python benchmarks/secagg_signing_bench.py --sites 10 100 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

from privacy.secagg import ConsistencySignature, KeyAdvertisement
from privacy.secagg.messages import survivor_set_bytes
from secagg_bench import NEIGHBOURS, SPARSE_FROM_SITES, build_config


def measure(sites: int) -> dict[str, float]:
    """Return one site's and the hub's signature CPU milliseconds for a round of ``sites`` sites."""
    config, keys = build_config(sites, 8)
    site_ids = config.site_ids
    threshold = config.threshold
    survivors = [s for i, s in enumerate(site_ids) if i % 10]
    site = survivors[0]
    neighbours = sorted(config.neighbourhoods[site] - {site})
    # The public values are placeholders: only the signatures over them are timed.
    unsigned = {s: KeyAdvertisement("bench", s, bytes([1]) * 32, bytes([2]) * 32, bytes(32)) for s in site_ids}
    adverts = {s: dataclasses.replace(a, signature=keys[s].sign_bytes(a.signed_bytes())) for s, a in unsigned.items()}
    message = survivor_set_bytes("bench", survivors)
    signatures = [ConsistencySignature("bench", s, keys[s].sign_bytes(message)) for s in survivors]

    verified = 0
    start = time.process_time()
    keys[site].sign_bytes(adverts[site].signed_bytes())
    for peer in neighbours:
        verified += config.verify_signature(peer, adverts[peer].signed_bytes(), adverts[peer].signature)
    keys[site].sign_bytes(survivor_set_bytes("bench", survivors))
    for item in signatures[:threshold]:
        verified += config.verify_signature(item.site_id, message, item.signature)
    site_ms = (time.process_time() - start) * 1e3

    start = time.process_time()
    for peer in site_ids:
        verified += config.verify_signature(peer, adverts[peer].signed_bytes(), adverts[peer].signature)
    hub_message = survivor_set_bytes("bench", survivors)
    for item in signatures:
        verified += config.verify_signature(item.site_id, hub_message, item.signature)
    hub_ms = (time.process_time() - start) * 1e3
    expected = len(neighbours) + threshold + len(site_ids) + len(signatures)
    if verified != expected:
        raise RuntimeError(f"{expected - verified} of {expected} signatures did not verify")
    return {"site_ms": site_ms, "hub_ms": hub_ms, "threshold": threshold, "neighbours": len(neighbours),
            "verified": verified}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="*", default=[10, 100, 1000])
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, CPU time")
    print("| sites | graph | neighbours | threshold | site signatures CPU (ms) | hub signatures CPU (ms) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for sites in args.sites:
        result = measure(sites)
        graph = "complete" if sites < SPARSE_FROM_SITES else f"SecAgg+ k={NEIGHBOURS}"
        print(f"| {sites} | {graph} | {result['neighbours']} | {result['threshold']} | "
              f"{result['site_ms']:.1f} | {result['hub_ms']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
