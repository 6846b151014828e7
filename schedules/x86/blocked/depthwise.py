"""Depthwise conv2d over NCHW16c: 16 channels in the lanes, each tap a `vpdpbusd` over 4 taps
of one channel, planes beyond L1 padded a chunk of rows at a time."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tvm
from qcompiler.schedules.dot_product import DotProduct, has_block, split_tile
from qcompiler.schedules.x86 import vnni as x86_vnni
from qcompiler.schedules.x86.blocked.layout import BLOCK, with_attrs
from qcompiler.schedules.x86.blocked.stages import (
    CHUNKED_PLANE_BYTES,
    epilogue_attrs,
    epilogue_func,
    padded_input,
    requantize,
    schedule_epilogue,
    schedule_plane_pad,
    scheduled,
    shape_bytes,
)
from qcompiler.schedules.x86.lookup import lower_lookups
from qcompiler.schedules.x86.requantize import columns_apply
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.numerics.shapes import ceil_div, conv2d_out_hw

DEPTHWISE_COLUMNS = 15  # output columns per register block (as the conv's)
# A depthwise conv over a padded plane larger than `CHUNKED_PLANE_BYTES` pads its input a
# chunk of output rows at a time, in L1: the chunk's input rows up to `CHUNK_INPUT_ROWS`
# (measured on MobileNetV2's layers against the whole plane: stride 1 at 112 and 56 wide, 8
# output rows, 17-19% faster; stride 2, 4 output rows, 7-9% faster than one output row at a
# time, which had gained 25-30% over the whole plane; planes of 28 and 14, in L1 whole, gain
# nothing).
CHUNK_INPUT_ROWS = 10
CHUNK_ATTR = "qcompiler.chunk_rows"  # the workload's output rows per padded chunk (0: none)


def depthwise_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                      shifts: str = "any") -> tirx.PrimFunc:
    """The unscheduled kernel (`BlockedDepthwise.workload`). `w_shape`: the channel-padded
    (c, 1, kh, kw); the weight operand is `weight_layout.pack_depthwise(w, 16)`,
    (c/16, kh, kw/4, 16, 4), the bias folded.

    With unit dilation along the width, each filter row is `kw/4` groups of 4 taps, and the
    4 pixels of a group are one 64-byte load that `x86_vnni.VNNI_TAPS_INTRIN` turns into one
    `vpdpbusd` for 16 channels (3 instructions per group instead of 4 per tap). Otherwise the
    taps are unrolled in 32-bit lanes. A plane beyond `CHUNKED_PLANE_BYTES` carries the output
    rows of its padded chunks (attribute `CHUNK_ATTR`, 0: none)."""
    n, cb, h, w_, _ = x_shape
    c, _, kh, kw = w_shape
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilation"]
    oh, ow = conv2d_out_hw((n, c, h, w_), w_shape, attrs)
    groups = ceil_div(kw, 4)
    window = dw == 1
    x = te.placeholder(x_shape, x_dtype, name="x")
    wt = te.placeholder((cb, kh, groups, BLOCK, 4), "int8", name="w")
    params = (wt, *(te.placeholder((c,), "int32", name=nm) for nm in ("bias", "m0", "shift")))
    # The last group of 4 pixels of a row may reach past the padded input: zp_x columns.
    reach = (ow - 1) * sw + groups * 4 if window else 0
    xp = padded_input(x, attrs, reach)
    ry = te.reduce_axis((0, kh), name="ry")
    if window:
        rg = te.reduce_axis((0, groups), name="rg")
        rk = te.reduce_axis((0, 4), name="rk")
        acc = te.compute(
            (n, cb, oh, ow, BLOCK),
            lambda b, ob, i, j, oi: te.sum(
                xp[b, ob, i * sh + ry * dh, j * sw + rg * 4 + rk, oi].astype("int32")
                * wt[ob, ry, rg, oi, rk].astype("int32"), axis=[ry, rg, rk]),
            name="acc")
    else:
        rx = te.reduce_axis((0, kw), name="rx")
        acc = te.compute(
            (n, cb, oh, ow, BLOCK),
            lambda b, ob, i, j, oi: te.sum(
                xp[b, ob, i * sh + ry * dh, j * sw + rx * dw, oi].astype("int32")
                * wt[ob, ry, rx // 4, oi, rx % 4].astype("int32"), axis=[ry, rx]),
            name="acc")
    y = requantize(acc, params, attrs, shifts)
    chunk = chunk_rows(oh, sh, (kh - 1) * dh + 1) \
        if shape_bytes(xp) // cb > CHUNKED_PLANE_BYTES else 0
    return epilogue_func([x, *params, *(kernels.table_stage(y, attrs) or [y])], attrs,
                         shifts).with_attr(CHUNK_ATTR, chunk)


def depthwise(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              shifts: str = "any", vbmi: bool = False) -> tirx.PrimFunc:
    """The scheduled kernel with the fixed schedule (`plan_layout`'s). `vbmi`: the target has
    AVX-512 VBMI (the taps' transpose is one `vpermb`, `x86_vnni.VNNI_TAPS_VBMI_INTRIN`)."""
    op = "conv2d_lut" if "lut" in attrs else "conv2d"
    return depthwise_rule(vbmi).build(op, x_shape, x_dtype, w_shape, attrs, None, shifts)


def chunk_rows(oh: int, stride: int, reach: int) -> int:
    """Output rows per padded chunk: the most that divide `oh` and read at most
    `CHUNK_INPUT_ROWS` input rows (1 where the filter's `reach` alone is taller)."""
    fits = [r for r in range(2, oh + 1)
            if oh % r == 0 and (r - 1) * stride + reach <= CHUNK_INPUT_ROWS]
    return max(fits, default=1)


def _schedule_depthwise(sch: tvm.s_tir.Schedule, vbmi: bool, tunable: bool = False) -> None:
    """Channel blocks in parallel; per block its padded plane (while it is in cache; with
    chunks, the input rows of each chunk of output rows), then row by row register blocks of
    J columns, the taps outside them, the epilogue after each. Tuning samples J (up to
    `DEPTHWISE_COLUMNS`) and the rows of a chunk."""
    block = sch.get_sblock("acc")
    b, ob, i, j, oi, *taps = sch.get_loops(block)
    window = len(taps) == 3  # (ry, rg, rk): 4 taps of a row per instruction
    ow = int(sch.get(j).extent)
    chunk = int(sch.mod["main"].attrs[CHUNK_ATTR])
    epilogue = epilogue_attrs(sch)
    if epilogue is not None and ow % 4 == 0 and columns_apply(epilogue, 4):
        cols = 8 if ow % 8 == 0 else 4  # 4 columns at a time (measured: 10-12% faster)
    else:
        cols = max(d for d in range(1, DEPTHWISE_COLUMNS + 1) if ow % d == 0)
    jo, ji = split_tile(sch, j, cols, tunable, DEPTHWISE_COLUMNS)
    if window:
        sch.reorder(b, ob, i, jo, *taps[:-1], ji, oi, taps[-1])
    else:
        sch.reorder(b, ob, i, jo, *taps, ji, oi)
        sch.vectorize(oi)  # before the decomposition (a reduction block's loops can be)
    rows = split_tile(sch, i, chunk, tunable, int(sch.get(i).extent))[0] if chunk else None
    plane = sch.fuse(b, ob)
    schedule_epilogue(sch, jo)
    padded = has_block(sch, "x_pad")
    if padded:
        sch.compute_at(sch.get_sblock("x_pad"), rows if chunk else plane)
    sch.parallel(plane)  # before the decompositions: it refuses split writers
    init = sch.decompose_reduction(block, taps[0])
    if window:
        sch.tensorize(oi, x86_vnni.VNNI_TAPS_VBMI_INTRIN if vbmi else x86_vnni.VNNI_TAPS_INTRIN)
    for loop in (*taps[:-1], ji):
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(init)[-1])


@dataclass(frozen=True)
class BlockedDepthwise(DotProduct):
    """Depthwise conv2d on NCHW16c activations (`depthwise_compute`). A `DotProduct` so that
    tuning finds its kernels (`schedules.tunable_rules`); only `plan_layout` builds them.

    Accepts: uint8 activations blocked by 16, any batch and spatial size, weights
    channel-padded to (16k, 1, kh, kw) and packed by `weight_layout.pack_depthwise`, any
    kernel, strides, dilations and padding, int32 bias, any requantize shift, output per
    `out_dtype`; with attribute `lut`, a table applied to its output."""

    vbmi: bool = False  # the target has AVX-512 VBMI (the taps' transpose is one `vpermb`)

    def applies(self, op: str, attrs: dict, x_dtype: str) -> bool:
        return False  # chosen by `plan_layout`, not by `apply_schedules`

    def workload(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                 shifts: str = "any") -> tirx.PrimFunc:
        return depthwise_compute(x_shape, x_dtype, w_shape, attrs, shifts)

    def schedule(self, sch: tvm.s_tir.Schedule, tunable: bool = False) -> None:
        _schedule_depthwise(sch, self.vbmi, tunable)

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              trace: tvm.s_tir.Trace | None = None, shifts: str = "any") -> tirx.PrimFunc:
        sch = scheduled(self, op, x_shape, x_dtype, w_shape, attrs, trace, shifts)
        packed = {**attrs, "depthwise_lanes": BLOCK, "w_shape": list(w_shape)}
        return with_attrs(self.finish(sch, x_shape, attrs), op, packed, self.name)

    def finish(self, sch: tvm.s_tir.Schedule, x_shape: tuple, attrs: dict) -> tirx.PrimFunc:
        """The padded plane's rows (not tuned) and the table lookups' bodies."""
        if has_block(sch, "x_pad"):
            schedule_plane_pad(sch, attrs["padding"][1], x_shape[3])
        return lower_lookups(sch.mod["main"])


def _taps_intrinsic(vbmi: bool) -> Callable[[], str]:
    return lambda: x86_vnni.VNNI_TAPS_VBMI_INTRIN if vbmi else x86_vnni.VNNI_TAPS_INTRIN


def depthwise_rule(vbmi: bool) -> BlockedDepthwise:
    """The rule for a target with (or without) AVX-512 VBMI."""
    return BlockedDepthwise("x86_blocked_depthwise", BLOCK, "uint8", _taps_intrinsic(vbmi),
                            vbmi=vbmi)
