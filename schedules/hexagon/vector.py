"""HVX vector kernels for the integer ops with no dot product in them: the residual add,
requantize (concat inputs, clamps), max and average pooling, and depthwise convolution
(`hexagon.depthwise`).

A kernel is rebuilt from the portable one's operands and attributes, computing the same
numbers (`qcompiler.kernels` is the contract; the reference is unchanged), with two changes:
the requantizing multiply runs in 32-bit lanes (`fixed_point32`; LLVM scalarizes the int64
formula on HVX, which has no 64-bit lanes), and the innermost output loop is vectorized to
whole HVX vectors (128 bytes of output). A loop whose extent is not a multiple of the vector
is partitioned: whole vectors, then a scalar tail. The portable kernel stays where that
would not pay or not be exact: an add whose rescaled terms could overflow int32, strided
pools (a strided read is a gather, lane by lane) and pools whose rows are under 64 bytes
(part-vectors are scalar code), and the mean (in NCHW its rows are the short H x W planes).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from qcompiler.schedules.fixed_point32 import (
    SATURATED,
    clamp_cast32,
    q_multiply_shift32,
    shift_kind32,
)
from qcompiler.schedules.hexagon.depthwise import depthwise_conv2d
from qcompiler.schedules.hexagon.loops import (
    MIN_ROW_BYTES,
    VECTOR_BYTES,
    lanes,
    params,
    vectorize_loop,
)
from qcompiler.schedules.vector_rule import VectorRule
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.numerics.qparams import dtype_range
from qcompiler.numerics.requantize import RequantizeAttrs, q_multiply_shift
from qcompiler.numerics.shapes import pool2d_out_hw


def _term_bound(dtype: str, zp: int, m0: int, shift: int) -> int | None:
    """max |q_multiply_shift(x - zp, m0, shift)| over the dtype, if `fixed_point32` is exact
    on it (None otherwise)."""
    lo, hi = dtype_range(dtype)
    bound = int(np.abs(q_multiply_shift(np.array([lo - zp, hi - zp]), m0, shift)).max())
    return bound if bound < SATURATED else None


def _elementwise(tensors: list, n_lanes: int) -> tirx.PrimFunc:
    """The last tensor's loops fused and vectorized."""
    sch = tvm.s_tir.Schedule(te.create_prim_func(tensors))
    block = sch.get_sblock(tensors[-1].op.name)
    vectorize_loop(sch, sch.fuse(*sch.get_loops(block)), n_lanes)
    return sch.mod["main"]


