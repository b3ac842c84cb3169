"""Turn sites' STIX ``opinion`` objects on fused indicators into trust updates.

A site that checked a fused indicator against its own telemetry posts a STIX 2.1 ``opinion``
(section 4.7) to the ``feedback`` collection, with the indicator in ``object_refs``. An
``agree`` or ``strongly-agree`` confirms the observable, a ``disagree`` or
``strongly-disagree`` refutes it, and ``neutral`` changes nothing. Each confirmation adds one to
the alpha, each refutation one to the beta, of every site whose released evidence produced the
indicator, so a site's trust weight alpha / (alpha + beta) tracks its precision.

In secure mode the hub stores no summary, so the secure round coordinator supplies the sites
whose reveals produced each unexpired indicator (``known_contributors`` of ``apply_feedback``).

Labelled evaluation data enters the same way: the evaluation builds one opinion per verdict.
The same verdicts train the ``ensemble`` strategy's meta-model (``fit_ensemble_from_feedback``).

Notes
-----
Every opinion counts once per indicator and contributing site, whoever posted it. A new
version of an opinion (a later ``modified``) is stored as a new object and counts again. A site that
posts opinions on indicators it never saw can still push others' trust down; the hub keeps
the poster's name with each stored opinion, so such a site can be found and revoked.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fusion_hub.fusion import EnsembleFusion, SiteEvidence, evidence_from_summary
from fusion_hub.registry import SiteRegistry
from fusion_hub.storage import HubStorage, ObjectQuery
from stix_mappings.ids import collection_id

log = logging.getLogger(__name__)

# STIX 2.1 opinion-enum (section 10.8), mapped to +1 (confirmed), 0 or -1 (refuted).
OPINION_VERDICTS = {
    "strongly-disagree": -1,
    "disagree": -1,
    "neutral": 0,
    "agree": 1,
    "strongly-agree": 1,
}


@dataclass
class Outcomes:
    """Confirmed and refuted releases of one site, to add to its Beta posterior."""

    confirmed: int = 0
    refuted: int = 0


def verdict_of(opinion: Mapping[str, Any]) -> int:
    """Check one STIX opinion object and return its verdict: +1, 0 or -1.

    Raises
    ------
    ValueError
        If the object is not an opinion, its ``opinion`` is not a STIX opinion-enum value, or
        its ``object_refs`` is not a non-empty list of strings.
    """
    if opinion.get("type") != "opinion":
        raise ValueError(f"feedback takes opinion objects; got type {opinion.get('type')!r}")
    value = opinion.get("opinion")
    if not isinstance(value, str) or value not in OPINION_VERDICTS:
        raise ValueError(f"opinion {opinion.get('id')!r}: 'opinion' must be one of "
                         f"{', '.join(OPINION_VERDICTS)}; got {value!r}")
    # STIX 2.1 requires object_refs: a non-empty list of identifiers.
    refs = opinion.get("object_refs")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"opinion {opinion.get('id')!r}: 'object_refs' must be a non-empty list "
                         f"of STIX identifiers; got {refs!r}")
    return OPINION_VERDICTS[value]


def tally_opinions(
    opinions: Iterable[Mapping[str, Any]], contributors: Mapping[str, Sequence[str]]
) -> dict[str, Outcomes]:
    """Count confirmations and refutations per contributing site.

    Parameters
    ----------
    opinions : iterable of STIX opinion objects
        Each refers to fused indicators in ``object_refs``.
    contributors : mapping of indicator id to site ids
        The sites whose evidence produced each indicator. References to other objects are
        skipped.

    Returns
    -------
    dict of site id to Outcomes
        Only sites with at least one confirmed or refuted release.
    """
    outcomes: dict[str, Outcomes] = {}
    for opinion in opinions:
        verdict = verdict_of(opinion)
        if verdict == 0:
            continue
        for ref in opinion.get("object_refs") or ():
            for site_id in contributors.get(ref, ()):
                site = outcomes.setdefault(site_id, Outcomes())
                if verdict > 0:
                    site.confirmed += 1
                else:
                    site.refuted += 1
    return outcomes


def apply_outcomes(registry: SiteRegistry, outcomes: Mapping[str, Outcomes]) -> dict[str, float]:
    """Add the outcomes to each site's Beta posterior and return the new trust weights.

    Sites that are not enrolled (anymore) are skipped with a warning.
    """
    weights = {}
    active = registry.trust_weights()
    for site_id in sorted(outcomes):
        if site_id not in active:
            log.warning("feedback for site %s skipped: not enrolled or revoked", site_id)
            continue
        counts = outcomes[site_id]
        alpha, beta = registry.record_outcomes(site_id, confirmed=counts.confirmed,
                                               refuted=counts.refuted)
        weights[site_id] = alpha / (alpha + beta)
    return weights


def evidence_of(
    storage: HubStorage, indicator_id: str, *, round_seconds: int, lookback_rounds: int
) -> list[SiteEvidence]:
    """Return the released evidence behind the latest version of an indicator.

    That is every release of the indicator's observable in the lookback window of the round
    that published the version; an unknown indicator has none.
    """
    state = storage.get_indicator_state(indicator_id)
    if state is None:
        return []
    span_us = (lookback_rounds - 1) * round_seconds * 1_000_000
    evidence = []
    for contribution in storage.contributions_between(state.round_start_us - span_us,
                                                      state.round_start_us):
        summary = json.loads(contribution.raw)
        for item in evidence_from_summary(summary, round_start_us=contribution.round_start_us):
            if (item.observable_type, item.value) == (state.observable_type, state.value):
                evidence.append(item)
    return evidence


def contributors_of(
    storage: HubStorage, indicator_id: str, *, round_seconds: int, lookback_rounds: int
) -> tuple[str, ...]:
    """Return the sites whose released evidence produced the latest version of an indicator."""
    evidence = evidence_of(storage, indicator_id, round_seconds=round_seconds,
                           lookback_rounds=lookback_rounds)
    return tuple(sorted({item.site_id for item in evidence}))


def fit_ensemble_from_feedback(
    strategy: EnsembleFusion,
    registry: SiteRegistry,
    storage: HubStorage,
    *,
    round_seconds: int,
    lookback_rounds: int,
    page_size: int = 500,
) -> int:
    """Fit the ensemble on every indicator that stored opinions judged; return the example count.

    An indicator's label is the sign of the sum of its verdicts; a tie is left out.

    Notes
    -----
    It reads every stored opinion, so its cost grows with the feedback collection. The fitted
    model lives in memory only: after a restart the ensemble fuses as noisy-OR until the next
    opinion arrives.
    """
    votes: dict[str, int] = defaultdict(int)
    after = None
    while True:
        page = storage.query_objects(ObjectQuery(collection_id=collection_id("feedback"),
                                                 limit=page_size, types=("opinion",),
                                                 after=after))
        for stored in page.objects:
            opinion = json.loads(stored.raw)
            verdict = verdict_of(opinion)
            for ref in opinion["object_refs"]:
                votes[ref] += verdict
        if not page.more or not page.objects:
            break
        after = (page.objects[-1].date_added_us, page.objects[-1].id)

    examples = []
    for ref, total in sorted(votes.items()):
        evidence = evidence_of(storage, ref, round_seconds=round_seconds,
                               lookback_rounds=lookback_rounds)
        if evidence and total != 0:
            examples.append((evidence, total > 0))
    strategy.fit(examples, registry.trust_weights())
    return len(examples)


def apply_feedback(
    registry: SiteRegistry,
    storage: HubStorage,
    opinions: Sequence[Mapping[str, Any]],
    *,
    round_seconds: int,
    lookback_rounds: int,
    known_contributors: Callable[[str], tuple[str, ...] | None] | None = None,
) -> dict[str, float]:
    """Update trust from stored opinions and return the new weights of the sites touched.

    Parameters
    ----------
    registry : SiteRegistry
        Holds each site's Beta posterior.
    storage : HubStorage
        Source of the indicators' state and of the contributions behind them.
    opinions : sequence of STIX opinion objects
        Opinions not applied before; applying one twice counts it twice.
    round_seconds, lookback_rounds : int
        The hub's round length and fusion lookback, which locate the contributions.
    known_contributors : callable, optional
        Returns the contributing sites of an indicator that stored summaries do not show
        (secure rounds), or None to look them up in the stored summaries.
    """
    refs = {ref for opinion in opinions for ref in opinion.get("object_refs") or ()}
    contributors = {}
    for ref in sorted(refs):
        if not ref.startswith("indicator--"):
            continue
        known = known_contributors(ref) if known_contributors is not None else None
        contributors[ref] = known if known is not None else contributors_of(
            storage, ref, round_seconds=round_seconds, lookback_rounds=lookback_rounds)
    outcomes = tally_opinions(opinions, contributors)
    weights = apply_outcomes(registry, outcomes)
    log.info("feedback applied: %d opinions on %d indicators, trust of %d sites updated",
             len(opinions), len(contributors), len(weights))
    return weights
