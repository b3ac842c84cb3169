"""Local anomaly detector (pyod) with calibration by the site's own empirical CDF.

Raw scores of IsolationForest, ECOD and HBOS live on different scales, and the same model
trained at two sites gives incomparable numbers. Mapping each raw score to the fraction of the
site's baseline windows that scored lower turns every detector's output into a calibrated
score in [0, 1] with the same meaning everywhere: 0.99 means "more anomalous than 99 % of this
site's normal windows".
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version as distribution_version
from pathlib import Path

import numpy as np

from agent.errors import BaselineTooSmall, DegenerateBaseline, DetectorError
from agent.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION

log = logging.getLogger(__name__)

# Counts and byte totals are heavy-tailed: one bulk download would otherwise dominate every
# distance and histogram. log1p keeps zero at zero.
_LOG_SCALED = frozenset({"connection_count", "distinct_remote_hosts", "distinct_remote_ports",
                         "bytes_out", "bytes_in", "mean_duration"})
_LOG_COLUMNS = np.array([name in _LOG_SCALED for name in FEATURE_NAMES])


def transform_features(matrix: np.ndarray, log_columns: np.ndarray | None = None) -> np.ndarray:
    """Apply the fixed per-feature transform shared by training and scoring.

    ``log_columns`` marks the columns to log1p. The default is the network family's.
    """
    columns = _LOG_COLUMNS if log_columns is None else np.asarray(log_columns, dtype=bool)
    transformed = np.array(matrix, dtype=float, copy=True)
    transformed[:, columns] = np.log1p(np.clip(transformed[:, columns], 0.0, None))
    return transformed


@cache
def _pyod_version() -> str:
    # Read from the installed distribution's metadata, not pyod.__version__, because importing
    # pyod loads scikit-learn and numba: with pyod 3.6.7, about 80 MiB resident beyond the rest
    # of the agent. A run pays that only once it trains or scores.
    return distribution_version("pyod")


def _make_model(name: str, random_state: int) -> object:
    # Imported lazily: each pyod model pulls in its own dependencies.
    if name == "iforest":
        from pyod.models.iforest import IForest

        return IForest(n_estimators=200, random_state=random_state)
    if name == "ecod":
        from pyod.models.ecod import ECOD

        return ECOD()
    if name == "hbos":
        from pyod.models.hbos import HBOS

        return HBOS()
    raise DetectorError(f"unknown detector {name!r}; choose iforest, ecod or hbos")


class CalibratedDetector:
    """A pyod detector whose scores are calibrated against the baseline it was trained on.

    Parameters
    ----------
    name : {"iforest", "ecod", "hbos"}, default "iforest"
        The pyod model. IsolationForest needs no distributional assumption; ECOD and HBOS
        are faster and deterministic.
    min_baseline_windows : int, default 32
        Training on fewer windows raises :class:`BaselineTooSmall`.
    random_state : int, default 0
        Seed of IsolationForest's tree sampling; it affects scores, not privacy.
    feature_names : tuple of str, default the network family's FEATURE_NAMES
        Names of the feature columns, used in log messages.
    log_columns : tuple of bool or None, default None
        Columns to log1p before fitting; None means the network family's heavy-tailed ones.
    feature_schema_version : str, default FEATURE_SCHEMA_VERSION
        Version of the feature vector. It is part of :attr:`version`, so a detector stored for
        another vector is never loaded.

    Notes
    -----
    Features that are constant over the baseline carry no information and are dropped before
    fitting (the kept columns are stored in ``feature_mask_``); when every feature is constant
    :class:`DegenerateBaseline` is raised. Tied raw scores get the mid-rank of the empirical
    CDF, so equal inputs always map to one calibrated score, and non-finite raw scores, which
    HBOS can produce on empty histogram bins, count as the most anomalous. No calibrated score
    is ever NaN.
    """

    def __init__(self, name: str = "iforest", *, min_baseline_windows: int = 32, random_state: int = 0,
                 feature_names: tuple[str, ...] = FEATURE_NAMES, log_columns: tuple[bool, ...] | None = None,
                 feature_schema_version: str = FEATURE_SCHEMA_VERSION) -> None:
        self.name = name
        self.min_baseline_windows = min_baseline_windows
        self.random_state = random_state
        self.feature_names = feature_names
        self.log_columns = log_columns
        self.feature_schema_version = feature_schema_version

    @property
    def version(self) -> str:
        return f"pyod-{_pyod_version()}/{self.name}/{self.feature_schema_version}"

    def fit(self, features: np.ndarray) -> "CalibratedDetector":
        """Train on baseline windows and record their scores for calibration."""
        # Too few windows make the empirical CDF too coarse to tell 0.9 from 0.99.
        if features.shape[0] < self.min_baseline_windows:
            raise BaselineTooSmall(features.shape[0], self.min_baseline_windows)
        transformed = transform_features(features, self.log_columns)

        # Drop columns with no spread; a model cannot split on them, ECOD divides by them and
        # HBOS cannot bin them. Spread at rounding-error level counts as none.
        spread = np.ptp(transformed, axis=0)
        self.feature_mask_ = spread > 1e-9 * np.maximum(1.0, np.abs(transformed).max(axis=0))
        if not self.feature_mask_.any():
            raise DegenerateBaseline(features.shape[0], features.shape[1])
        dropped = [n for n, kept in zip(self.feature_names, self.feature_mask_) if not kept]
        if dropped:
            log.info("detector %s: dropping features constant over the baseline: %s", self.name, ", ".join(dropped))

        self.model_ = _make_model(self.name, self.random_state)
        self.model_.fit(transformed[:, self.feature_mask_])
        self.baseline_scores_ = np.sort(self._finite(self.model_.decision_scores_))
        return self

    def raw_scores(self, features: np.ndarray) -> np.ndarray:
        self._check_fitted()
        transformed = transform_features(features, self.log_columns)[:, self.feature_mask_]
        return self._finite(self.model_.decision_function(transformed))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Map raw scores to [0, 1] with the mid-rank empirical CDF of the baseline."""
        self._check_fitted()
        below = np.searchsorted(self.baseline_scores_, raw, side="left")
        at_or_below = np.searchsorted(self.baseline_scores_, raw, side="right")
        return (below + at_or_below) / (2.0 * self.baseline_scores_.size)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Return calibrated scores in [0, 1] for the rows of ``features``."""
        if features.shape[0] == 0:
            return np.zeros(0)
        return self.calibrate(self.raw_scores(features))

    def save(self, path: Path) -> None:
        """Store the fitted detector; only this agent reads the file back."""
        self._check_fitted()
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            pickle.dump({"version": self.version, "detector": self}, handle)
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path, *, name: str,
             feature_schema_version: str = FEATURE_SCHEMA_VERSION) -> "CalibratedDetector | None":
        """Load a stored detector, or return None when it was trained for another setup."""
        with path.open("rb") as handle:
            stored = pickle.load(handle)  # noqa: S301 - the agent's own state file
        detector = stored.get("detector")
        # Detectors stored before families existed lack feature_schema_version: retrain them.
        if not isinstance(detector, cls) or detector.name != name or \
                getattr(detector, "feature_schema_version", None) != feature_schema_version or \
                stored.get("version") != detector.version:
            log.warning("stored detector at %s does not match detector %s; retraining", path, name)
            return None
        return detector

    @staticmethod
    def _finite(scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        return np.nan_to_num(scores, nan=np.inf, posinf=np.inf, neginf=-np.inf)

    def _check_fitted(self) -> None:
        if not hasattr(self, "baseline_scores_"):
            raise DetectorError(f"detector {self.name} is not trained yet; call fit on baseline windows first")


@dataclass(frozen=True)
class ScoredWindow:
    """A window with its calibrated score (kept on the site)."""

    entity: str
    start: int
    score: float
    remotes: dict[str, int]
