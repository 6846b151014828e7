"""The 32-bit-lane requantizing multiply equals `q_multiply_shift` (the int64 contract), built
and run here (x86, vectorized), on every shift and on the int32 extremes."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from qcompiler.schedules.fixed_point32 import SATURATED, q_multiply_shift32
from tvm import te

from qcompiler.numerics.requantize import q_multiply_shift

N = 1 << 14


def _run(make, *arrays: np.ndarray) -> np.ndarray:
    """One vectorized elementwise kernel `y[i] = make(*operands[i])`, built for this machine."""
    ops = [te.placeholder((N,), "int32", name=f"a{k}") for k in range(len(arrays))]
    y = te.compute((N,), lambda i: make(*[o[i] for o in ops]), name="y")
    sch = tvm.s_tir.Schedule(te.create_prim_func([*ops, y]))
    (i,) = sch.get_loops(sch.get_sblock("y"))
    sch.vectorize(sch.split(i, [None, 16])[1])
    lib = tvm.tirx.build(sch.mod, tvm.target.Target({"kind": "llvm"}))
    out = tvm.runtime.tensor(np.zeros(N, np.int32))
    lib(*[tvm.runtime.tensor(a) for a in arrays], out)
    return out.numpy()


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([rng.integers(-2**31, 2**31, N // 2), rng.integers(-70000, 70000, N // 2)])
    x[:6] = [-2**31, 2**31 - 1, 0, 1, -1, -2]
    m0 = rng.integers(2**30, 2**31, N)
    m0[:9] = [2**30, 2**31 - 1, 0, 2**30, 2**31 - 1, 0, 2**31 - 1, 2**30, 2**31 - 1]
    return x.astype(np.int32), m0.astype(np.int32)


def _check(got: np.ndarray, x: np.ndarray, m0: np.ndarray, shift) -> None:  # noqa: ANN001
    """Exact below SATURATED (2^29) in magnitude; beyond, the right sign and at least SATURATED."""
    want = q_multiply_shift(x, m0, shift)
    small = np.abs(want) < SATURATED
    np.testing.assert_array_equal(got[small], want[small])
    assert np.all(np.sign(got[~small]) == np.sign(want[~small]))
    assert np.all(np.abs(got[~small]) >= SATURATED)


def test_per_lane_shifts_every_shift(rng):
    x, m0 = _inputs(rng)
    shift = rng.integers(-31, 31, N).astype(np.int32)
    got = _run(lambda a, b, c: q_multiply_shift32(a, b, c), x, m0, shift)
    _check(got, x, m0, shift)
    for shifts, part in (("right", np.minimum(shift, -1)), ("left", np.maximum(shift, 0))):
        got = _run(lambda a, b, c: q_multiply_shift32(a, b, c, shifts=shifts), x, m0, part)
        _check(got, x, m0, part)


@pytest.mark.parametrize("shift", [-31, -17, -2, -1, 0, 1, 12, 29, 30])
def test_constant_shift(shift, rng):
    x, m0 = _inputs(rng)
    got = _run(lambda a, b: q_multiply_shift32(a, b, shift), x, m0)
    _check(got, x, m0, shift)
