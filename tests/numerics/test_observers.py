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
    with pytest.raises(ValueError, match="observer must be one of minmax, percentile, mse"):
        make_observer("kl", "uint8")
    with pytest.raises(ValueError, match="saw no data"):
        make_observer("minmax", "uint8").compute_qparams()
