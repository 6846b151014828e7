"""HVX vector kernels for the integer ops with no dot product in them: the residual add,
requantize (concat inputs, clamps), max and average pooling, and the mean (global pooling).

A kernel is rebuilt from the portable one's operands and attributes, computing the same
numbers (`qcompiler.kernels` is the contract; the reference is unchanged), with two changes:
the requantizing multiply runs in 32-bit lanes (`fixed_point32`; LLVM scalarizes the int64
formula on HVX, which has no 64-bit lanes), and the innermost output loop is vectorized to
whole HVX vectors (128 bytes of output). A loop whose extent is not a multiple of the vector
is partitioned: whole vectors, then a scalar tail. Where `fixed_point32` cannot promise the
same numbers (a saturating multiplier, an add whose rescaled terms could overflow int32), the
portable kernel stays.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import te, tirx

from qcompiler.qparams import dtype_range, q_multiply_shift
from qcompiler.schedules.fixed_point32 import SATURATED, clamp_cast32, q_multiply_shift32

VECTOR_BYTES = 128
Builder = Callable[[tirx.PrimFunc, dict, list], "tirx.PrimFunc | None"]


def lanes(dtype: str) -> int:
    """Elements of `dtype` in one HVX vector."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def vectorize_loop(sch: tvm.s_tir.Schedule, loop: Any, n_lanes: int) -> None:
    """Vectorize `loop` in chunks of `n_lanes` (whole loop if shorter); a tail runs scalar."""
    extent = int(sch.get(loop).extent)
    if extent <= n_lanes:
        sch.vectorize(loop)
        return
    outer, inner = sch.split(loop, [None, n_lanes])
    sch.vectorize(inner)
    if extent % n_lanes:
        sch.annotate(outer, "pragma_loop_partition_hint", 1)


def _params(func: tirx.PrimFunc) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(int(d) for d in p.shape), str(p.dtype)) for p in func.params]


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
    (shape, a_dtype), (_, b_dtype), (_, out_dtype) = _params(func)
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
        return clamp_cast32((sa + sb + rnd) >> k, attrs["zp_y"], attrs["lo"], attrs["hi"],
                            out_dtype)

    return _elementwise([a, b, te.compute(shape, body, name="add")], lanes(out_dtype))


