"""One calibrated detector per family: baseline selection, training or loading, and scoring.

Every family trains its own :class:`agent.detector.CalibratedDetector` (the configured pyod
model) on the windows of its first ``baseline_rounds`` rounds that contain data. The detector
is stored in the state folder: ``detector.pickle`` for the network family, as before families
existed, and ``detector-<family>.pickle`` for the others.

A family whose baseline is too small or constant cannot be calibrated. For the network family
that stops the run (:class:`agent.errors.BaselineTooSmall`), as it always has. For the others
the windows are left unscored, the rounds release only the family's noised, empty histogram,
the agent logs a warning naming the family, and the next run tries to train again.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from agent.config import DetectorSection
from agent.detector import CalibratedDetector, ScoredWindow
from agent.errors import BaselineTooSmall, DegenerateBaseline
from agent.families import FamilySpec
from agent.families.authentication import AUTHENTICATION
from agent.families.network import NETWORK
from agent.families.process import PROCESS
from agent.features import Window

__all__ = ["FAMILY_SPECS", "FamilyScorer", "baseline_round_count", "select_baseline"]

log = logging.getLogger(__name__)

FAMILY_SPECS: dict[str, FamilySpec] = {spec.name: spec for spec in (NETWORK, AUTHENTICATION, PROCESS)}


def baseline_round_count(windows_per_round: list[int], *, baseline_rounds: int, min_baseline_windows: int) -> int:
    """Return how many of the first rounds that contain windows the detector's baseline takes.

    ``windows_per_round`` lists the window count of each round that contains any, in time order.
    The baseline is the first ``baseline_rounds`` of them, grown by whole rounds until it contains
    ``min_baseline_windows`` windows or no round is left. The result may exceed the number of
    rounds when ``baseline_rounds`` does.
    """
    taken = baseline_rounds
    while sum(windows_per_round[:taken]) < min_baseline_windows and taken < len(windows_per_round):
        taken += 1
    return taken


def select_baseline(windows: list[Window], *, baseline_rounds: int, min_windows: int,
                    round_seconds: int) -> tuple[list[Window], int]:
    """Return the baseline windows (see :func:`baseline_round_count`) and the rounds they span.

    A capture that starts with a lone early connection, or a quiet night, makes the first
    rounds too small, so the baseline grows until it has enough windows or the data ends.
    """
    per_round = Counter(w.start - w.start % round_seconds for w in windows)
    rounds = sorted(per_round)
    taken = baseline_round_count([per_round[r] for r in rounds], baseline_rounds=baseline_rounds,
                                 min_baseline_windows=min_windows)
    end = rounds[min(taken, len(rounds)) - 1] + round_seconds
    return [w for w in windows if w.start < end], min(taken, len(rounds))


class FamilyScorer:
    """Train, store, load and apply each family's detector.

    Parameters
    ----------
    settings : DetectorSection
        Model name, baseline rounds and size, random state.
    state_dir : Path
        Where the detectors are stored.
    round_seconds : int
        Round length, which the baseline counts in.
    site_id : str
        Named in log lines.
    """

    def __init__(self, settings: DetectorSection, *, state_dir: Path, round_seconds: int, site_id: str) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.round_seconds = round_seconds
        self.site_id = site_id

    def detector_path(self, family: str) -> Path:
        return self.state_dir / ("detector.pickle" if family == "network" else f"detector-{family}.pickle")

    def is_trained(self, family: str) -> bool:
        return self.detector_path(family).exists()

    def new_detector(self, family: str) -> CalibratedDetector:
        spec, settings = FAMILY_SPECS[family], self.settings
        return CalibratedDetector(settings.name, min_baseline_windows=settings.min_baseline_windows,
                                  random_state=settings.random_state, feature_names=spec.feature_names,
                                  log_columns=spec.log_columns, feature_schema_version=spec.feature_schema_version)

    def score(self, family: str, windows: list[Window]) -> list[ScoredWindow]:
        """Score a family's windows, training its detector on their baseline when none is stored."""
        if not windows:
            return []
        detector = self._detector(family, windows)
        if detector is None:
            return []
        scores = detector.score(np.array([w.features for w in windows], dtype=float))
        return [ScoredWindow(w.entity, w.start, float(s), w.remotes) for w, s in zip(windows, scores)]

    def _detector(self, family: str, windows: list[Window]) -> CalibratedDetector | None:
        spec, settings, path = FAMILY_SPECS[family], self.settings, self.detector_path(family)
        if path.exists():
            stored = CalibratedDetector.load(path, name=settings.name, feature_schema_version=spec.feature_schema_version)
            if stored is not None:
                return stored

        baseline, taken = select_baseline(windows, baseline_rounds=settings.baseline_rounds,
                                          min_windows=settings.min_baseline_windows, round_seconds=self.round_seconds)
        if taken > settings.baseline_rounds:
            log.warning("site %s: %s family: the first %d rounds contain too few windows for a baseline, so training on "
                        "the first %d rounds (%d windows)", self.site_id, family, settings.baseline_rounds, taken,
                        len(baseline))
        detector = self.new_detector(family)
        try:
            detector.fit(np.array([w.features for w in baseline], dtype=float).reshape(len(baseline), -1))
        except (BaselineTooSmall, DegenerateBaseline) as err:
            # Failing the whole run would also stop the other families, so the summary
            # leaves this family's windows out instead.
            if family == "network":
                raise
            log.warning("site %s: %s family not scored: %s; its windows are left out of this run's summaries",
                        self.site_id, family, err)
            return None
        detector.save(path)
        log.info("site %s: %s detector %s trained on %d baseline windows", self.site_id, family, settings.name,
                 len(baseline))
        return detector
