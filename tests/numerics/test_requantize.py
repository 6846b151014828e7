"""Fixed-point multipliers and the requantize attributes, property-tested against exact rational
arithmetic."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qcompiler.numerics.requantize import (
    RequantizeAttrs,
    q_multiply_shift,
    quantize_multiplier,
    quantize_multipliers,
)


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


multipliers = st.floats(min_value=0.0, max_value=2.0**40, allow_nan=False, allow_subnormal=False)


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                  elements=multipliers))
@settings(max_examples=300)
def test_vector_multipliers_are_exact_per_element(m):
    m0, shift = quantize_multipliers(m)
    assert m0.dtype == np.int32 and shift.dtype == np.int32
    assert m0.shape == m.shape and shift.shape == m.shape
    for real, q, n in zip(m.reshape(-1), m0.reshape(-1).tolist(), shift.reshape(-1).tolist()):
        assert (q, n) == quantize_multiplier(float(real))
        exact = Fraction(float(real))
        if exact < Fraction(2) ** -32:  # below what can change any int32: 0 or a Q31 number
            assert (q, n) == (0, 0) or 2**30 <= q < 2**31
        elif exact >= Fraction(2) ** 30:  # saturated: the largest representable
            assert (q, n) == (2**31 - 1, 30)
        else:
            assert 2**30 <= q < 2**31 and -31 <= n <= 30
            represented = Fraction(q) * Fraction(2) ** (n - 31)
            assert abs(represented - exact) <= Fraction(2) ** (n - 32)


@given(hnp.arrays(np.float32, st.integers(1, 8),
                  elements=st.floats(min_value=2.0**-20, max_value=1.0, width=32)),
       st.floats(min_value=2.0**-10, max_value=1.0), st.floats(min_value=2.0**-10, max_value=1.0))
@settings(max_examples=200)
def test_vector_multipliers_of_float32_scales_read_them_exactly(s_w, s_x, s_y):
    """A per-channel `s_x s_w[c] / s_y` with float32 `s_w`: each element is the float64 value
    of the scalar expression (float32 -> float64 is exact)."""
    m0, shift = quantize_multipliers(s_x * s_w.astype(np.float64) / s_y)
    assert list(zip(m0.tolist(), shift.tolist())) == \
        [quantize_multiplier(s_x * float(s) / s_y) for s in s_w]


def test_vector_multipliers_of_an_empty_array():
    m0, shift = quantize_multipliers(np.zeros((0, 3)))
    assert m0.shape == shift.shape == (0, 3) and m0.dtype == np.int32


def test_requantize_attrs_keep_the_json_order():
    rq = RequantizeAttrs(3, 0, 255, "uint8")
    assert list(rq.to_attrs()) == ["zp_y", "lo", "hi", "out_dtype"]
    one = RequantizeAttrs(3, 0, 255, "uint8", 1 << 30, -2)
    assert list(one.to_attrs()) == ["zp_y", "m0", "shift", "lo", "hi", "out_dtype"]
    assert list(rq.to_attrs(m0_a=1, k=2)) == ["zp_y", "m0_a", "k", "lo", "hi", "out_dtype"]
    assert RequantizeAttrs.from_attrs({"zp_x": 5, **one.to_attrs()}) == one
    assert RequantizeAttrs.from_attrs(rq.to_attrs(m0_a=1)) == rq


def test_requantize_attrs_clamp():
    rq = RequantizeAttrs(10, 0, 20, "uint8")
    got = rq.clamp(np.array([-20, -10, 0, 5, 10, 30], np.int64))
    np.testing.assert_array_equal(got, np.array([0, 0, 10, 15, 20, 20], np.uint8))
    assert got.dtype == np.uint8
    with pytest.raises(KeyError):
        RequantizeAttrs.from_attrs({"zp_y": 0, "lo": 0, "hi": 1})
