"""The DP-FedAvg baseline: clipping, noisy aggregation, training and accounting."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.fedavg import (
    aggregate_dp,
    calibrate,
    clip_update,
    gaussian_epsilon,
    init_weights,
    local_update,
    reconstruction_errors,
)


def test_clip_update_scales_long_vector_only() -> None:
    assert np.linalg.norm(clip_update(np.array([3.0, 4.0]), 1.0)) == pytest.approx(1.0)
    assert clip_update(np.array([0.3, 0.4]), 1.0).tolist() == [0.3, 0.4]


def test_aggregate_dp_without_noise_is_mean_of_clipped() -> None:
    weights = init_weights(2, 1, np.random.default_rng(0))
    size = weights.vector.size
    updates = [np.full(size, 10.0), np.zeros(size)]

    new = aggregate_dp(weights, updates, clip_norm=1.0, noise_multiplier=0.0,
                       rng=np.random.default_rng(0))

    assert np.linalg.norm(new.vector - weights.vector) == pytest.approx(0.5)


def test_local_update_lowers_reconstruction_error() -> None:
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(200, 1))
    x = np.hstack([latent, 2 * latent, -latent])
    weights = init_weights(3, 1, rng)
    before = reconstruction_errors(weights, x).mean()

    update = local_update(weights, x, epochs=30, learning_rate=0.05, batch_size=16, rng=rng)
    weights.vector = weights.vector + update

    assert reconstruction_errors(weights, x).mean() < 0.2 * before


def test_calibrate_mid_rank_cdf() -> None:
    assert calibrate(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 2.0, 9.0])).tolist() == [
        0.0, 0.375, 1.0]


def test_gaussian_epsilon_falls_with_noise() -> None:
    low_noise = gaussian_epsilon(noise_multiplier=0.8, sampling_rate=0.8, rounds=20, delta=1e-5)
    high_noise = gaussian_epsilon(noise_multiplier=4.0, sampling_rate=0.8, rounds=20, delta=1e-5)

    assert high_noise < low_noise
    assert 0 < high_noise < 10
