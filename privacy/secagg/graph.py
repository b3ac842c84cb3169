"""Who shares keys and masks with whom: the complete graph or a sparse SecAgg+ graph.

In the protocol of Bonawitz et al. (CCS 2017) every site masks with, and sends shares to,
every other site, so each site's work grows linearly with the number of sites n. SecAgg+
(Bell, Bonawitz, Gascón, Lepoint and Raykova, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020) replaces the complete graph with a random sparse
one of degree k = O(log n): a site masks and shares only with its k neighbours, and each
secret needs ``threshold`` of the k + 1 shares held in its neighbourhood.

We use the construction of that paper: a Harary graph H(k, n), in which the sites sit on a
ring and each is joined to the k/2 nearest on either side, over a random ordering of the
sites. The ordering is a public function of the round id, so the hub and every site derive
the same graph, and a new round gets a new graph. Each neighbourhood below includes the site
itself, because a site keeps one share of its own secrets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["complete_neighbourhoods", "harary_neighbourhoods"]


def complete_neighbourhoods(site_ids: Sequence[str]) -> dict[str, frozenset[str]]:
    """Return each site's neighbourhood in the complete graph: all sites."""
    everyone = frozenset(site_ids)
    return {site: everyone for site in site_ids}


def harary_neighbourhoods(
    site_ids: Sequence[str], *, degree: int, round_id: str
) -> dict[str, frozenset[str]]:
    """Return each site's neighbourhood in a randomly ordered Harary graph H(degree, n).

    Parameters
    ----------
    site_ids : sequence of str
        Distinct site ids.
    degree : int
        Number of neighbours besides the site itself; an even number >= 2. With
        ``degree >= n - 1`` the graph is complete.
    round_id : str
        Seeds the public ordering of the ring.

    Raises
    ------
    ValueError
        If ``degree`` is odd or below 2.
    """
    if not isinstance(degree, int) or degree < 2 or degree % 2:
        raise ValueError(f"neighbours_per_site must be an even integer >= 2; got {degree!r}")
    n = len(site_ids)
    if degree >= n - 1:
        return complete_neighbourhoods(site_ids)

    # A keyed hash of each id orders the ring; it is public and the same at every site.
    ring = sorted(
        site_ids,
        key=lambda site: hashlib.blake2b(f"{round_id}\x00{site}".encode(), digest_size=16).digest(),
    )
    half = degree // 2
    neighbourhoods = {}
    for position, site in enumerate(ring):
        members = {ring[(position + offset) % n] for offset in range(-half, half + 1)}
        neighbourhoods[site] = frozenset(members)
    return neighbourhoods
