"""FedAvg baseline: one shared autoencoder trained across sites with DP-FedAvg.

The model is a one-hidden-layer autoencoder in NumPy (tanh encoder, linear decoder, squared
reconstruction error) over the agent's window features after the agent's own transform
(``agent.detector.transform_features``) and a per-site standardisation from the site's baseline.
Each round, every participating site runs a few epochs of mini-batch gradient descent on its
baseline windows from the current global weights and sends its update. The server clips each
update to L2 norm ``clip_norm``, adds Gaussian noise of standard deviation
``noise_multiplier * clip_norm`` to the sum and divides by the number of updates (DP-FedAvg,
McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language
Models", ICLR 2018). The unit of privacy is the whole site.

A window's score is its reconstruction error, calibrated by the empirical CDF of the site's
baseline errors under the same model, so 0.99 means what it means for the agent's detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from agent.detector import transform_features


@dataclass
class AutoencoderWeights:
    """Weights of the shared autoencoder, flattened as one vector for aggregation."""

    vector: np.ndarray
    n_features: int
    n_hidden: int

    def unpack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        d, h = self.n_features, self.n_hidden
        v = self.vector
        w1 = v[:d * h].reshape(d, h)
        b1 = v[d * h:d * h + h]
        w2 = v[d * h + h:d * h + h + h * d].reshape(h, d)
        b2 = v[d * h + h + h * d:]
        return w1, b1, w2, b2


def init_weights(n_features: int, n_hidden: int, rng: np.random.Generator) -> AutoencoderWeights:
    """Return Glorot-uniform weights and zero biases."""
    limit = np.sqrt(6.0 / (n_features + n_hidden))
    w1 = rng.uniform(-limit, limit, size=(n_features, n_hidden))
    w2 = rng.uniform(-limit, limit, size=(n_hidden, n_features))
    vector = np.concatenate([w1.ravel(), np.zeros(n_hidden), w2.ravel(), np.zeros(n_features)])
    return AutoencoderWeights(vector, n_features, n_hidden)


def reconstruction_errors(weights: AutoencoderWeights, x: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error of each row of ``x``."""
    w1, b1, w2, b2 = weights.unpack()
    hidden = np.tanh(x @ w1 + b1)
    return np.mean((hidden @ w2 + b2 - x) ** 2, axis=1)


def local_update(
    weights: AutoencoderWeights, x: np.ndarray, *, epochs: int, learning_rate: float,
    batch_size: int, rng: np.random.Generator,
) -> np.ndarray:
    """Train from ``weights`` on ``x`` and return the change of the weight vector."""
    w1, b1, w2, b2 = (a.copy() for a in weights.unpack())
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for first in range(0, len(x), batch_size):
            batch = x[order[first:first + batch_size]]
            hidden = np.tanh(batch @ w1 + b1)
            error = (hidden @ w2 + b2 - batch) * (2.0 / batch.size)
            grad_w2, grad_b2 = hidden.T @ error, error.sum(axis=0)
            back = (error @ w2.T) * (1.0 - hidden ** 2)
            grad_w1, grad_b1 = batch.T @ back, back.sum(axis=0)
            w1 -= learning_rate * grad_w1
            b1 -= learning_rate * grad_b1
            w2 -= learning_rate * grad_w2
            b2 -= learning_rate * grad_b2
    trained = np.concatenate([w1.ravel(), b1, w2.ravel(), b2])
    return trained - weights.vector


def clip_update(update: np.ndarray, clip_norm: float) -> np.ndarray:
    """Scale ``update`` down to L2 norm ``clip_norm`` when it is longer."""
    norm = float(np.linalg.norm(update))
    return update if norm <= clip_norm else update * (clip_norm / norm)


def aggregate_dp(
    weights: AutoencoderWeights, updates: list[np.ndarray], *, clip_norm: float,
    noise_multiplier: float, rng: np.random.Generator,
) -> AutoencoderWeights:
    """Apply the mean of the clipped updates plus Gaussian noise on their sum."""
    if not updates:
        return weights
    total = np.sum([clip_update(u, clip_norm) for u in updates], axis=0)
    total = total + rng.normal(0.0, noise_multiplier * clip_norm, size=total.shape)
    return AutoencoderWeights(weights.vector + total / len(updates), weights.n_features,
                              weights.n_hidden)


class SiteScaler:
    """Per-site standardisation of transformed features, fitted on the site's baseline."""

    def __init__(self, baseline: np.ndarray) -> None:
        transformed = transform_features(baseline)
        self.mean_ = transformed.mean(axis=0)
        self.scale_ = np.where(transformed.std(axis=0) > 1e-9, transformed.std(axis=0), 1.0)

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (transform_features(features) - self.mean_) / self.scale_


def calibrate(baseline_errors: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of the baseline errors, as the agent's detector calibrates."""
    ordered = np.sort(baseline_errors)
    below = np.searchsorted(ordered, errors, side="left")
    at_or_below = np.searchsorted(ordered, errors, side="right")
    return (below + at_or_below) / (2.0 * max(ordered.size, 1))


def gaussian_epsilon(*, noise_multiplier: float, sampling_rate: float, rounds: int,
                     delta: float) -> float:
    """Return the epsilon of ``rounds`` Poisson-sampled Gaussian rounds by RDP accounting."""
    from dp_accounting import dp_event, rdp

    # dp-accounting logs a warning through absl for every RDP order whose series does not
    # converge; it leaves those orders out, which only loosens the bound.
    absl_log = logging.getLogger("absl")
    previous = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        accountant = rdp.RdpAccountant()
        event = dp_event.PoissonSampledDpEvent(sampling_rate,
                                               dp_event.GaussianDpEvent(noise_multiplier))
        accountant.compose(event, rounds)
        return float(accountant.get_epsilon(delta))
    finally:
        absl_log.setLevel(previous)
