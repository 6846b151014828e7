"""Depthwise conv2d (groups == channels, one filter per channel) for CPUs without a dot product
that fits it: `vpdpbusd` broadcasts one activation over 16 output channels, but here every
output channel reads its own activations, so the kernel is plain vector code instead.

Same operands and attributes as the portable kernel (`qcompiler.kernels.conv2d`), so the
reference reads it unchanged. Inside, per channel (the parallel loop), the input is padded
with zp_x once and split by column phase (`col = jj * sw + phase`), so every tap of a row is a
contiguous load even at stride 2:

    acc[b, c, y, x] = sum_{ky, kx} xp[b, c, (kx dw) % sw, y sh + ky dh, x + (kx dw) // sw] w[c, ky, kx]
                      - zp_x * sum_{ky, kx} w[c, ky, kx]          (= sum (x - zp_x) w, exact)

A whole output row is one vector (LLVM splits it into registers): taps unrolled, raw u8 x s8
products (which LLVM maps to `vpmaddwd`: both fit in 16 bits), int32 sums, and the requantize
epilogue on the row while it is in registers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te, tirx

from qcompiler import kernels


LANES = 16  # output columns per vector (int32 lanes of one AVX-512 register)


def _ceil(n: int, k: int) -> int:
    return (n + k - 1) // k


def depthwise_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict) -> list:
    n, c, h, w_ = x_shape
    _, _, kh, kw = w_shape
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["padding"]
    dh, dw = attrs["dilation"]
    zp = attrs["zp_x"]
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w_ + pl + pr - dw * (kw - 1) - 1) // sw + 1
    # Rows are computed LANES columns at a time, so they are padded to whole vectors (the
    # extra columns read zp_x and are never stored).
    ow_v = _ceil(ow, LANES) * LANES
    phase_w = ow_v + (kw - 1) * dw // sw
    width = max(w_ + pl + pr, phase_w * sw)
    x = te.placeholder(x_shape, x_dtype, name="x")
    params = kernels._channel_params(w_shape)
    wt = params[0]
    xp = te.compute(
        (n, c, h + pt + pb, width),
        lambda b, ch, i, j: tirx.if_then_else(
            tirx.all(i >= pt, i < h + pt, j >= pl, j < w_ + pl),
            x[b, ch, i - pt, j - pl], tirx.const(zp, x_dtype)),
        name="x_pad")
    if sw > 1:  # columns by phase: each tap of a strided row is then a contiguous load
        phases = te.compute((n, c, sw, h + pt + pb, phase_w),
                            lambda b, ch, p, i, jj: xp[b, ch, i, jj * sw + p], name="x_phase")

        def tap(b, ch, i, j):  # noqa: ANN001, ANN202
            return phases[b, ch, j[1] % sw, i, j[0] + j[1] // sw]
    else:
        def tap(b, ch, i, j):  # noqa: ANN001, ANN202
            return xp[b, ch, i, j[0] + j[1]]
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    raw = te.compute(
        (n, c, oh, ow_v),
        lambda b, ch, i, j: te.sum(
            tap(b, ch, i * sh + ry * dh, (j, rx * dw)).astype("int32")
            * wt[ch, 0, ry, rx].astype("int32"), axis=[ry, rx]),
        name="acc")

    def wsum(ch):  # noqa: ANN001, ANN202
        # Written out, not a reduction stage: the epilogue is computed at each row of `acc`,
        # which needs every producer it reads inside that row's loop.
        return sum(wt[ch, 0, ky, kx].astype("int32") for ky in range(kh) for kx in range(kw))

    acc = te.compute((n, c, oh, ow), lambda b, ch, i, j: raw[b, ch, i, j] - zp * wsum(ch),
                     name="acc_centered")
    y = kernels._requantize_channels(acc, 1, params, attrs)
    return [x, *params, y]


def schedule_depthwise(sch: tvm.s_tir.Schedule) -> None:
    """Channels in parallel; per channel the padded input (border filled apart from the
    copy, so neither loop has a condition), then row by row: the taps unrolled over a row of
    vector accumulators, and the requantize epilogue on the same row."""
    sch.compute_inline(sch.get_sblock("acc_centered"))
    acc = sch.get_sblock("acc")
    b, ch, row, j, ky, kx = sch.get_loops(acc)
    bc = sch.fuse(b, ch)
    jo, ji = sch.split(j, [None, LANES])
    sch.reorder(ky, kx, jo, ji)
    # The row of accumulators is the anchor: every stage before it computes what the whole
    # (vector-padded) row reads, and the epilogue only the columns that exist.
    sch.reverse_compute_at(sch.get_sblock("requantize"), row)
    pad = sch.get_sblock("x_pad")
    phase = _block_or_none(sch, "x_phase")
    if phase is not None:
        sch.compute_at(phase, bc)
    sch.compute_at(pad, bc)
    sch.parallel(bc)  # before the two decompositions below: it refuses split writers
    sch.vectorize(ji)
    vectorize_row(sch, sch.get_loops(sch.get_sblock("requantize"))[-1])
    init = sch.decompose_reduction(acc, ky)
    fill = sch.decompose_padding(pad, sch.get_loops(pad)[1])
    for loop in (ky, kx, jo, sch.get_loops(init)[-2]):
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(fill)[-1])
    if phase is not None:  # (row, column, phase): LLVM vectorizes it as an interleaved load
        p, i, jj = sch.get_loops(phase)[-3:]
        sch.reorder(i, jj, p)
        sch.unroll(p)


def _block_or_none(sch: tvm.s_tir.Schedule, name: str):  # noqa: ANN202
    try:
        return sch.get_sblock(name)
    except tvm.s_tir.ScheduleError:
        return None


def vectorize_row(sch: tvm.s_tir.Schedule, col: tvm.s_tir.LoopRV) -> None:
    """An epilogue loop over a row: whole vectors of LANES, then the rest as one shorter
    vector (one vector of a width that is no multiple of 16 makes LLVM split it badly)."""
    extent = int(sch.get(col).extent)
    whole = extent // LANES * LANES
    if whole and whole < extent:
        body, tail = sch.loop_partition(col, [whole, None])
    else:
        body, tail = (col, None) if whole else (None, col)
    if body is not None:
        sch.vectorize(sch.split(body, [None, LANES])[1])
    if tail is not None:
        sch.vectorize(tail)


@dataclass(frozen=True)
class Depthwise:
    """Depthwise conv2d as a kernel rule for `qcompiler.schedules` (any vector ISA)."""

    name: str

    def applies(self, op: str, attrs: dict, x_dtype: str) -> bool:
        return op == "conv2d" and attrs["groups"] > 1

    def fits(self, x_shape: tuple, w_shape: tuple, attrs: dict) -> bool:
        """One input and one output channel per group (depth multiplier 1)."""
        return w_shape[1] == 1 and w_shape[0] == x_shape[1]

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict
              ) -> tirx.PrimFunc:
        sch = tvm.s_tir.Schedule(te.create_prim_func(
            depthwise_compute(x_shape, x_dtype, w_shape, attrs)))
        schedule_depthwise(sch)
        return sch.mod["main"].with_attr({"qcompiler.op": op,
                                          "qcompiler.attrs": json.dumps(attrs),
                                          "qcompiler.schedule": self.name})

    def pack_operands(self, w: np.ndarray, bias: np.ndarray, attrs: dict
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The portable kernel's operands, unchanged."""
        return w, bias


DEPTHWISE = Depthwise("depthwise")
