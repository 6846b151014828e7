"""Depthwise convolution (stride 1) on HVX vectors, over a channel's whole padded plane.

A depthwise layer has no dot product to map (one input channel per output channel), and in
NCHW its rows are short (7 to 28 columns: part-vectors, which LLVM turns into scalar code).
On the padded plane of pitch Wp, the output at flat position p = y Wp + x is

    acc[p] = sum_{ky, kx} w[ky, kx] * xc[p + ky Wp + kx]

(xc the centered, zero-padded input): contiguous in p for every tap, so whole vectors run
over the plane, rows and all; the Wp - OW columns past each row's end are computed and
dropped. The plane gets slack rows so the last vector reads inside it. Then the requantize
epilogue on the same lanes (`fixed_point32`) and a copy of the OW real columns of each row.
"""
from __future__ import annotations

from typing import Any

import tvm
from qcompiler.schedules.axis_loops import axis_loops
from qcompiler.schedules.fixed_point32 import clamp_cast32, q_multiply_shift32, shift_kind32
from qcompiler.schedules.hexagon.loops import lanes, params, vectorize_loop
from tvm import te, tirx

from qcompiler.numerics import nibbles
from qcompiler.numerics.requantize import RequantizeAttrs


def depthwise_conv2d(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    """`kernels.conv2d` for groups == channels (multiplier 1), stride 1, int8 weights (4-bit
    ones, stored as nibbles, keep the portable kernel); None otherwise."""
    rq = RequantizeAttrs.from_attrs(attrs)
    if nibbles.is_nibbles(attrs):
        return None
    (x_shape, x_dtype), (w_shape, _), *_, (y_shape, out_dtype) = params(func)
    n, c, h, w = x_shape
    kh, kw = w_shape[2:]
    if attrs["groups"] != c or w_shape[0] != c or attrs["strides"] != [1, 1]:
        return None
    dh, dw = attrs["dilation"]
    pt, pl, pb, pr = attrs["padding"]
    oh, ow = y_shape[2:]
    wp = w + pl + pr
    n_lanes = lanes("int32")
    plane = -(-oh * wp // n_lanes) * n_lanes  # output positions on the padded grid, in vectors
    rows = -(-(plane + dh * (kh - 1) * wp + dw * (kw - 1)) // wp)
    x = te.placeholder(x_shape, x_dtype, name="x")
    wt = te.placeholder(w_shape, "int8", name="w")
    bias, m0, shift = (te.placeholder((c,), "int32", name=k) for k in ("bias", "m0", "shift"))
    xc = te.compute((n, c, rows, wp), lambda b, ch, i, j: tirx.if_then_else(
        tirx.all(i >= pt, i < h + pt, j >= pl, j < w + pl),
        x[b, ch, i - pt, j - pl].astype("int32") - attrs["zp_x"], tirx.const(0, "int32")),
        name="x_plane")

    def tap(b: Any, ch: Any, p: Any) -> Any:  # xc read as one flat plane
        return xc[b, ch, p // wp, p % wp]

    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    acc = te.compute((n, c, plane), lambda b, ch, p: te.sum(
        tap(b, ch, p + ry * dh * wp + rx * dw) * wt[ch, 0, ry, rx].astype("int32"),
        axis=[ry, rx]), name="acc")
    shifts = consts[4]
    kind = shift_kind32(shifts)
    lanes_out = te.compute((n, c, plane), lambda b, ch, p: clamp_cast32(q_multiply_shift32(
        acc[b, ch, p] + bias[ch], m0[ch], shift[ch], kind), rq.zp_y, rq.lo,
        rq.hi, "int32"), name="requantize")
    y = te.compute(y_shape, lambda b, ch, i, j: lanes_out[b, ch, i * wp + j].astype(out_dtype),
                   name="requantize_out")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, wt, bias, m0, shift, y]))
    # Per channel: its plane, the taps over it, the epilogue and the row copy; the plane-sized
    # buffers are one channel's (the workspace: one plane of each, not the layer's).
    b, ch = sch.get_loops(sch.get_sblock("requantize_out"))[:2]
    channel = sch.fuse(b, ch)
    for stage in ("requantize", "acc", "x_plane"):
        sch.compute_at(sch.get_sblock(stage), channel)
    vectorize_loop(sch, sch.get_loops(sch.get_sblock("x_plane"))[-1], n_lanes, partition=True)
    _vectorize_taps_inside(sch, n_lanes)
    vectorize_loop(sch, sch.get_loops(sch.get_sblock("requantize"))[-1], n_lanes)
    return sch.mod["main"]

def _vectorize_taps_inside(sch: tvm.s_tir.Schedule, n_lanes: int) -> None:
    """The window taps outside the plane's positions, which are the lanes."""
    block = sch.get_sblock("acc")
    ax = axis_loops(sch, block)  # (a 1x1 kernel's unit tap loops: none under the channel's)
    taps = [ax[k] for k in (3, 4) if k in ax]
    if taps:
        sch.reorder(*taps, ax[2])
    vectorize_loop(sch, ax[2], n_lanes)

