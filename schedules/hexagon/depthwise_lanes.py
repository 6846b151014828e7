"""Depthwise convolution on HVX with the channels in the vector lanes: for NCHW planes too
small for vectors along their rows (`hexagon.depthwise` runs 32 int32 lanes over a padded
plane: a 4x4 plane padded to 8x8 is 2 vectors of mostly junk), and for strided layers.

Per block of 32 channels, the padded input is gathered to (rows, columns, 32) int16 lanes
(centered: `x - zp_x`, 0 in the padding; lanes past the last channel repeat it), and the
weights to (kh, kw, 32); then each output pixel is kh x kw lane-wise multiply-adds into int32
lanes, the requantize on those lanes (`lanes32.vector_epilogue`) and a move of each byte to
its channel's plane. Strides and dilations only move which pixel a tap reads: no gather, no
phase split. The cost is the two transposes, both `vshuff` networks: the gather over whole
input rows (`lane_transpose`), the move a row of output pixels at a time (`output_planes`).
As element moves they took 1.75 and ~1 packets a byte: a 72-channel 16x16 3x3 layer 111,235
-> 64,729 (gather) -> 28,977 packets (move), 96 x 112x112 stride 2 5.0M -> 1.09M -> 807k.
A layer of fewer than 32 channels keeps the other kernels (mobilenet_v3_small's first, 16
channels: 0.73x before the networks).

Measured under qemu-hexagon (`tools/hexagon_cost.py`), against the plane kernel and
`channel_local`: mobilenet_v3_small at 64x64, 1.14-3.7x fewer packets per layer (its 2x2
planes 3.7x), the model 1,100,535 -> 899,601; the bundled model's depthwise conv 45,972 ->
22,026. On NEON's 4 lanes the same kernel lost (0.22-1.9x against `channel_local`).
"""
from __future__ import annotations

import numpy as np
import tvm
from qcompiler.schedules.axis_loops import axis_loops
from qcompiler.schedules.fixed_point32 import shift_kind32
from qcompiler.schedules.hexagon.lane_transpose import gather_by_shuffles
from qcompiler.schedules.hexagon.output_planes import planes_by_shuffles, takes_columns
from qcompiler.schedules.lanes32 import vector_epilogue
from qcompiler.schedules.vector_rule import VectorRule
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.numerics import nibbles
from qcompiler.numerics.shapes import ceil_div, conv2d_out_hw

LANES = 32  # int32 lanes of a 128-byte HVX vector
# A block's padded plane larger than this is gathered a chunk of output rows at a time (the
# rows each chunk reads; overlapping ones gathered twice): the workspace, not packets.
CHUNK_BYTES = 32 * 1024


def depthwise_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                      shifts: str = "any", lanes: int = LANES) -> tirx.PrimFunc:
    """The kernel's computation (`kernels.conv2d`'s operands; `shifts` as in
    `fixed_point32.q_multiply_shift32`)."""
    n, c, h, w = x_shape
    _, _, kh, kw = w_shape
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilation"]
    pt, pl, pb, pr = attrs["padding"]
    oh, ow = conv2d_out_hw(x_shape, w_shape, attrs)
    blocks = ceil_div(c, lanes)
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wt = kernels._channel_params(w_shape, attrs)
    xl = te.compute((n, blocks, h + pt + pb, w + pl + pr, lanes),
                    lambda b, ob, i, j, li: tirx.if_then_else(
                        tirx.all(i >= pt, i < h + pt, j >= pl, j < w + pl),
                        x[b, tirx.min(ob * lanes + li, c - 1), i - pt, j - pl].astype("int16")
                        - tirx.const(attrs["zp_x"], "int16"), tirx.const(0, "int16")),
                    name="x_lanes")
    wl = te.compute((blocks, kh, kw, lanes), lambda ob, ky, kx, li: wt[
        tirx.min(ob * lanes + li, c - 1), 0, ky, kx].astype("int16"), name="w_lanes")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    acc = te.compute((n, blocks, oh, ow, lanes), lambda b, ob, i, j, li: te.sum(
        xl[b, ob, i * sh + ry * dh, j * sw + rx * dw, li].astype("int32")
        * wl[ob, ry, rx, li].astype("int32"), axis=[ry, rx]), name="acc")
    centered = te.compute((n, c, oh, ow), lambda b, o, i, j: acc[b, o // lanes, i, j,
                                                                   o % lanes],
                          name="acc_centered")
    y = vector_epilogue(centered, 1, params, attrs, shifts)
    return te.create_prim_func([x, *params, y]).with_attr(
        {"qcompiler.row_stride": sh, "qcompiler.row_reach": (kh - 1) * dh + 1,
         "qcompiler.pad_top_left": [pt, pl], "qcompiler.zp_x": attrs["zp_x"]})


