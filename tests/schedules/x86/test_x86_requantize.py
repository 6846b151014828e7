"""The right-shift requantize intrinsic (`schedules.x86_requantize`) against the contract's
`q_multiply_shift`, bit for bit, at the edges of its ranges: shifts -2 and -22 (the shortest
and the longest shift of `RIGHT_SHIFTS`), multipliers 0, 2^30 and 2^31 - 1,
accumulators at the int32 extremes and exactly on rounding ties, for 8- and 16-bit outputs;
one output column at a time, and (8-bit) four."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import AVX2_TARGET, VNNI_TARGET, requires_cpu_for
from qcompiler.schedules.x86.requantize import (
    LANES,
    RIGHT_SHIFTS,
    requantize_intrin,
    right_shift_epilogue,
)
from tvm import te

from qcompiler.numerics.requantize import q_multiply_shift

TARGET = tvm.target.Target(VNNI_TARGET)  # (built on every machine, run where it can)


def _kernel(rows: int, attrs: dict, columns: int) -> tvm.runtime.Module:
    """Rows of 16 lanes through the intrinsic of `columns` rows (output columns) at a time."""
    acc = te.placeholder((rows, LANES), "int32", name="acc")  # the bias included
    m0, shift = (te.placeholder((LANES,), "int32", name=n) for n in ("m0", "shift"))
    y = te.compute((rows, LANES), lambda r, i: right_shift_epilogue(
        acc[r, i], m0[i], shift[i], attrs), name="requantize")
    sch = tvm.s_tir.Schedule(te.create_prim_func([acc, m0, shift, y]))
    row, lane = sch.get_loops(sch.get_sblock("requantize"))
    if columns == 1:
        sch.tensorize(lane, requantize_intrin(attrs))
    else:
        sch.tensorize(sch.split(row, [None, columns])[1], requantize_intrin(attrs, columns))
    assert "Shuffle" in sch.mod["main"].script()  # the vector form, not a scalar loop
    return tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr(
        "global_symbol", "main")}), TARGET)


def _operands(rng: np.random.Generator, lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """Edge rows, then rows whose results fall in [lo, hi) wherever int32 can reach them."""
    m0 = np.array([0, 1 << 30, (1 << 31) - 1, (1 << 31) - 1] + [1 << 30] * 2
                  + list(rng.integers(1 << 30, 1 << 31, LANES - 6)), np.int64)
    lowest = RIGHT_SHIFTS[0]
    highest = RIGHT_SHIFTS[1]
    shift = np.array([highest, highest, highest, lowest, lowest, highest - 1]
                     + list(rng.integers(lowest, highest + 1, LANES - 6)), np.int64)
    bias = rng.integers(-1000, 1000, LANES)
    limit = (1 << 31) - 1 - 1000
    rows = [np.full(LANES, v) for v in (0, 1, -1, limit, -limit)]
    k = 31 - shift  # total right shift: ties where x m0 = (2j + 1) 2^(k-1)
    for j in (0, 1, -1, 5, -6):
        x = np.where(m0 > 0, ((2 * j + 1) << (k - 1)) // np.maximum(m0, 1), 0)
        rows += [x - bias + d for d in (-1, 0, 1)]
    rows += list(rng.integers(-limit, limit, (4, LANES)))  # (85 + 3 rows: 4-column blocks)
    target = rng.integers(lo, hi, (64, LANES))
    rows += list(np.round(target * 2.0 ** k / np.maximum(m0, 1)).clip(-limit, limit) - bias
                 + rng.integers(-3, 4, (64, LANES)))
    acc = np.clip(np.array(rows), -limit, limit)
    return (acc.astype(np.int32), bias.astype(np.int32), m0.astype(np.int32),
            shift.astype(np.int32))


@pytest.mark.parametrize("out", [("uint8", 90, 0, 255, 1), ("uint8", 0, 3, 140, 1),
                                 ("int8", -5, -128, 127, 1), ("int16", 7, -32768, 32767, 1),
                                 ("uint8", 90, 0, 255, 4), ("uint8", 0, 3, 140, 4),
                                 ("int8", -5, -128, 127, 4), ("int8", 3, -20, 100, 4)],
                         ids=lambda o: "{}_zp{}_{}_{}_cols{}".format(*o))
def test_right_shift_epilogue_equals_contract(out, rng):
    """`cols` 4: four columns narrowed together by saturating packs, then the clamp."""
    dtype, zp, lo, hi, columns = out
    attrs = {"zp_y": zp, "lo": lo, "hi": hi, "out_dtype": dtype}
    acc, bias, m0, shift = _operands(rng, lo - zp, hi - zp)
    lib = _kernel(len(acc), attrs, columns)
    requires_cpu_for(VNNI_TARGET)
    got = tvm.runtime.tensor(np.zeros(acc.shape, dtype))
    lib["main"](*[tvm.runtime.tensor(a) for a in (acc + bias, m0, shift)], got)
    exact = q_multiply_shift(acc + bias, m0, shift) + zp
    want = np.clip(exact, lo, hi).astype(dtype)
    np.testing.assert_array_equal(got.numpy(), want)
    inside = (exact > lo) & (exact < hi)
    # results inside the clamp (the arithmetic is checked) in every lane with m0 > 0
    assert inside[:, 1:].any(axis=0).all() and inside.mean() > 0.3


def test_only_shifts_of_2_to_22_bits_take_the_right_shift_form():
    """n = -1 (a multiplier in [1/4, 1/2)) needs the product's low dword: the int64 form."""
    from qcompiler.schedules import shift_kind

    assert shift_kind(np.array([-2, -9, -22])) == "right"
    for outside in (-1, -23, 0, 3):
        assert shift_kind(np.array([-2, outside, -9])) == "any"
    assert shift_kind(None) == "any"