def add(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    """`kernels.add` with both rescaled terms and their sum in int32 (checked here)."""
    rq = RequantizeAttrs.from_attrs(attrs)
    (shape, a_dtype), (_, b_dtype), (_, out_dtype) = params(func)
    ta = _term_bound(a_dtype, attrs["zp_a"], attrs["m0_a"], attrs["shift_a"])
    tb = _term_bound(b_dtype, attrs["zp_b"], attrs["m0_b"], attrs["shift_b"])
    k = attrs["k"]
    rnd = (1 << k) >> 1
    if ta is None or tb is None or ta + tb + rnd >= 1 << 31:
        return None
    a = te.placeholder(shape, a_dtype, name="a")
    b = te.placeholder(shape, b_dtype, name="b")

    def body(*i: Any) -> Any:
        sa = q_multiply_shift32(a[i].astype("int32") - attrs["zp_a"], attrs["m0_a"],
                                attrs["shift_a"])
        sb = q_multiply_shift32(b[i].astype("int32") - attrs["zp_b"], attrs["m0_b"],
                                attrs["shift_b"])
        return clamp_cast32((sa + sb + rnd) >> k, rq.zp_y, rq.lo, rq.hi,
                            out_dtype)

    return _elementwise([a, b, te.compute(shape, body, name="add")], lanes(out_dtype))


def requantize(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    """`kernels.requantize`; its clamp follows the multiply, so saturation is exact."""
    rq = RequantizeAttrs.from_attrs(attrs)
    (shape, x_dtype), (_, out_dtype) = params(func)
    x = te.placeholder(shape, x_dtype, name="x")
    y = te.compute(shape, lambda *i: clamp_cast32(q_multiply_shift32(
        x[i].astype("int32") - attrs["zp_x"], attrs["m0"], attrs["shift"]),
        rq.zp_y, rq.lo, rq.hi, out_dtype), name="requantize")
    return _elementwise([x, y], lanes(out_dtype))


def mul(func: tirx.PrimFunc, attrs: dict, consts: list, min_bytes: int = MIN_ROW_BYTES
        ) -> tirx.PrimFunc | None:
    """`kernels.mul` on 8-bit operands (the product exact in int32), the multiply in 32-bit
    lanes; the lanes run along the trailing axes over which each operand is whole or
    broadcast (an SE gate's channel scalar times its plane: the plane), so no lane gathers.
    None where that run is under `min_bytes` of output (HVX: part-vectors are scalar code;
    mobilenet_v3_small's 4x4 SE planes took 1.3x the portable kernel's packets)."""
    rq = RequantizeAttrs.from_attrs(attrs)
    (a_shape, a_dtype), (b_shape, b_dtype), (m_shape, _), _, (shape, out_dtype) = params(func)
    if any(np.dtype(d).itemsize != 1 for d in (a_dtype, b_dtype)):
        return None
    shifts = consts[3]
    kind = shift_kind32(shifts)
    prim = kernels.mul(shape, a_shape, a_dtype, b_shape, b_dtype, m_shape, attrs,
                       lambda prod, m0, shift: clamp_cast32(q_multiply_shift32(
                           prod, m0, shift, kind), rq.zp_y, rq.lo, rq.hi, out_dtype))
    k = _lane_axes(shape, [a_shape, b_shape, m_shape])
    if k == len(shape) or np.prod(shape[k:]) * np.dtype(out_dtype).itemsize < min_bytes:
        return None
    sch = tvm.s_tir.Schedule(prim)
    loops = sch.get_loops(sch.get_sblock("mul"))
    vectorize_loop(sch, sch.fuse(*loops[k:]) if len(shape) - k > 1 else loops[k],
                   lanes(out_dtype))
    return sch.mod["main"]


def _lane_axes(shape: tuple, operands: list[tuple]) -> int:
    """The first of the trailing axes that lanes can run along: over them, each operand is
    whole (its element at every output index) or one value (broadcast); size-1 axes fit
    either way."""
    def fits(k: int) -> bool:
        for s in operands:
            s = (1,) * (len(shape) - len(s)) + tuple(s)
            whole = {s[j] == shape[j] for j in range(k, len(shape)) if shape[j] != 1}
            if len(whole) > 1:
                return False
        return True

    k = len(shape)
    while k > 0 and fits(k - 1):
        k -= 1
    return k


def _padded(x: te.Tensor, attrs: dict, value: Any) -> te.Tensor:
    """x padded with `value` (x itself without padding): windows then read it without a
    per-lane bounds test, which TVM's vectorizer would turn back into scalar code."""
    n, c, h, w = (int(d) for d in x.shape)
    pt, pl, pb, pr = attrs["padding"]
    if not any(attrs["padding"]):
        return x
    return te.compute((n, c, h + pt + pb, w + pl + pr), lambda b, ch, i, j: tirx.if_then_else(
        tirx.all(i >= pt, i < h + pt, j >= pl, j < w + pl), x[b, ch, i - pt, j - pl], value),
        name="x_pad")



def _vector_rows(x_shape: tuple, dtype: str, attrs: dict) -> bool:
    """Whether output rows vectorize: unit column stride (a strided read is a gather, lane by
    lane) and rows of at least MIN_ROW_BYTES (LLVM loads and stores shorter vectors byte by
    byte on HVX: the portable kernel is as fast)."""
    _, ow = pool2d_out_hw(x_shape[2:], attrs)
    return attrs["strides"][1] == 1 and ow * np.dtype(dtype).itemsize >= MIN_ROW_BYTES


def _window_sum(xp: te.Tensor, out_shape: tuple, attrs: dict, reduce: Callable,
                value: Callable, name: str) -> te.Tensor:
    """`reduce` over each window of the padded input `xp` (of `value(element)`)."""
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["strides"]
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(out_shape, lambda b, ch, i, j: reduce(
        value(xp[b, ch, i * sh + ry, j * sw + rx]), axis=[ry, rx]), name=name)


def _vectorize_rows(sch: tvm.s_tir.Schedule, reduce_block: str, out_block: str,
                    n_lanes: int) -> tirx.PrimFunc:
    """The padding copy a row at a time; per output row, the window reduction with the row's
    columns as vector lanes (window taps outside), then the epilogue (if any) on them."""
    if "x_pad" in sch.mod["main"].script():  # (the schedule has no lookup that may fail)
        vectorize_loop(sch, sch.get_loops(sch.get_sblock("x_pad"))[-1], VECTOR_BYTES,
                       partition=True)
    out = sch.get_sblock(out_block)
    b, ch, i, j = sch.get_loops(out)[:4]
    row = sch.fuse(b, ch, i)
    if reduce_block != out_block:
        sch.compute_at(sch.get_sblock(reduce_block), row)
        vectorize_loop(sch, j, n_lanes)
    jr, ry, rx = sch.get_loops(sch.get_sblock(reduce_block))[-3:]
    sch.reorder(ry, rx, jr)
    vectorize_loop(sch, jr, n_lanes)
    return sch.mod["main"]


def max_pool2d(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    """`kernels.max_pool2d` (padding at the dtype's minimum), the output row's columns as
    lanes."""
    (x_shape, dtype), (y_shape, _) = params(func)
    if not _vector_rows(x_shape, dtype, attrs):
        return None
    x = te.placeholder(x_shape, dtype, name="x")
    xp = _padded(x, attrs, tirx.const(attrs["dtype_min"], dtype))
    y = _window_sum(xp, y_shape, attrs, te.max, lambda v: v, "max_pool")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    return _vectorize_rows(sch, "max_pool", "max_pool", lanes(dtype))


def avg_pool2d(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    """`kernels.avg_pool2d` (padding at zp_x, so it adds 0): window sums in int32 lanes,
    then the per-position multiply."""
    rq = RequantizeAttrs.from_attrs(attrs)
    (x_shape, dtype), (m_shape, _), _, (y_shape, out_dtype) = params(func)
    if not _vector_rows(x_shape, dtype, attrs):
        return None
    x = te.placeholder(x_shape, dtype, name="x")
    m0 = te.placeholder(m_shape, "int32", name="m0")
    sh = te.placeholder(m_shape, "int32", name="shift")
    xp = _padded(x, attrs, tirx.const(attrs["zp_x"], dtype))
    acc = _window_sum(xp, y_shape, attrs, te.sum,
                      lambda v: v.astype("int32") - attrs["zp_x"], "pool_sum")
    right = consts[2] is not None and bool(np.all(consts[2] <= -1))
    y = te.compute(y_shape, lambda b, ch, i, j: clamp_cast32(q_multiply_shift32(
        acc[b, ch, i, j], m0[i, j], sh[i, j], "right" if right else "any"),
        rq.zp_y, rq.lo, rq.hi, out_dtype), name="avg_pool")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, m0, sh, y]))
    return _vectorize_rows(sch, "pool_sum", "avg_pool", lanes(dtype))


HVX_VECTOR = VectorRule("hvx_vector", {"add": add, "requantize": requantize, "mul": mul,
                                       "max_pool2d": max_pool2d, "avg_pool2d": avg_pool2d,
                                       "conv2d": depthwise_conv2d})
"""Accepts, on NCHW activations of any batch and shape and any 8- or 16-bit dtype:
- add of two tensors of one shape, when both rescaled terms and their sum fit int32 (`add`);
- requantize (concat inputs, clamps), any shape;
- mul of two 8-bit tensors (one or both broadcast, e.g. an SE gate), any shapes, when the
  lanes' run is at least MIN_ROW_BYTES (`mul`);
- max and average pooling, any kernel kh x kw, row stride and padding, when the column stride
  is 1 and output rows are at least MIN_ROW_BYTES (`_vector_rows`);
- depthwise conv2d (groups == channels, multiplier 1), stride 1, any kernel, dilation and
  padding, int8 weights (`hexagon.depthwise.depthwise_conv2d`).
Every other kernel of those ops (a builder returns None) keeps the portable kernel."""
