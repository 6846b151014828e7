"""Quantization parameters, property-tested against exact rational arithmetic."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qcompiler.numerics.qparams import compute_qparams, symmetric_weight_scales

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False)


@given(lo=finite, hi=finite, dtype=st.sampled_from(["uint8", "int8", "int16"]))
@settings(max_examples=500)
def test_qparams_cover_range_and_represent_zero(lo, hi, dtype):
    lo, hi = min(lo, hi), max(lo, hi)
    qp = compute_qparams(lo, hi, dtype)
    qmin, qmax = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767)}[dtype]
    assert qmin <= qp.zero_point <= qmax
    assert qp.scale > 0 and np.float32(qp.scale) == qp.scale
    if hi - lo > 1e-30:
        # The grid reaches both ends of [min(lo,0), max(hi,0)] to within one step.
        lo0, hi0 = Fraction(min(lo, 0.0)), Fraction(max(hi, 0.0))
        s = Fraction(qp.scale)
        assert s * (qmin - qp.zero_point) <= lo0 + s
        assert s * (qmax - qp.zero_point) >= hi0 - s


def test_qparams_degenerate_range_is_defined():
    qp = compute_qparams(0.0, 0.0, "uint8")
    assert qp.scale == 1.0 and qp.zero_point == 0


def test_weight_scales_symmetric_and_zero_channel():
    s = symmetric_weight_scales(np.array([127.0, 0.0, 1.0]))
    np.testing.assert_array_equal(s, np.array([1.0, 1.0, 1.0 / 127], np.float32))