@pytest.mark.parametrize("out", [("uint8", 90, 0, 255), ("uint8", 0, 3, 140),
                                 ("int8", -5, -128, 127), ("int16", 7, -32768, 32767)],
                         ids=lambda o: "{}_zp{}_{}_{}".format(*o))
def test_row_epilogue_right_shift_form_equals_contract(out, rng):
    """The row kernels' (AVX2 dot product, depthwise) high-word form, `epilogue.
    right_shift_rows`, vectorized along a row as they schedule it, on the same edge operands
    (built for this machine's AVX2, so it runs everywhere CI does)."""
    from qcompiler.schedules.x86.epilogue import right_shift_rows, vectorize_row

    from qcompiler.numerics.requantize import RequantizeAttrs

    dtype, zp, lo, hi = out
    attrs = {"zp_y": zp, "lo": lo, "hi": hi, "out_dtype": dtype}
    acc, bias, m0, shift = _operands(rng, lo - zp, hi - zp)
    rows = len(acc)
    # channels on the outer axis, as in NCHW: each row is one channel's multiplier and shift
    x = te.placeholder((LANES, rows), "int32", name="x")
    m, s = (te.placeholder((LANES,), "int32", name=n) for n in ("m0", "shift"))
    y = te.compute((LANES, rows), lambda c, j: right_shift_rows(
        x[c, j], m[c], s[c], RequantizeAttrs.from_attrs(attrs)), name="requantize")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, m, s, y]))
    vectorize_row(sch, sch.get_loops(sch.get_sblock("requantize"))[-1], 8)
    lib = tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr(
        "global_symbol", "main")}), tvm.target.Target(AVX2_TARGET))
    requires_cpu_for(AVX2_TARGET)
    got = tvm.runtime.tensor(np.zeros((LANES, rows), dtype))
    lib["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in
                  ((acc + bias).T, m0, shift)], got)
    exact = q_multiply_shift(acc + bias, m0, shift) + zp
    np.testing.assert_array_equal(got.numpy().T, np.clip(exact, lo, hi).astype(dtype))
    inside = (exact > lo) & (exact < hi)
    assert inside[:, 1:].any(axis=0).all() and inside.mean() > 0.3
