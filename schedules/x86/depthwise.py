"""Depthwise conv2d (groups == channels, one filter per channel) for x86.

Every output channel reads its own activations, so the channel-lane dot product of the dense
convs does not fit. Instead, per channel (the parallel loop) the input is padded with zp_x
once, and each output row is a row of 16-lane int32 accumulators over the taps, followed by
the requantize epilogue on that row (`schedules.epilogue`):

    acc[b, c, y, x] = sum_{ky, kx} xp[b, c, y sh + ky dh, x sw + kx dw] w[c, ky, kx]
                      - zp_x * sum_{ky, kx} w[c, ky, kx]          (= sum (x - zp_x) w, exact)

Two inner products:
- `vpdpbusd` (AVX-512 VNNI): the taps of a filter row, zero-padded to groups of 4, are one
  dot product per output column; `vpermd` + `vpshufb` gather each column's 4 bytes from one
  64-byte load (`x86_vnni.VNNI_WINDOW_INTRIN`), so a 3x3 filter costs 9 vector instructions
  per 16 outputs (3 a filter row) instead of 27 (widen, multiply, add a tap). Unit dilation
  along the width, stride 1 or 2.
- plain vector code otherwise (AVX2, other strides): taps unrolled, raw u8 x s8 products
  (LLVM maps them to `vpmaddwd`: both fit in 16 bits); a strided row is first split by
  column phase so each tap is a contiguous load (at stride 2 by a vector deinterleave,
  `deinterleave_intrin`: done byte by byte it was 60% of a stride-2 layer's time).

Same operands and attributes as the portable kernel (`qcompiler.kernels.conv2d`), so the
reference reads it unchanged.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import numpy as np
import tvm
from qcompiler.schedules.axis_loops import axis_loops
from qcompiler.schedules.dot_product import has_block
from qcompiler.schedules.x86.epilogue import LANES, requantize_rows, schedule_rows
from tvm import te, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from qcompiler import kernels
from qcompiler.numerics.shapes import ceil_div, conv2d_out_hw

DEINTERLEAVE = 16  # columns of each phase one deinterleave writes (from 32 bytes of a row)


@functools.cache
def deinterleave_intrin(width: int, dtype: str) -> str:
    """`B[p, j] = A[2 j + p]` (p < 2, j < width): a row's even and odd values into two rows,
    16 of each per 32-value load and shuffle (LLVM's generic `shufflevector`: for bytes
    `vpshufb`/`vpackuswb` on any x86 ISA), the last `width % 16` one at a time. TVM makes a
    stride-2 vector load 16 single-element inserts. Reads `2 width` values of A, rounded up
    to whole 32-value loads (the kernel's padded row has them)."""
    name = f"qcompiler_deinterleave_2x{width}_{dtype}"
    vector = f"{dtype}x{2 * DEINTERLEAVE}"
    whole = width // DEINTERLEAVE
    even = [2 * k for k in range(DEINTERLEAVE)]
    odd = [2 * k + 1 for k in range(DEINTERLEAVE)]

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle) -> None:
        A = T.match_buffer(a, (2 * width,), dtype, offset_factor=1)
        s = T.int32()
        B = T.match_buffer(b, (2, width), dtype, offset_factor=1, strides=[s, 1])
        with T.sblock("root"):
            T.reads(A[0:2 * width])
            T.writes(B[0:2, 0:width])
            for p, j in T.grid(2, width):
                with T.sblock("x_phase"):
                    vp, vj = T.axis.remap("SS", [p, j])
                    B[vp, vj] = A[vj * 2 + vp]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle) -> None:
        A = T.match_buffer(a, (2 * width,), dtype, offset_factor=1)
        s = T.int32()
        B = T.match_buffer(b, (2, width), dtype, offset_factor=1, strides=[s, 1])
        with T.sblock("root"):
            T.reads(A[0:2 * width])
            T.writes(B[0:2, 0:width])
            for k in T.unroll(whole):
                B[0, T.ramp(k * DEINTERLEAVE, 1, DEINTERLEAVE)] = T.Shuffle(
                    [A.vload([k * 2 * DEINTERLEAVE], vector)], even)
                B[1, T.ramp(k * DEINTERLEAVE, 1, DEINTERLEAVE)] = T.Shuffle(
                    [A.vload([k * 2 * DEINTERLEAVE], vector)], odd)
            for j in T.unroll(whole * DEINTERLEAVE, width):
                B[0, j] = A[2 * j]
                B[1, j] = A[2 * j + 1]

    TensorIntrin.register(name, desc, impl, override=True)
    return name


def register_named(name: str) -> None:
    """Register the intrinsic `deinterleave_intrin` names `name` (`intrinsics.
    register_named`: a trace that names it replays in any process); others are left alone."""
    m = re.fullmatch(r"qcompiler_deinterleave_2x(\d+)_(u?int(?:8|16))", name)
    if m is not None:
        deinterleave_intrin(int(m[1]), m[2])



