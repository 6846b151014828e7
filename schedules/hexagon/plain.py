"""Plain-vectorized conv2d and dense for HVX: the baseline `vrmpy` is measured against.

The portable kernels' computation (int32 products and sums of `(x - zp_x) * w`, no packing,
no dot-product instruction) with an output loop vectorized to 32 int32 lanes (one HVX
vector): the output channels, for a convolution (per output pixel, window taps and input
channels outside the lanes) and for a dense layer, the weights read through a transposed
int32 copy made per call (32 int8 lanes would be a quarter vector, which LLVM loads byte by
byte); a depthwise convolution's output columns, when its rows are 16 or more wide (else
`hexagon.depthwise`, as in every hexagon compile). The requantize epilogue is the same
32-bit-lane one the `vrmpy` kernels use, so a comparison isolates the inner product.
(Vectorizing a convolution's output columns instead, the other plain choice, is 5x slower
on the bundled model's 14-column conv2: part-vectors.) Not used by default compiles:
`tools/hexagon_cost.py` selects it (`PLAIN_VECTOR_RULES`, with `hexagon.vector`'s kernels for
everything else).
"""
from __future__ import annotations

import tvm
from qcompiler.schedules.hexagon.loops import (
    MIN_ROW_BYTES,
    lanes,
    params,
    row_chunk,
    vectorize_loop,
)
from qcompiler.schedules.hexagon.vector import HVX_VECTOR
from qcompiler.schedules.lanes32 import requantize_lanes32
from qcompiler.schedules.vector_rule import VectorRule
from tvm import te, tirx

INT32_LANES = lanes("int32")


def _channel_params(w_shape: tuple, cout: int) -> tuple:
    return (te.placeholder(w_shape, "int8", name="w"),
            *(te.placeholder((cout,), "int32", name=n) for n in ("bias", "m0", "shift")))


def _shifts(consts: list) -> str:
    shift = consts[4]
    return "right" if shift is not None and bool((shift <= -1).all()) else "any"


def conv2d(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    """`kernels.conv2d`: output channels as lanes (weights read through a transposed int32
    copy); a grouped (depthwise) one, whose lanes would each need another input channel,
    takes the output row's columns as lanes instead (if the rows are 16 or more wide)."""
    (x_shape, x_dtype), (w_shape, _), *_, (y_shape, _) = params(func)
    n, cin, h, w_ = x_shape
    cout, cin_g, kh, kw = w_shape
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
    pt, pl, pb, pr = attrs["padding"]
    groups = attrs["groups"]
    cout_g = cout // groups
    if groups > 1 and y_shape[3] * 4 < MIN_ROW_BYTES:
        return None  # rows of int32 lanes this short are loaded lane by lane: keep portable
    x = te.placeholder(x_shape, x_dtype, name="x")
    operands = _channel_params(w_shape, cout)
    wt = operands[0]
    xc = te.compute(
        (n, cin, h + pt + pb, w_ + pl + pr),
        lambda b, c, i, j: tirx.if_then_else(
            tirx.all(i >= pt, i < h + pt, j >= pl, j < w_ + pl),
            x[b, c, i - pt, j - pl].astype("int32") - attrs["zp_x"], tirx.const(0, "int32")),
        name="x_centered")
    rc = te.reduce_axis((0, cin_g), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    if groups == 1:
        w32 = te.compute((cin, kh, kw, cout), lambda c, ky, kx, o: wt[o, c, ky, kx].astype(
            "int32"), name="w_transposed")

        def weight(o: tirx.PrimExpr) -> tirx.PrimExpr:
            return w32[rc, ry, rx, o]
    else:
        def weight(o: tirx.PrimExpr) -> tirx.PrimExpr:
            return wt[o, rc, ry, rx].astype("int32")
    acc = te.compute(y_shape, lambda b, o, i, j: te.sum(
        xc[b, (o // cout_g) * cin_g + rc, i * sh + ry * dh, j * sw + rx * dw] * weight(o),
        axis=[rc, ry, rx]), name="acc")
    y = requantize_lanes32(acc, 1, operands, attrs, _shifts(consts))
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, *operands, y]))
    # Centering and padding: the row's interior is a vector copy, its borders scalar.
    vectorize_loop(sch, sch.get_loops(sch.get_sblock("x_centered"))[-1], INT32_LANES,
                   partition=True)
    out = sch.get_sblock("requantize")
    b, o, i, j = sch.get_loops(out)
    if groups == 1:  # per output pixel: taps outside, 32 channels as lanes, then requantize
        sch.reorder(i, j, o)
        oo, oi = sch.split(o, [None, INT32_LANES]) if cout > INT32_LANES else (None, o)
        anchor, lane_out, lanes_of = (oo if oo is not None else j), oi, min(cout, INT32_LANES)
        depth = 4 if oo is not None else 3  # loops down to the anchor: b, i, j[, oo]
    else:  # per output row: taps outside, the row's columns as lanes
        oo, anchor, lane_out, lanes_of, depth = None, i, j, y_shape[3], 3
    block = sch.get_sblock("acc")
    sch.compute_at(block, anchor)
    inner = sch.get_loops(block)[depth:]
    if lanes_of > 1:  # (a loop of extent 1 is gone, and has nothing to vectorize)
        lane, *taps = inner
        sch.reorder(*taps, lane)
        vectorize_loop(sch, lane, INT32_LANES)
        vectorize_loop(sch, lane_out, INT32_LANES)
    if oo is not None and cout % INT32_LANES:
        sch.annotate(oo, "pragma_loop_partition_hint", 1)
    return sch.mod["main"]


def dense(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc:
    """`kernels.dense`, output channels as lanes (weights read through a transposed int32
    copy: 32 lanes of int8 would be a quarter vector, loaded byte by byte)."""
    (x_shape, x_dtype), (w_shape, _), *_ = params(func)
    n, k = x_shape
    cout = w_shape[0]
    x = te.placeholder(x_shape, x_dtype, name="x")
    operands = _channel_params(w_shape, cout)
    wt = operands[0]
    w32 = te.compute((k, cout), lambda c, o: wt[o, c].astype("int32"), name="w_transposed")
    rk = te.reduce_axis((0, k), name="rk")
    acc = te.compute((n, cout), lambda b, o: te.sum(
        (x[b, rk].astype("int32") - attrs["zp_x"]) * w32[rk, o], axis=rk), name="acc")
    y = requantize_lanes32(acc, 1, operands, attrs, _shifts(consts))
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, *operands, y]))
    block = sch.get_sblock("acc")
    b, o, r = sch.get_loops(block)
    sch.reorder(b, o, r)
    if cout > INT32_LANES:
        oo, o = sch.split(o, [None, INT32_LANES])
        if cout % INT32_LANES:
            sch.annotate(oo, "pragma_loop_partition_hint", 1)
    sch.reorder(r, o)
    sch.vectorize(o)
    out = sch.fuse(*sch.get_loops(sch.get_sblock("requantize")))
    vectorize_loop(sch, out, row_chunk(cout, INT32_LANES))
    return sch.mod["main"]


HVX_PLAIN = VectorRule("hvx_plain", {"conv2d": conv2d, "dense": dense})
"""Accepts (comparisons only, `tools/hexagon_cost.py`): conv2d of any groups, kernel, strides,
dilations and padding on NCHW activations of any dtype (a grouped one only when its output
rows are 16 or more wide), and dense; int8 weights."""
PLAIN_VECTOR_RULES = [HVX_PLAIN, HVX_VECTOR]
