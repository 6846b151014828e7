"""The channels-in-lanes depthwise kernel (`hexagon.depthwise_lanes`): the reference's numbers
on every shape it takes, built here (the TIR is target-neutral; `test_hexagon` runs it under
qemu), and the convs it leaves to the other kernels."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from qcompiler.schedules.hexagon.depthwise_lanes import (
    CHUNK_BYTES,
    depthwise_by_lanes,
)
from qcompiler.schedules.hexagon.output_planes import takes_columns
from support.emulated_kernels import run_under_qemu

from qcompiler import kernels, reference
from qcompiler.backend.kernel_scratch import measured_build
from qcompiler.numerics.shapes import conv2d_out_hw

CASES = [  # (batch, channels, h, w, kh, kw, stride, dilation, padding, x dtype)
    (1, 32, 14, 14, 3, 3, 1, 1, (1, 1, 1, 1), "int8"),
    (2, 37, 15, 9, 3, 3, 2, 1, (1, 1, 1, 1), "uint8"),  # a 5-channel tail block, batch 2
    (1, 64, 1, 1, 2, 1, 1, 1, (0, 0, 1, 0), "uint8"),  # one output pixel
    (1, 33, 9, 11, 5, 5, 2, 2, (4, 3, 4, 2), "int8"),  # asymmetric padding, dilated
    (1, 40, 6, 6, 1, 1, 1, 1, (0, 0, 0, 0), "uint8"),  # 1x1: no tap loops
    (1, 32, 40, 40, 3, 3, 1, 1, (1, 1, 1, 1), "uint8"),  # gathered in chunks of rows
    (1, 33, 45, 30, 5, 3, 2, 2, (4, 2, 3, 2), "int8"),  # chunks: strided, dilated, odd rows
]


def _attrs(c: int, stride: int, dil: int, pads: tuple, dtype: str) -> dict:
    info = np.iinfo(dtype)
    return {"strides": [stride] * 2, "padding": list(pads), "dilation": [dil] * 2,
            "groups": c, "zp_x": 3, "zp_y": 120 if dtype == "uint8" else -2,
            "lo": int(info.min), "hi": int(info.max), "out_dtype": dtype}


def _operands(case: tuple, rng: np.random.Generator) -> tuple:
    """(attrs, the kernel's operands, the reference's output) for a case."""
    n, c, h, w, kh, kw, stride, dil, pads, dtype = case
    attrs = _attrs(c, stride, dil, pads, dtype)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (n, c, h, w)).astype(dtype)
    wt = rng.integers(-128, 128, (c, 1, kh, kw)).astype("int8")
    bias = rng.integers(-3000, 3000, c).astype("int32")
    m0 = rng.integers(1 << 29, (1 << 31) - 1, c).astype("int32")
    # right shifts known (a constant operand) or not: each requantize form
    shift = rng.integers(-12, -1 if c % 2 else 3, c).astype("int32")
    return attrs, [x, wt, bias, m0, shift], reference.conv2d(x, wt, bias, m0, shift, attrs)


def _kernel(case: tuple, attrs: dict, shift: np.ndarray, shuffles: bool) -> tvm.tirx.PrimFunc:
    n, c, h, w, kh, kw, *_, dtype = case
    portable = kernels.conv2d((n, c, h, w), dtype, (c, 1, kh, kw), attrs)
    func = depthwise_by_lanes(portable, attrs, [None] * 4 + [shift if c % 2 else None],
                              shuffles=shuffles)
    assert func is not None
    return func


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_channels_in_lanes_equal_reference(case, rng):
    """The target-neutral kernel (the gather as TIR), built for this host."""
    attrs, args, want = _operands(case, rng)
    func = _kernel(case, attrs, args[-1], shuffles=False)
    lib, scratch = measured_build(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}),
                                  tvm.target.Target("llvm"))
    # a large padded plane is gathered a chunk of rows at a time, within CHUNK_BYTES
    h, w, pads = case[2], case[3], case[8]
    plane = 2 * 32 * (h + pads[0] + pads[2]) * (w + pads[1] + pads[3])
    assert scratch["k"].task <= min(plane, CHUNK_BYTES) + 4096  # (+ a pixel's int32 lanes)
    out = tvm.runtime.tensor(np.zeros(want.shape, want.dtype))
    lib["k"](*[tvm.runtime.tensor(a) for a in args], out)
    np.testing.assert_array_equal(out.numpy(), want)


def _shuffled(func: tvm.tirx.PrimFunc) -> bool:
    return "x_lanes_shuffled" in func.script()


# Every case but the 1x1 plane (64 bytes in all: less than one vector) takes the shuffles.
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_shuffle_networks_equal_reference_under_qemu(case, tmp_path, rng):
    """The Hexagon kernel, its planes gathered into lanes and its lanes moved to the output's
    planes by `vshuff` networks (whole plane, windows past the plane's end, chunks of rows,
    batch 2, a channel tail, int8 and uint8), bit-exact under qemu-hexagon."""
    attrs, args, want = _operands(case, rng)
    func = _kernel(case, attrs, args[-1], shuffles=True)
    assert _shuffled(func) == (case[2] * case[3] > 1)
    # the output's move: rows of 8 to 128 (a power of two) pixels
    n, c, h, w, kh, kw = case[:6]
    _, ow = conv2d_out_hw((n, c, h, w), (c, 1, kh, kw), attrs)
    assert ("requantize_out_shuffled" in func.script()) == takes_columns(ow)
    run_under_qemu(func, args, want, tmp_path)


def test_shuffle_networks_take_fewer_packets(tmp_path, rng):
    """A 16x16 plane of 72 channels (mobilenet_v3_small's at 64x64): the shuffle networks
    (the gather into lanes, the move to the output's planes) against the element moves, the
    same kernel otherwise (28,977 vs 111,235 packets when written)."""
    case = (1, 72, 16, 16, 3, 3, 1, 1, (1, 1, 1, 1), "uint8")
    attrs, args, want = _operands(case, rng)
    packets = {shuffles: run_under_qemu(_kernel(case, attrs, args[-1], shuffles), args, want,
                                        tmp_path / str(shuffles)) for shuffles in (True, False)}
    assert packets[True] * 2 < packets[False], packets
