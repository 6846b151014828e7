"""The vector multiply (`hexagon.vector.mul`, also NEON's): the reference's numbers on every
broadcast the portable kernel takes, built here (the TIR is target-neutral; the targets' own
runs are the fuzzer's and `test_hexagon`'s), both requantize forms; lanes along the axes
where no operand needs a gather."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from qcompiler.schedules.hexagon.vector import _lane_axes, mul

from qcompiler import kernels, reference

CASES = [  # (out shape, a shape, b shape, m0/shift shape, a dtype, out dtype, lane axes from)
    ((1, 16, 7, 9), (1, 16, 7, 9), (1, 16, 1, 1), (1, 16, 1, 1), "uint8", "uint8", 2),  # SE
    ((2, 8, 5, 5), (2, 8, 5, 5), (2, 8, 5, 5), (1,), "int8", "uint8", 0),
    ((1, 8, 4, 4), (1, 8, 1, 1), (1, 8, 4, 4), (1, 8, 1, 1), "int8", "int8", 2),
    ((1, 6, 3, 5), (1, 6, 3, 5), (5,), (1,), "uint8", "int8", 3),
    ((1, 6, 1, 1), (1, 6, 1, 1), (1, 6, 1, 1), (1, 6, 1, 1), "uint8", "uint8", 0),
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("right", [False, True], ids=["any_shift", "right_shifts"])
def test_vector_mul_equals_reference(case, right, rng):
    shape, a_shape, b_shape, m_shape, a_dtype, out_dtype, lanes_from = case
    assert _lane_axes(shape, [a_shape, b_shape, m_shape]) == lanes_from
    info = np.iinfo(out_dtype)
    attrs = {"zp_a": 3, "zp_b": -2, "zp_y": 5 if out_dtype == "uint8" else -4,
             "lo": int(info.min), "hi": int(info.max), "out_dtype": out_dtype}
    shift = rng.integers(-14, 2, m_shape).astype("int32")
    if right:
        shift = -np.abs(shift) - 1
    portable = kernels.mul(shape, a_shape, a_dtype, b_shape, "int8", m_shape, attrs)
    func = mul(portable, attrs, [None, None, None, shift], min_bytes=1)
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), tvm.target.Target("llvm"))
    a_info = np.iinfo(a_dtype)
    a = rng.integers(a_info.min, a_info.max + 1, a_shape).astype(a_dtype)
    b = rng.integers(-128, 128, b_shape).astype("int8")
    m0 = rng.integers(1 << 30, (1 << 31) - 1, m_shape).astype("int32")
    out = tvm.runtime.tensor(np.zeros(shape, out_dtype))
    lib(*[tvm.runtime.tensor(v) for v in (a, b, m0, shift)], out)
    np.testing.assert_array_equal(out.numpy(), reference.mul(a, b, m0, shift, attrs))


def test_16_bit_operands_keep_the_portable_kernel():
    attrs = {"zp_a": 0, "zp_b": 0, "zp_y": 0, "lo": -32768, "hi": 32767, "out_dtype": "int16"}
    portable = kernels.mul((1, 4, 2, 2), (1, 4, 2, 2), "int16", (1, 4, 2, 2), "int16", (1,),
                           attrs)
    assert mul(portable, attrs, [None] * 5) is None


def test_short_runs_keep_the_portable_kernel_on_hvx():
    attrs = {"zp_a": 0, "zp_b": 0, "zp_y": 0, "lo": 0, "hi": 255, "out_dtype": "uint8"}
    portable = kernels.mul((1, 96, 4, 4), (1, 96, 4, 4), "uint8", (1, 96, 1, 1), "uint8",
                           (1,), attrs)
    assert mul(portable, attrs, [None] * 5) is None  # 16-byte planes: part-vectors on HVX
    assert mul(portable, attrs, [None] * 5, min_bytes=16) is not None