def chunk_rows(sch: tvm.s_tir.Schedule) -> int | None:
    """Output rows per gathered chunk where a block's padded plane exceeds `CHUNK_BYTES`: the
    most rows dividing the output's whose input rows fit (None: the whole plane at once)."""
    xl = sch.get(sch.get_sblock("x_lanes")).writes[0].source
    _, _, hp, wp, lanes = (int(d) for d in xl.shape)
    row_bytes = wp * lanes * np.dtype(str(xl.dtype)).itemsize
    if hp * row_bytes <= CHUNK_BYTES:
        return None
    acc = sch.get(sch.get_sblock("acc"))
    oh = int(acc.iter_vars[2].dom.extent)
    func = sch.mod["main"]
    sh, kh_reach = (int(func.attrs[k]) for k in ("qcompiler.row_stride", "qcompiler.row_reach"))
    fits = [r for r in range(1, oh + 1)
            if oh % r == 0 and ((r - 1) * sh + kh_reach) * row_bytes <= CHUNK_BYTES]
    return max(fits, default=1)


def schedule(sch: tvm.s_tir.Schedule, shuffles: bool = True) -> None:
    """Channel blocks in parallel, each gathering its padded planes (a chunk of rows at a
    time where they are large: `chunk_rows`; with `shuffles`, by HVX shuffle networks) and
    weights; per output pixel the taps (unrolled) over the lanes and the requantize on them;
    the bytes' move per pixel (with `shuffles`, per row of 8, 16, ... 128 pixels)."""
    out = sch.get_sblock("requantize")
    b, ob, i, j, li = sch.get_loops(out)
    block = sch.fuse(b, ob)
    rows = chunk_rows(sch)
    gather, row = (block, i) if rows is None else sch.split(i, [None, rows])
    # With shuffles, the bytes move a row at a time where `output_planes` takes the row
    by_rows = shuffles and takes_columns(int(sch.get(j).extent))
    sch.reverse_compute_at(sch.get_sblock("requantize_out"), row if by_rows else j)
    sch.compute_inline(sch.get_sblock("acc_centered"))
    acc = sch.get_sblock("acc")
    sch.compute_at(acc, j)
    sch.compute_at(sch.get_sblock("x_lanes"), gather)
    sch.compute_at(sch.get_sblock("w_lanes"), block)
    sch.parallel(block)  # (before the decomposition: it refuses split writers)
    ax = axis_loops(sch, acc)
    lane = ax[4]
    taps = [ax[k] for k in (5, 6) if k in ax]
    if taps:
        sch.reorder(*taps, lane)
    sch.vectorize(lane)  # (before the decomposition: a reduction block's loops can be)
    if taps:
        init = sch.decompose_reduction(acc, taps[0])
        sch.vectorize(sch.get_loops(init)[-1])
    for t in taps:
        sch.unroll(t)
    sch.vectorize(li)
    if shuffles:
        gather_by_shuffles(sch)
        if by_rows:
            planes_by_shuffles(sch)


def depthwise_by_lanes(func: tirx.PrimFunc, attrs: dict, consts: list, shuffles: bool = True
                       ) -> tirx.PrimFunc | None:
    """The portable depthwise kernel (groups == channels == outputs, 8-bit activations and
    weights, at least `LANES` channels) rebuilt; None for other convs. `shuffles`: gather
    with HVX instructions (False: target-neutral TIR)."""
    x, w = func.params[:2]
    channels = int(x.shape[1])
    if attrs["groups"] != channels or int(w.shape[0]) != channels or channels < LANES \
            or nibbles.is_nibbles(attrs) or "lut" in attrs \
            or np.dtype(str(x.dtype)).itemsize != 1:
        return None
    shifts = consts[4]
    kind = shift_kind32(shifts)
    x_shape, w_shape = (tuple(int(d) for d in p.shape) for p in (x, w))
    sch = tvm.s_tir.Schedule(depthwise_compute(x_shape, str(x.dtype), w_shape, attrs, kind))
    schedule(sch, shuffles)
    return sch.mod["main"]


HVX_CHANNEL_LANES = VectorRule("hvx_channel_lanes", {"conv2d": depthwise_by_lanes})
"""Accepts depthwise conv2d (groups == channels == outputs, depth multiplier 1) of at least 32
channels, 8-bit activations, int8 weights, any batch, plane, kernel, strides, dilations and
padding; other convs go on to the next rule (`hexagon.vector`'s plane kernel, `channel_local`)."""