def depthwise_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                      window: bool = False, shifts: str = "any") -> list:
    """The kernel's tensors; `window`: the taps of a row in groups of 4 for `vpdpbusd`;
    `shifts`: `schedules.shift_kind` of the layer (the epilogue's form)."""
    n, c, h, w_ = x_shape
    _, _, kh, kw = w_shape
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["padding"]
    dh, dw = attrs["dilation"]
    zp = attrs["zp_x"]
    oh, ow = conv2d_out_hw(x_shape, w_shape, attrs)
    # Rows are computed LANES columns at a time, so they are padded to whole vectors (the
    # extra columns read zp_x and are never stored).
    ow_v = ceil_div(ow, LANES) * LANES
    taps = 4 * ceil_div(kw, 4) if window else kw
    if window or sw == 1:
        width = max(w_ + pl + pr, (ow_v - 1) * sw + (taps - 1) * dw + 1)
    else:
        width = max(w_ + pl + pr, _phase_width(ow_v, kw, dw, sw) * sw)
    rows = h + pt + pb  # (the window intrinsic reads no byte past its window: a masked load)
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wt = kernels._channel_params(w_shape, attrs)  # int8 weights (no nibbles here)
    xp = te.compute(
        (n, c, rows, width),
        lambda b, ch, i, j: tirx.if_then_else(
            tirx.all(i >= pt, i < h + pt, j >= pl, j < w_ + pl),
            x[b, ch, i - pt, j - pl], tirx.const(zp, x_dtype)),
        name="x_pad")
    ry = te.reduce_axis((0, kh), name="ry")
    if window:
        wg = te.compute((c, kh, taps), lambda ch, ky, k: tirx.if_then_else(
            k < kw, wt[ch, 0, ky, tirx.min(k, kw - 1)], tirx.const(0, "int8")),
            name="w_groups")
        rg = te.reduce_axis((0, taps // 4), name="rg")
        rk = te.reduce_axis((0, 4), name="rk")
        raw = te.compute(
            (n, c, oh, ow_v),
            lambda b, ch, i, j: te.sum(
                xp[b, ch, i * sh + ry * dh, j * sw + rg * 4 + rk].astype("int32")
                * wg[ch, ry, rg * 4 + rk].astype("int32"), axis=[ry, rg, rk]),
            name="acc")
    else:
        tap = _tap(xp, (n, c, rows, width), sw, kw, dw, ow_v)
        rx = te.reduce_axis((0, kw), name="rx")
        raw = te.compute(
            (n, c, oh, ow_v),
            lambda b, ch, i, j: te.sum(
                tap(b, ch, i * sh + ry * dh, j, rx).astype("int32")
                * wt[ch, 0, ry, rx].astype("int32"), axis=[ry, rx]),
            name="acc")

    def constant(ch):  # noqa: ANN001, ANN202
        # The sum of weights written out, not a reduction stage: the epilogue is computed at
        # each row of `acc`, which needs every producer it reads inside that row's loop.
        wsum = sum(wt[ch, 0, ky, kx].astype("int32") for ky in range(kh) for kx in range(kw))
        return params[1][ch] - zp * wsum

    y = requantize_rows(raw, (n, c, oh, ow), constant, params, attrs, shifts)
    return [x, *params, y]


def _phase_width(ow_v: int, kw: int, dw: int, sw: int) -> int:
    """Columns of one phase: what the taps read."""
    return ow_v + (kw - 1) * dw // sw


def _tap(xp: te.Tensor, shape: tuple, sw: int, kw: int, dw: int, ow_v: int):  # noqa: ANN202
    """`tap(b, c, i, j, kx)` = xp[b, c, i, j sw + kx dw], through the columns split by phase
    when strided (`col = jj sw + phase`), so each tap of a row is a contiguous load."""
    if sw == 1:
        return lambda b, ch, i, j, kx: xp[b, ch, i, j + kx * dw]
    n, c, rows, _ = shape
    phases = te.compute((n, c, rows, sw, _phase_width(ow_v, kw, dw, sw)),
                        lambda b, ch, i, p, jj: xp[b, ch, i, jj * sw + p], name="x_phase")
    return lambda b, ch, i, j, kx: phases[b, ch, i, kx * dw % sw, j + kx * dw // sw]


def schedule_depthwise(sch: tvm.s_tir.Schedule, intrin: str | None = None) -> None:
    """Channels in parallel; per channel the padded input (border filled apart from the
    copy, so neither loop has a condition), then row by row: the taps over a row of vector
    accumulators (`intrin`: the window intrinsic, for a compute with `window`), and the
    epilogue on the same row."""
    acc = sch.get_sblock("acc")
    b, ch, row, j, *taps = sch.get_loops(acc)
    bc = sch.fuse(b, ch)
    jo, ji = sch.split(j, [None, LANES])
    # The row of accumulators is the anchor: every stage before it computes what the whole
    # (vector-padded) row reads, and the epilogue only the columns that exist.
    schedule_rows(sch, row)
    for name in ("x_phase", "w_groups", "x_pad"):  # consumers first
        if has_block(sch, name):
            sch.compute_at(sch.get_sblock(name), bc)
    sch.parallel(bc)  # before the decompositions below: it refuses split writers
    if intrin is not None:
        ky, kg, k = taps
        sch.reorder(ky, kg, jo, ji, k)
        unrolled = [ky, kg, jo]
    else:
        ky, kx = taps
        sch.reorder(ky, kx, jo, ji)
        sch.vectorize(ji)
        unrolled = [ky, kx, jo]
    init = sch.decompose_reduction(acc, ky)
    if intrin is not None:
        sch.tensorize(ji, intrin)
    for loop in (*unrolled, sch.get_loops(init)[-2]):
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(init)[-1])
    pad, loop = sch.get_sblock("x_pad"), sch.get_loops(sch.get_sblock("x_pad"))[1]
    if sch.can_decompose_padding(pad, loop):  # (a layer with no padding at all has none)
        fill = sch.decompose_padding(pad, loop)
        sch.vectorize(sch.get_loops(fill)[-1])
    if has_block(sch, "x_phase"):
        _schedule_phases(sch, sch.get_sblock("x_phase"))


def _schedule_phases(sch: tvm.s_tir.Schedule, block: tvm.s_tir.SBlockRV) -> None:
    """The column split: at stride 2, both phases read, a row at a time by the vector
    deinterleave (`deinterleave_intrin`); else (row, column, phase), each phase a byte copy
    (LLVM leaves it scalar)."""
    axes = axis_loops(sch, block)
    p = axes.get(3)
    if p is None:  # no loop where every tap reads one phase (dw % sw == 0, kw 1)
        return
    phases = int(sch.get(block).writes[0].source.shape[3])  # the stride: every phase
    if phases == 2 and int(sch.get(p).extent) == 2 and 4 in axes \
            and int(sch.get(axes[4]).extent) >= DEINTERLEAVE:  # (stride 3 may read 2 of 3)
        sch.reorder(p, axes[4])
        dtype = str(sch.get(block).writes[0].source.dtype)
        sch.tensorize(p, deinterleave_intrin(int(sch.get(axes[4]).extent), dtype))
        return
    present = [axes[k] for k in (2, 4, 3) if k in axes]
    if len(present) > 1:
        sch.reorder(*present)
    sch.unroll(p)



@dataclass(frozen=True)
class Depthwise:
    """Depthwise conv2d as a kernel rule for `qcompiler.schedules`; `window`: on the VNNI
    window intrinsic where the layer allows it (else plain vector code).

    Accepts: conv2d with groups == input channels == output channels (depth multiplier 1;
    other grouped convs are left to the portable kernel), NCHW activations of any batch and
    size, any kernel kh x kw (1x1 included), any strides and dilations (each >= 1, height
    and width apart), any padding (asymmetric included); activations uint8 or int8, weights
    int8, int32 bias, output per `out_dtype`. The window form needs uint8 activations, width
    dilation 1 and width stride 1 or 2; every other layer takes the plain vector form.
    """

    name: str
    window: bool = False

    def applies(self, op: str, attrs: dict, x_dtype: str) -> bool:
        return op == "conv2d" and attrs["groups"] > 1

    def fits(self, x_shape: tuple, w_shape: tuple, attrs: dict) -> bool:
        """One input and one output channel per group (depth multiplier 1)."""
        return w_shape[1] == 1 and w_shape[0] == x_shape[1]

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              shifts: str = "any") -> tirx.PrimFunc:
        """`shifts`: `schedules.shift_kind` of the layer (the epilogue's form)."""
        stride = attrs["strides"][1]
        window = (self.window and x_dtype == "uint8" and attrs["dilation"][1] == 1
                  and stride in (1, 2))
        sch = tvm.s_tir.Schedule(te.create_prim_func(
            depthwise_compute(x_shape, x_dtype, w_shape, attrs, window, shifts)))
        intrin = None
        if window:
            from qcompiler.schedules.x86.vnni import VNNI_WINDOW_INTRIN

            intrin = VNNI_WINDOW_INTRIN[stride]
        schedule_depthwise(sch, intrin)
        return sch.mod["main"].with_attr({"qcompiler.op": op,
                                          "qcompiler.attrs": json.dumps(attrs),
                                          "qcompiler.schedule": self.name})

    def pack_operands(self, w: np.ndarray, bias: np.ndarray, attrs: dict
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The portable kernel's operands, unchanged."""
        return w, bias


DEPTHWISE = Depthwise("depthwise")
DEPTHWISE_VNNI = Depthwise("x86_vnni_depthwise", window=True)
