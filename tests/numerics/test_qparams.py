"""The two numeric primitives, property-tested against exact rational arithmetic."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcompiler.numerics.qparams import (
    compute_qparams,
    q_multiply_shift,
    quantize_multiplier,
    symmetric_weight_scales,
)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False)


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


@given(st.floats(min_value=2.0**-40, max_value=2.0**29, allow_nan=False, allow_subnormal=False))
@settings(max_examples=500)
def test_multiplier_is_q31_and_exact_to_half_an_ulp(m):
    m0, shift = quantize_multiplier(m)
    if m < 2.0**-32:  # below what can change any int32
        assert (m0, shift) in {(0, 0)} or 2**30 <= m0 < 2**31
        return
    assert 2**30 <= m0 < 2**31
    assert -31 <= shift <= 30
    represented = Fraction(m0) * Fraction(2) ** (shift - 31)
    # Rounding the mantissa to 31 bits: error at most half a unit in the last place.
    assert abs(represented - Fraction(m)) <= Fraction(2) ** (shift - 32)


@pytest.mark.parametrize("m", [1.0, 2.5, 7.0, 1000.0, 2.0**-20, 2.0**-31, 2.0**-31 * 1.5])
def test_multiplier_edges(m):
    m0, shift = quantize_multiplier(m)
    assert 2**30 <= m0 < 2**31
    assert float(Fraction(m0) * Fraction(2) ** (shift - 31)) == pytest.approx(m, rel=2**-30)


def test_multiplier_below_2_pow_minus_32_is_zero_and_rejects_bad():
    assert quantize_multiplier(2.0**-40) == (0, 0)
    assert quantize_multiplier(0.0) == (0, 0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        quantize_multiplier(float("nan"))
    # 2^30 and above saturate to the largest multiplier: every nonzero input saturates anyway.
    assert quantize_multiplier(2.0**40) == (2**31 - 1, 30)


@given(x=st.integers(-(2**31), 2**31 - 1),
       m=st.floats(min_value=2.0**-31, max_value=1.0, allow_subnormal=False))
@settings(max_examples=1000)
def test_q_multiply_shift_rounds_half_up_exactly(x, m):
    m0, shift = quantize_multiplier(m)
    exact = Fraction(x) * Fraction(m0) * Fraction(2) ** (shift - 31)
    got = int(q_multiply_shift(np.array([x], np.int32), m0, shift)[0])
    assert got == round_half_up(exact)


@given(x=st.integers(-(2**31), 2**31 - 1), m=st.floats(min_value=1.0, max_value=2.0**29))
@settings(max_examples=1000)
def test_q_multiply_shift_multipliers_above_one_never_wrap(x, m):
    # TVM's (x << shift) * m0 would overflow int64 here; ours stays exact.
    m0, shift = quantize_multiplier(m)
    assert shift >= 1
    exact = Fraction(x) * Fraction(m0) * Fraction(2) ** (shift - 31)
    assert int(q_multiply_shift(np.array([x], np.int32), m0, shift)[0]) == round_half_up(exact)


def test_q_multiply_shift_ties_go_up():
    m0, shift = quantize_multiplier(0.5)
    xs = np.array([1, -1, 3, -3], np.int32)
    np.testing.assert_array_equal(q_multiply_shift(xs, m0, shift), [1, 0, 2, -1])


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
