"""Observers: the range each picks, and the qparams it hands on."""
from __future__ import annotations

import numpy as np
import pytest

from qcompiler.numerics.observers import make_observer


def _observed(kind, chunks):
    o = make_observer(kind, "uint8")
    for c in chunks:
        o.observe(c)
    return o


def test_minmax_is_exact_range(rng):
    chunks = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    o = _observed("minmax", chunks)
    allv = np.concatenate(chunks)
    assert o.compute_range() == (float(allv.min()), float(allv.max()))


def test_percentile_clips_a_lone_outlier(rng):
    x = rng.uniform(0, 1, 200_000).astype(np.float32)
    x[7] = 1000.0
    lo, hi = _observed("percentile", [x]).compute_range()
    assert lo == 0.0 or lo >= float(x.min())
    assert 0.99 < hi < 1.01


def test_mse_range_is_no_wider_than_minmax_and_lowers_error(rng):
    x = rng.laplace(0, 1, 100_000).astype(np.float32)
    mse, mm = _observed("mse", [x]), _observed("minmax", [x])
    lo, hi = mse.compute_range()
    assert mm.lo <= lo and hi <= mm.hi

    def err(o):
        qp = o.compute_qparams()
        q = np.clip(np.rint(x / qp.scale) + qp.zero_point, 0, 255)
        return np.mean((qp.scale * (q - qp.zero_point) - x) ** 2)

    assert err(mse) < err(mm)


def test_unknown_observer_and_empty_observer():
    with pytest.raises(ValueError, match="observer must be one of minmax, percentile, mse, entropy"):
        make_observer("kl", "uint8")
    with pytest.raises(ValueError, match="saw no data"):
        make_observer("minmax", "uint8").compute_qparams()


def test_entropy_clips_an_outlier_that_minmax_keeps(rng):
    x = np.maximum(rng.standard_normal(100_000), 0).astype(np.float32)
    x[3] = 100.0
    lo, hi = _observed("entropy", [x]).compute_range()
    assert lo == 0.0  # a ReLU output keeps its exact lower bound
    assert hi < 20.0 < _observed("minmax", [x]).compute_range()[1]


def test_entropy_keeps_both_sides_of_a_signed_tensor_within_the_observed_range(rng):
    x = rng.standard_normal(100_000).astype(np.float32)
    x[0] = -60.0
    o = _observed("entropy", [x])
    lo, hi = o.compute_range()
    assert o.lo < lo < -1.0 and 1.0 < hi <= o.hi


def test_entropy_spends_levels_where_the_mass_is(rng):
    """Against minmax on a long-tailed tensor: a smaller rounding error on the bulk."""
    x = rng.exponential(1.0, 100_000).astype(np.float32)
    bulk = x[x < np.percentile(x, 99)]

    def err(kind):
        qp = _observed(kind, [x]).compute_qparams()
        q = np.clip(np.rint(bulk / qp.scale) + qp.zero_point, 0, 255)
        return np.mean((qp.scale * (q - qp.zero_point) - bulk) ** 2)

    assert err("entropy") < err("minmax")
