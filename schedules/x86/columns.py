"""Convolutions with few multiply-adds per output (1x1 with few input channels, the stems of
RGB inputs) on `vpdpbusd` with output columns, not output channels, in the lanes.

The channel-lane kernel (`dot_product`) ends every block with 16 channels of one column,
which NCHW stores one byte at a time (16 `vpextrb` a vector): with few multiply-adds per
output that epilogue costs more than the dot products (64 -> 256 1x1 at 56x56: 19% of peak
there, 28% here). Here the 16 lanes are 16 columns of one channel and the weight group is
broadcast:

    acc[n, o, y, x] = sum_{c/4, ky, kx, c%4} xp[n, c/4, phase, row, x + kx dw / P, c%4]
                                              * wp[o, c/4, ky, kx, c%4]

so the requantize epilogue (`schedules.epilogue`) is a vector over a row with the channel's
constants broadcast, stored as it is. The activations are packed in the kernel to 4-channel
groups, padded with zp_x, and, for a strided filter wider than 1, split by column phase
(`col = jj sw + phase`, P = sw phases) so each tap of 16 output columns is one contiguous
64-byte load; a 1x1 filter packs only the rows and columns it reads. Rows are padded to
whole vectors (the extra columns are computed and never stored), which is why only widths
that waste little take this rule.

Operands are the dot-product rule's with L = 1: weights `weight_layout.pack(w, 1)`, the zero
point folded into the bias; the attributes say `packed_lanes: 1`, which the reference reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import tvm
from qcompiler.schedules.dot_product import packed_params
from qcompiler.schedules.x86.epilogue import LANES, requantize_rows, schedule_rows
from tvm import te, tirx

from qcompiler.numerics.shapes import ceil_div, conv2d_out_hw
from qcompiler.numerics.weight_layout import folded_bias, pack

MAX_WASTE = 1.15  # padded row / real row: 14 -> 16 passes, 7 -> 16 does not
# Past this many multiply-adds per output the dot products outweigh the byte-wise epilogue,
# and the channel-lane kernel, which reuses each weight vector over 14-16 columns, is faster
# (measured on MobileNetV2 and ResNet-50 1x1 layers: 144 -> 24 at 56x56 31% of peak here
# against 24%, 192 -> 32 at 28x28 27% against 29%). A strided 1x1 still packs only the
# pixels it reads, which the channel-lane kernel does not.
MAX_MACS = 160
# Accumulator vectors per register block: under TVM's 1 KiB limit for stack buffers (a larger
# block comes from the workspace pool on every row, which costs more than it saves).
MAX_ACCUMULATORS = 15



def _geometry(x_shape: tuple, w_shape: tuple, attrs: dict) -> dict:
    """Output size and the packed layout: column phases P, rows and columns packed."""
    _, _, h, w_ = x_shape
    kh, kw = w_shape[2:]
    (sh, sw), (_, dw) = attrs["strides"], attrs["dilation"]
    pt, pl, pb, pr = attrs["padding"]
    oh, ow = conv2d_out_hw(x_shape, w_shape, attrs)
    ow_v = ceil_div(ow, LANES) * LANES
    phases = sw if kw > 1 else 1
    row_step, col_step = (sh if kh == 1 else 1), (sw if kw == 1 else 1)
    rows = oh if kh == 1 else h + pt + pb
    width = ow_v + (kw - 1) * dw // phases
    return {"oh": oh, "ow": ow, "ow_v": ow_v, "phases": phases, "rows": rows,
            "width": width, "row_step": row_step, "col_step": col_step}


def columns_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                    shifts: str = "any") -> list:
    n, cin, h, w_ = x_shape
    cout, _, kh, kw = w_shape
    (sh, _), (dh, dw) = attrs["strides"], attrs["dilation"]
    pt, pl, _, _ = attrs["padding"]
    g = _geometry(x_shape, w_shape, attrs)
    c4, P = ceil_div(cin, 4), g["phases"]
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wp = packed_params(w_shape, 1, attrs)

    def packed(b, cb, p, r, jj, ci):  # noqa: ANN001, ANN202
        # One condition, one constant (zp_x: also in the channel tail, whose weights are 0).
        i, j = r * g["row_step"] - pt, (jj * P + p) * g["col_step"] - pl
        inside = [i >= 0, i < h, j >= 0, j < w_] + ([cb * 4 + ci < cin] if cin % 4 else [])
        return tirx.if_then_else(
            tirx.all(*inside),
            x[b, tirx.min(cb * 4 + ci, cin - 1), tirx.max(tirx.min(i, h - 1), 0),
              tirx.max(tirx.min(j, w_ - 1), 0)],
            tirx.const(attrs["zp_x"], x_dtype))

    xp = te.compute((n, c4, P, g["rows"], g["width"], 4), packed, name="x_packed")
    rcb = te.reduce_axis((0, c4), name="rcb")
    rky = te.reduce_axis((0, kh), name="rky")
    rkx = te.reduce_axis((0, kw), name="rkx")
    rci = te.reduce_axis((0, 4), name="rci")
    acc = te.compute(
        (n, cout, g["oh"], g["ow_v"]),
        lambda b, o, i, j: te.sum(
            xp[b, rcb, rkx * dw % P, (i * sh + rky * dh) // g["row_step"],
               j + rkx * dw // P, rci].astype("int32")
            * wp[o, rcb, rky, rkx, 0, rci].astype("int32"), axis=[rcb, rky, rkx, rci]),
        name="acc")
    y = requantize_rows(acc, (n, cout, g["oh"], g["ow"]), lambda o: params[1][o], params,
                        attrs, shifts)
    return [x, *params, y]


def schedule_columns(sch: tvm.s_tir.Schedule, intrin: str) -> None:
    """Register blocks of K channels x J vectors of 16 columns, the reduction outside them;
    per output row and channel block, the epilogue right after its accumulators."""
    block = sch.get_sblock("acc")
    b, o, i, j, rcb, rky, rkx, rci = sch.get_loops(block)
    vectors, cout = int(sch.get(j).extent) // LANES, int(sch.get(o).extent)
    blocks = [(k * v, v, k) for v in range(1, vectors + 1) if vectors % v == 0
              for k in range(1, MAX_ACCUMULATORS // v + 1) if cout % k == 0]
    _, cols, chans = max(blocks)  # most accumulators, then the most columns
    oo, oi = sch.split(o, [None, chans])
    jo, ji = sch.split(j, [None, LANES])
    joo, joi = sch.split(jo, [None, cols])
    sch.reorder(b, oo, i, joo, rcb, rky, rkx, oi, joi, ji, rci)
    rows = sch.fuse(b, oo, i)  # threads take (batch, channel block, row): disjoint outputs
    sch.parallel(rows)
    schedule_rows(sch, rows)
    sch.decompose_reduction(block, rcb)
    sch.unroll(oi)
    sch.unroll(joi)
    sch.tensorize(ji, intrin)
    pack_block = sch.get_sblock("x_packed")
    loops = sch.get_loops(pack_block)
    fused = sch.fuse(*loops[:2])
    sch.parallel(fused)
    if sch.can_decompose_padding(pack_block, fused):
        sch.decompose_padding(pack_block, fused)


@dataclass(frozen=True)
class Columns:
    """conv2d (groups 1) with output columns in the `vpdpbusd` lanes.

    Accepts: conv2d with groups == 1 on uint8 NCHW activations, any batch and channels, any
    kernel kh x kw, strides and dilations (>= 1, height and width apart), any padding; int8
    weights (4-bit layers go to `X86_VNNI`: `schedules._plan`), int32 bias, output per
    `out_dtype`; where `fits`: at most MAX_MACS multiply-adds per output (cin kh kw) or a
    strided 1x1, and output rows that pad to whole 16-column vectors with at most MAX_WASTE.
    """

    name: str

    def applies(self, op: str, attrs: dict, x_dtype: str) -> bool:
        return op == "conv2d" and x_dtype == "uint8" and attrs["groups"] == 1

    def fits(self, x_shape: tuple, w_shape: tuple, attrs: dict) -> bool:
        """Few multiply-adds per output (or a strided 1x1), over output rows that pad to
        whole vectors with little waste."""
        g = _geometry(x_shape, w_shape, attrs)
        macs = x_shape[1] * w_shape[2] * w_shape[3]
        strided_1x1 = tuple(w_shape[2:]) == (1, 1) and max(attrs["strides"]) > 1
        return (macs <= MAX_MACS or strided_1x1) and g["ow_v"] <= MAX_WASTE * g["ow"]

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              shifts: str = "any") -> tirx.PrimFunc:
        """`shifts`: `schedules.shift_kind` of the layer (the epilogue's form)."""
        from qcompiler.schedules.x86.vnni import VNNI_COLUMNS_INTRIN

        sch = tvm.s_tir.Schedule(te.create_prim_func(
            columns_compute(x_shape, x_dtype, w_shape, attrs, shifts)))
        schedule_columns(sch, VNNI_COLUMNS_INTRIN)
        packed_attrs = {**attrs, "packed_lanes": 1, "w_shape": list(w_shape)}
        return sch.mod["main"].with_attr({"qcompiler.op": op,
                                          "qcompiler.attrs": json.dumps(packed_attrs),
                                          "qcompiler.schedule": self.name})

    def pack_operands(self, w: np.ndarray, bias: np.ndarray, attrs: dict
                      ) -> tuple[np.ndarray, np.ndarray]:
        return pack(w, 1), folded_bias(w, bias, attrs["zp_x"])


X86_VNNI_COLUMNS = Columns("x86_vnni_columns")