def requantize(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    """`kernels.requantize`; its clamp follows the multiply, so saturation is exact."""
    (shape, x_dtype), (_, out_dtype) = _params(func)
    x = te.placeholder(shape, x_dtype, name="x")
    y = te.compute(shape, lambda *i: clamp_cast32(q_multiply_shift32(
        x[i].astype("int32") - attrs["zp_x"], attrs["m0"], attrs["shift"]),
        attrs["zp_y"], attrs["lo"], attrs["hi"], out_dtype), name="requantize")
    return _elementwise([x, y], lanes(out_dtype))


def _window(x: te.Tensor, x_shape: tuple, attrs: dict, pad: Any, value: Any) -> Callable:
    """`tap(b, c, i, j, ry, rx)`: the input under a pooling window, `pad` outside it."""
    _, _, h, w = x_shape
    sh, sw = attrs["strides"]
    pt, pl, _, _ = attrs["padding"]

    def tap(b: Any, ch: Any, i: Any, j: Any, ry: Any, rx: Any) -> Any:
        yy, xx = i * sh + ry - pt, j * sw + rx - pl
        return tirx.if_then_else(tirx.all(yy >= 0, yy < h, xx >= 0, xx < w),
                                 value(x[b, ch, yy, xx]), pad)

    return tap


def _out_hw(x_shape: tuple, attrs: dict) -> tuple[int, int]:
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["strides"]
    pt, pl, pb, pr = attrs["padding"]
    return (x_shape[2] + pt + pb - kh) // sh + 1, (x_shape[3] + pl + pr - kw) // sw + 1


def _vectorize_rows(sch: tvm.s_tir.Schedule, reduce_block: str, out_block: str,
                    n_lanes: int) -> tirx.PrimFunc:
    """Per output row: the window reduction with the row's columns as vector lanes
    (window taps outside), then the epilogue (if any) on the same lanes."""
    out = sch.get_sblock(out_block)
    b, ch, i, j = sch.get_loops(out)[:4]
    row = sch.fuse(b, ch, i)
    if reduce_block != out_block:
        sch.compute_at(sch.get_sblock(reduce_block), row)
        vectorize_loop(sch, j, n_lanes)
    red = sch.get_sblock(reduce_block)
    loops = sch.get_loops(red)
    jr, ry, rx = loops[-3:]
    sch.reorder(ry, rx, jr)
    sch.annotate(jr, "pragma_loop_partition_hint", 1)
    vectorize_loop(sch, jr, n_lanes)
    return sch.mod["main"]


def max_pool2d(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc:
    """`kernels.max_pool2d`, the output row's columns as lanes."""
    (x_shape, dtype), _ = _params(func)
    n, c = x_shape[:2]
    oh, ow = _out_hw(x_shape, attrs)
    x = te.placeholder(x_shape, dtype, name="x")
    tap = _window(x, x_shape, attrs, tirx.const(attrs["dtype_min"], dtype), lambda v: v)
    ry = te.reduce_axis((0, attrs["kernel"][0]), name="ry")
    rx = te.reduce_axis((0, attrs["kernel"][1]), name="rx")
    y = te.compute((n, c, oh, ow), lambda b, ch, i, j: te.max(tap(b, ch, i, j, ry, rx),
                                                              axis=[ry, rx]), name="max_pool")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    return _vectorize_rows(sch, "max_pool", "max_pool", lanes(dtype))


def avg_pool2d(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    """`kernels.avg_pool2d`: window sums in int32 lanes, then the per-position multiply."""
    (x_shape, dtype), (m_shape, _), _, (_, out_dtype) = _params(func)
    shift = consts[2]
    n, c = x_shape[:2]
    oh, ow = m_shape
    x = te.placeholder(x_shape, dtype, name="x")
    m0 = te.placeholder(m_shape, "int32", name="m0")
    sh = te.placeholder(m_shape, "int32", name="shift")
    tap = _window(x, x_shape, attrs, tirx.const(0, "int32"),
                  lambda v: v.astype("int32") - attrs["zp_x"])
    ry = te.reduce_axis((0, attrs["kernel"][0]), name="ry")
    rx = te.reduce_axis((0, attrs["kernel"][1]), name="rx")
    acc = te.compute((n, c, oh, ow), lambda b, ch, i, j: te.sum(tap(b, ch, i, j, ry, rx),
                                                                axis=[ry, rx]), name="pool_sum")
    right = shift is not None and bool(np.all(shift <= -1))
    y = te.compute((n, c, oh, ow), lambda b, ch, i, j: clamp_cast32(
        q_multiply_shift32(acc[b, ch, i, j], m0[i, j], sh[i, j], shifts="right" if right else "any"),
        attrs["zp_y"], attrs["lo"], attrs["hi"], out_dtype), name="avg_pool")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, m0, sh, y]))
    return _vectorize_rows(sch, "pool_sum", "avg_pool", lanes("int32"))


@dataclass(frozen=True)
class VectorRule:
    """Kernels rebuilt with the same operands and vectorized, as a rule for
    `qcompiler.schedules` (nothing is packed: the graph keeps its constants)."""

    name: str
    builders: dict[str, Builder] = field(hash=False)

    def applies(self, op: str, attrs: dict, x_dtype: str) -> bool:
        return op in self.builders

    def rebuild(self, func: tirx.PrimFunc, consts: list) -> tirx.PrimFunc | None:
        """The vector kernel, or None to keep `func`. `consts[i]`: parameter i's value when
        it is a graph constant (None otherwise)."""
        op = str(func.attrs["qcompiler.op"])
        new = self.builders[op](func, json.loads(str(func.attrs["qcompiler.attrs"])), consts)
        if new is None:
            return None
        return new.with_attr({"qcompiler.op": op, "qcompiler.attrs": func.attrs["qcompiler.attrs"],
                              "qcompiler.schedule": self.name})


HVX_VECTOR = VectorRule("hvx_vector", {"add": add, "requantize": requantize,
                                       "max_pool2d": max_pool2d, "avg_pool2d": avg_pool2d})
