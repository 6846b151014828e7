"""channel_local: the portable depthwise conv computed one channel at a time (ARM, Hexagon's
strided ones): the reference's numbers on every shape the portable kernel takes, built here
(the schedule is target-neutral; the targets' own runs are the fuzzer's), with scratch of one
channel's plane instead of the whole tensor's."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from qcompiler.schedules.axis_loops import axis_loops
from qcompiler.schedules.channel_local import depthwise_by_channel

from qcompiler import kernels, reference
from qcompiler.backend.kernel_scratch import measured_build

CASES = [  # (batch, channels, h, w, kh, kw, stride, dilation, padding, x dtype)
    (1, 8, 14, 14, 3, 3, 1, 1, (1, 1, 1, 1), "int8"),
    (2, 5, 15, 9, 3, 3, 2, 1, (1, 1, 1, 1), "uint8"),
    (1, 4, 1, 1, 2, 1, 1, 1, (0, 0, 1, 0), "uint8"),  # one output row and column
    (1, 3, 9, 11, 5, 5, 2, 2, (4, 3, 4, 2), "int8"),
    (1, 6, 7, 7, 1, 1, 1, 1, (0, 0, 0, 0), "int16"),
    (1, 2, 9, 1, 3, 1, 1, 1, (1, 0, 1, 0), "uint8"),  # a column of 9 pixels: one column
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_depthwise_by_channel_equals_reference(case, rng):
    n, c, h, w, kh, kw, stride, dil, pads, dtype = case
    attrs = {"strides": [stride] * 2, "padding": list(pads), "dilation": [dil] * 2,
             "groups": c, "zp_x": 0 if dtype == "int16" else 3, "zp_y": -2 if dtype != "uint8"
             else 120, "lo": int(np.iinfo(dtype).min), "hi": int(np.iinfo(dtype).max),
             "out_dtype": dtype}
    portable = kernels.conv2d((n, c, h, w), dtype, (c, 1, kh, kw), attrs)
    # shifts known to be right shifts (a graph constant) or not known: each epilogue form
    shift = rng.integers(-12, -4 if case[0] == 1 else 3, c).astype("int32")
    func = depthwise_by_channel(portable, attrs, [None] * 4 + [shift if c % 2 else None])
    assert func is not None
    # the taps outside the row: a row of accumulators per tap, the columns innermost
    sch = tvm.s_tir.Schedule(func)
    update = sch.get_sblock("acc_update")
    assert sch.get(sch.get_loops(update)[-1]).same_as(sch.get(axis_loops(sch, update)[3]))
    target = tvm.target.Target("llvm")
    lib, scratch = measured_build(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}),
                                  target)
    _, whole = measured_build(tvm.IRModule({"k": portable.with_attr("global_symbol", "k")}),
                              target)
    # the caller holds no whole-tensor stage; a task holds at most one channel's
    plane = 4 * (h + pads[0] + pads[2]) * (w + pads[1] + pads[3])
    assert scratch["k"].caller <= max(whole["k"].caller // c, 2 * plane) + 64
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (n, c, h, w)).astype(dtype)
    wt = rng.integers(-127, 128, (c, 1, kh, kw)).astype("int8")
    bias = rng.integers(-3000, 3000, c).astype("int32")
    m0 = rng.integers(1 << 29, 1 << 31 - 1, c).astype("int32")
    want = reference.conv2d(x, wt, bias, m0, shift, attrs)
    out = tvm.runtime.tensor(np.zeros(want.shape, dtype))
    lib["k"](*[tvm.runtime.tensor(a) for a in (x, wt, bias, m0, shift)], out)
    np.testing.assert_array_equal(out.numpy(), want)


def test_other_convs_keep_the_portable_kernel():
    attrs = {"strides": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 2,
             "zp_x": 0, "zp_y": 0, "lo": -128, "hi": 127, "out_dtype": "int8"}
    grouped = kernels.conv2d((1, 8, 5, 5), "int8", (8, 4, 3, 3), attrs)
    assert depthwise_by_channel(grouped, attrs, [None] * 5) is None
    dense = kernels.conv2d((1, 8, 5, 5), "int8", (4, 8, 1, 1), {**attrs, "groups": 1})
    assert depthwise_by_channel(dense, {**attrs, "groups": 1}, [None] * 5) is None
