"""Tests for privacy.secagg.sketch: hashing, distinct-unit counts, heavy buckets, candidates."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.random import seeded_random
from privacy.secagg.sketch import CountMinSketch


def test_buckets_are_one_per_row_and_stable() -> None:
    sketch = CountMinSketch(round_id="r1", rows=3, width=64)

    buckets = sketch.buckets("203.0.113.5")

    assert buckets == sketch.buckets("203.0.113.5")
    assert [b // 64 for b in buckets] == [0, 1, 2]


def test_buckets_change_with_round() -> None:
    values = [f"203.0.113.{i}" for i in range(20)]
    first = CountMinSketch(round_id="r1", rows=1, width=1024)
    second = CountMinSketch(round_id="r2", rows=1, width=1024)

    assert [first.buckets(v) for v in values] != [second.buckets(v) for v in values]


def test_build_counts_each_unit_once_per_bucket() -> None:
    sketch = CountMinSketch(round_id="r", rows=2, width=16)
    units = {"host-1": ["a.example", "a.example"], "host-2": ["a.example", "b.example"]}

    counts = sketch.build(units)

    for index in sketch.buckets("a.example"):
        assert counts[index] == 2
    # host-1 adds 1 to a's two buckets; host-2 adds 1 to each distinct bucket of a and b.
    host_2_buckets = set(sketch.buckets("a.example")) | set(sketch.buckets("b.example"))
    assert counts.sum() == 2 + len(host_2_buckets)
    assert sketch.estimate(counts, "a.example") == 2


def test_sensitivity_bounds_one_unit_change() -> None:
    sketch = CountMinSketch(round_id="r", rows=2, width=16)
    base = {"host-1": ["a.example"], "host-2": ["b.example", "c.example"]}
    with_unit = base | {"host-3": ["a.example", "d.example", "e.example"]}

    difference = sketch.build(with_unit) - sketch.build(base)
    l1, l2 = sketch.sensitivity(3)

    assert np.abs(difference).sum() <= l1
    assert np.sqrt((difference**2).sum()) <= l2
    assert (l1, l2) == (6, pytest.approx(6**0.5))


def test_candidates_need_every_row_heavy() -> None:
    sketch = CountMinSketch(round_id="r", rows=2, width=16)
    units = {f"host-{i}": ["hot.example"] for i in range(10)} | {"host-x": ["cold.example"]}
    summed = sketch.build(units)

    heavy = sketch.heavy_buckets(summed, threshold=5)

    assert sketch.candidates(["hot.example", "cold.example"], heavy) == ["hot.example"]
    assert heavy == frozenset(sketch.buckets("hot.example"))


@pytest.mark.parametrize(("rows", "width"), [(0, 16), (9, 16), (1, 8), (1, 1 << 23)])
def test_invalid_shape_raises(rows: int, width: int) -> None:
    with pytest.raises(ValueError, match="sketch"):
        CountMinSketch(round_id="r", rows=rows, width=width)


def test_heavy_buckets_wrong_length_raises() -> None:
    sketch = CountMinSketch(round_id="r", rows=1, width=16)

    with pytest.raises(ValueError, match="16 entries"):
        sketch.heavy_buckets(np.zeros(8), threshold=1)


def test_reveal_keeps_heavy_values_that_pass_local_selection() -> None:
    """A value must be heavy in the sum and frequent enough at the site itself."""
    sketch = CountMinSketch(round_id="r", rows=2, width=1024)
    summed = sketch.build({f"host-{i}": ["hot.example", "warm.example"] for i in range(50)})
    heavy = sketch.heavy_buckets(summed, threshold=20)
    local = {"hot.example": 40, "warm.example": 1, "cold.example": 40}

    revealed = sketch.reveal(local, heavy, epsilon=1.0, delta=1e-6, max_partitions_per_unit=2,
                             rng=seeded_random(3))

    # warm is heavy in the sum but held by one host here; cold is frequent here but not heavy.
    assert list(revealed) == ["hot.example"]
    assert abs(revealed["hot.example"] - 40) < 20
