"""Kernels on activations blocked by 16 channels (NCHW16c), the layout `plan_layout` keeps
between the layers of an x86 VNNI graph.

A blocked tensor of C channels is `x5[n, c/16, h, w, c%16]`, its channels padded to whole
blocks. A blocked kernel is the portable kernel of the *channel-padded* layer: its constant
operands are padded too (weights 0, bias 0, multiplier 0), so a padded output channel holds
`clamp(zp_y, lo, hi)` and a padded input channel meets a zero weight. The reference therefore
runs the same contract formulas on the unblocked padded tensors (`reference._blocked`), and
a padded channel is bit-exact like any other.

Why the layout: `vpdpbusd` broadcasts 4 input channels of one pixel, which are 4 consecutive
bytes here (no packing stage), and its 16 output lanes are 16 channels of one pixel, which the
epilogue stores as one 16-byte vector (no byte scatter into NCHW planes):

    acc[n, o/16, y, x, o%16] = bias[o] + sum_{c/16, ky, kx, c/4%4, c%4}
        xp[n, c/16, y sh + ky dh, x sw + kx dw, c%16] * wp[o/16, c/4, ky, kx, o%16, c%4]

with `xp` the input padded with zp_x (a contiguous copy, only for padded convs), `wp`
`weight_layout.pack(w, 16)` and the bias folded (`b - zp_x sum w`). Depthwise convs, adds and
max pools are channel-wise and run on 16 channels as one vector.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from qcompiler.schedules.dot_product import DotProduct, has_block, packed_params, split_tile
from qcompiler.schedules.x86.bias_init import bias_init
from qcompiler.schedules.x86.dot import vpdpbusd_intrinsic
from qcompiler.schedules.x86.requantize import (
    COLUMNS,
    columns_apply,
    requantize_intrin,
    right_shift_epilogue,
)
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.numerics.qparams import dtype_range
from qcompiler.numerics.requantize import Q31, q_multiply_shift
from qcompiler.numerics.shapes import ceil_div, conv2d_out_hw, pool2d_out_hw
from qcompiler.numerics.weight_layout import folded_bias, pack

BLOCK = 16  # channels per block: the int32 lanes of one AVX-512 register
# The input of a stem (an NCHW graph input with few channels, e.g. RGB) is blocked by 4: one
# `vpdpbusd` group, so 3 channels are padded to 4, not 16; its output is NCHW16c as usual.
STEM_BLOCK = 4
LAYOUT = "NCHW16c"
EPILOGUE_ATTR = "qcompiler.epilogue"  # a right-shift epilogue's zp_y, lo, hi, out_dtype
# Output columns per register block of the conv: J x 16 int32 accumulators stay under TVM's
# 1 KiB for stack buffers (a larger block comes from the workspace pool on every iteration).
BLOCK_COLUMNS = 15
PAIRED_COLUMNS = 7  # with two channel blocks: 14 accumulators (or 8 columns: `_register_columns`)



def blocked_shape(shape: tuple, block: int = BLOCK) -> tuple[int, ...]:
    """(n, c, h, w) -> (n, c/16, h, w, 16), the channel count rounded up (`block`: 4 for
    the input of a stem, see `STEM_BLOCK`)."""
    n, c, h, w = shape
    return (n, ceil_div(c, block), h, w, block)


def padded_channels(c: int) -> int:
    return ceil_div(c, BLOCK) * BLOCK


def _with_attrs(func: tirx.PrimFunc, op: str, attrs: dict, schedule: str) -> tirx.PrimFunc:
    return func.with_attr({"qcompiler.op": op, "qcompiler.attrs": json.dumps(attrs),
                           "qcompiler.schedule": schedule})


# ---- layout changes, at the edges of a blocked region ----

def to_blocked(shape: tuple, dtype: str, pad: int, block: int = BLOCK) -> tirx.PrimFunc:
    """NCHW -> NCHW16c (or NCHW4c), the padded channels filled with `pad` (the tensor's zero
    point)."""
    n, c, h, w = shape
    x = te.placeholder(shape, dtype, name="x")
    y = te.compute(blocked_shape(shape, block), lambda b, cb, i, j, ci: tirx.if_then_else(
        cb * block + ci < c, x[b, tirx.min(cb * block + ci, c - 1), i, j],
        tirx.const(pad, dtype)), name="to_blocked")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    b, cb, i, j, ci = sch.get_loops(sch.get_sblock("to_blocked"))
    sch.parallel(sch.fuse(b, cb, i))
    sch.unroll(ci)
    return _with_attrs(sch.mod["main"], "to_blocked", {"channels": c, "block": block, "pad": pad},
                       "blocked")


def from_blocked(shape: tuple, dtype: str) -> tirx.PrimFunc:
    """NCHW16c -> NCHW (`shape` is the NCHW shape), the padded channels dropped."""
    n, c, h, w = shape
    x = te.placeholder(blocked_shape(shape), dtype, name="x")
    y = te.compute(shape, lambda b, ch, i, j: x[b, ch // BLOCK, i, j, ch % BLOCK],
                   name="from_blocked")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    b, ch, i, j = sch.get_loops(sch.get_sblock("from_blocked"))
    sch.parallel(sch.fuse(b, ch))
    return _with_attrs(sch.mod["main"], "from_blocked", {"channels": c}, "blocked")


# ---- the shared pieces of the blocked kernels ----

def _shape_bytes(t: te.Tensor) -> int:
    return int(np.prod([int(d) for d in t.shape])) * tvm.DataType(t.dtype).bits // 8


def _padded_input(x: te.Tensor, attrs: dict, width: int = 0) -> te.Tensor:
    """x5 padded spatially with zp_x, at least `width` columns wide (x itself when that
    needs no padding)."""
    n, cb, h, w, lanes = (int(d) for d in x.shape)
    pt, pl, pb, pr = attrs["padding"]
    width = max(width, w + pl + pr)
    if not any(attrs["padding"]) and width == w:
        return x
    zp = tirx.const(attrs["zp_x"], x.dtype)
    return te.compute(
        (n, cb, h + pt + pb, width, lanes),
        lambda b, c, i, j, ci: tirx.if_then_else(
            tirx.all(i >= pt, i < h + pt, j >= pl, j < w + pl),
            x[b, c, tirx.max(tirx.min(i - pt, h - 1), 0), tirx.max(tirx.min(j - pl, w - 1), 0),
              ci], zp), name="x_pad")


def _requantize(acc: te.Tensor, params: tuple, attrs: dict, shifts: str) -> te.Tensor:
    """The contract's epilogue on `acc`, which the bias starts (`_epilogue_func`).

    `shifts` "right" (every channel's shift in `x86_requantize.RIGHT_SHIFTS`,
    `schedules.shift_kind`): the stage the schedule tensorizes with `x86_requantize` (the
    product's high dwords taken without widening). Otherwise the int64 multiply and clamp."""
    _, _, m0, shift = params
    if shifts == "right":
        return te.compute(tuple(acc.shape), lambda b, ob, i, j, oi: right_shift_epilogue(
            acc[b, ob, i, j, oi], m0[ob * BLOCK + oi], shift[ob * BLOCK + oi], attrs),
            name="requantize")

    def body(b, ob, i, j, oi):  # noqa: ANN001, ANN202
        o = ob * BLOCK + oi
        y = kernels.fixed_point_multiply(acc[b, ob, i, j, oi], m0[o], shift[o])
        return kernels.clamp_cast(y, attrs["zp_y"], attrs["lo"], attrs["hi"],
                                   attrs["out_dtype"])

    return te.compute(tuple(acc.shape), body, name="requantize")


def _epilogue_func(tensors: list, attrs: dict, shifts: str) -> tirx.PrimFunc:
    """The kernel's PrimFunc, its accumulators started at the bias (`bias_init`); a
    right-shift epilogue carries the attributes that name its intrinsic, so that a schedule
    (or a tuning trace) can tensorize it."""
    func = bias_init(te.create_prim_func(tensors), lambda at: at[1] * BLOCK + at[4])
    if shifts != "right":
        return func
    return func.with_attr(EPILOGUE_ATTR, json.dumps(
        {k: attrs[k] for k in ("zp_y", "lo", "hi", "out_dtype")}))


def _schedule_pad(sch: tvm.s_tir.Schedule, pl: int, w: int) -> None:
    """The padded copy (of an input `w` wide, `pl` columns of left padding) in parallel over
    (batch, channel block), row by row (`_schedule_plane_pad`)."""
    if not has_block(sch, "x_pad"):
        return
    loops = sch.get_loops(sch.get_sblock("x_pad"))
    sch.parallel(sch.fuse(*loops[:2]))
    _schedule_plane_pad(sch, pl, w)


def _epilogue_attrs(sch: tvm.s_tir.Schedule) -> dict | None:
    """The right-shift epilogue's attributes (`_epilogue_func`), or None."""
    attrs = sch.mod["main"].attrs
    return json.loads(str(attrs[EPILOGUE_ATTR])) if attrs and EPILOGUE_ATTR in attrs else None


def _schedule_epilogue(sch: tvm.s_tir.Schedule, anchor: tvm.s_tir.LoopRV) -> None:
    """The epilogue stages on the register block, right after its accumulators: tensorized
    with `x86_requantize` (right shifts; 4 columns at a time where they divide the block),
    else vectorized; a fused add after them."""
    epilogue = _epilogue_attrs(sch)
    names = [n for n in ("requantize", "add") if has_block(sch, n)]
    for name in names:  # all placed before any is tensorized (which replaces a block)
        sch.reverse_compute_at(sch.get_sblock(name), anchor, preserve_unit_loops=True)
    for name in names:
        block = sch.get_sblock(name)
        *_, col, lane = sch.get_loops(block)
        cols = int(sch.get(col).extent)
        # A block of columns that does not divide the width (a tuning tile may) has a
        # predicate: its columns go one at a time.
        whole = int(sch.get(block).iter_vars[3].dom.extent) % cols == 0
        if epilogue is None or name == "add":
            sch.vectorize(lane)
        elif columns_apply(epilogue, cols) and whole:
            _, four = sch.split(col, [None, COLUMNS])
            sch.tensorize(four, requantize_intrin(epilogue, COLUMNS))
        else:
            sch.tensorize(lane, requantize_intrin(epilogue))


def _register_columns(width: int, limit: int, epilogue: dict | None) -> int:
    """Output columns per register block: the largest divisor of the width up to `limit`, or
    8 where it divides the width and the epilogue goes 4 columns at a time (measured on
    ResNet-50 and MobileNetV2 shapes: 2 channel blocks x 8 columns beat 2 x 7 by 1-25%; with
    one channel block, 8 columns lose to 14 and stay out)."""
    if epilogue is not None and width % 8 == 0 and columns_apply(epilogue, 8):
        return 8
    return max(d for d in range(1, limit + 1) if width % d == 0)


# ---- conv2d (groups 1) on vpdpbusd ----

def conv2d_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                   shifts: str = "any") -> list:
    """`x_shape`: the blocked input (by 16 channels, or by 4 for a stem); `w_shape`: the
    channel-padded (cout, cin, kh, kw). With attribute `add` (the add's attributes, with
    `conv_side` "a" or "b" and `skip_dtype`): the conv's output added to a `skip` operand."""
    n, cb, h, w_, lanes = x_shape
    cout, cin, kh, kw = w_shape
    assert cin == cb * lanes and lanes % 4 == 0 and cout % BLOCK == 0, (x_shape, w_shape)
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilation"]
    oh, ow = conv2d_out_hw((n, cin, h, w_), w_shape, attrs)
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wp = packed_params(w_shape, BLOCK, attrs)
    xp = _padded_input(x, attrs)
    per_block = lanes // 4  # groups of 4 channels
    # A 1x1 conv whose channels end in a partly padded block reads only the groups with real
    # channels (their weights are 0 past them): one loop over the groups, blocks and all.
    groups = ceil_div(attrs.get("channels", [cin])[0], 4)
    skip = kh * kw == 1 and groups < cb * per_block
    if skip:
        cb, per_block = 1, groups
    rcb = te.reduce_axis((0, cb), name="rcb")
    rky = te.reduce_axis((0, kh), name="rky")
    rkx = te.reduce_axis((0, kw), name="rkx")
    rcq = te.reduce_axis((0, per_block), name="rcq")
    rci = te.reduce_axis((0, 4), name="rci")
    acc = te.compute(
        (n, cout // BLOCK, oh, ow, BLOCK),
        lambda b, ob, i, j, oi: te.sum(
            xp[b, rcb + rcq // (lanes // 4) if skip else rcb, i * sh + rky * dh,
               j * sw + rkx * dw, (rcq % (lanes // 4) if skip else rcq) * 4 + rci
               ].astype("int32")
            * wp[ob, rcb * per_block + rcq, rky, rkx, oi, rci].astype("int32"),
            axis=[rcb, rky, rkx, rcq, rci]),
        name="acc")
    y = _requantize(acc, params, attrs, shifts)
    if "add" not in attrs:
        return [x, *params, y]
    # Fused residual add (`plan_layout`): the conv's bytes, then the add, in one loop nest.
    skip = te.placeholder(tuple(y.shape), attrs["skip_dtype"], name="skip")
    a, b = (y, skip) if attrs["conv_side"] == "a" else (skip, y)
    return [x, *params, skip, te.compute(tuple(y.shape), add_body(a, b, attrs["add"]),
                                         name="add")]


def schedule_conv2d(sch: tvm.s_tir.Schedule, intrin: str, tunable: bool = False) -> None:
    """Register blocks of J columns x R rows x K channel blocks (with the 4-column epilogue:
    K 4 and J 4 where the blocks come in fours, K 2 and J 4 for a 1x1 conv of one input
    block; else K 2 where the blocks pair up, J `_register_columns` up to 7 (or 8); K 3 and
    J 4 for a 1x1 whose blocks come in threes; else K 1 and J up to 15; R: 1; sampled tiles
    when tuning), the reduction outside them, the epilogue on each block as soon as it is
    complete."""
    block = sch.get_sblock("acc")
    b, ob, i, j, oi, rcb, rky, rkx, rcq, rci = sch.get_loops(block)
    width = int(sch.get(j).extent)
    # Two channel blocks share each activation broadcast where the channel blocks pair up
    # (measured on ResNet-50 and MobileNetV2 shapes: equal or faster everywhere, +55-75% on
    # 7x7 outputs, where 7 columns alone reload a weight vector for every 7 instructions).
    blocks, epilogue = int(sch.get(ob).extent), _epilogue_attrs(sch)
    pointwise = int(sch.get(rky).extent) * int(sch.get(rkx).extent) == 1
    chans = 2 if blocks % 2 == 0 else 1
    fours = width % 4 == 0 and epilogue is not None and columns_apply(epilogue, 4)
    thin = pointwise and int(sch.get(rcb).extent) * int(sch.get(rcq).extent) <= 4
    if blocks % 4 == 0 and fours:
        # Four blocks x 4 columns (measured with the 6-instruction epilogue, against 2 x 8 or
        # 2 x 7: ResNet-50's 1x1 and 3x3 layers at 56 and 28 wide 1-9% faster, MobileNetV2's
        # 32 -> 192 at 28 10%).
        chans, cols = 4, 4
    elif chans == 2 and thin and fours:
        # A 1x1 conv of one input block (4 dot instructions to 6 of epilogue per vector): two
        # blocks x 4 columns (16 -> 96 at 112: 7% faster than 2 x 8).
        cols = 4
    elif chans == 1 and blocks % 3 == 0 and pointwise and fours:
        # Three blocks x 4 columns (MobileNetV2's 144 channels; measured 6-10% faster on
        # its 1x1 layers than 1 x 14, 6% slower on a 3x3, which keeps 1 x 14).
        chans, cols = 3, 4
    elif chans == 1:
        cols = _register_columns(width, BLOCK_COLUMNS, None)
    else:
        cols = _register_columns(width, PAIRED_COLUMNS, epilogue)
    jo, ji = split_tile(sch, j, cols, tunable, BLOCK_COLUMNS)
    obo, obi = split_tile(sch, ob, chans, tunable, 4)
    io, ii = split_tile(sch, i, 1, tunable, 4)
    sch.reorder(b, obo, io, jo, rcb, rky, rkx, rcq, obi, ii, ji, oi, rci)
    sch.parallel(sch.fuse(b, obo, io))
    _schedule_epilogue(sch, jo)
    sch.decompose_reduction(block, rcb)
    for loop in (ji, ii, obi):
        sch.unroll(loop)
    sch.tensorize(oi, intrin)
    init = sch.get_sblock("acc_init")
    sch.vectorize(sch.get_loops(init)[-1])


@dataclass(frozen=True)
class BlockedConv(DotProduct):
    """conv2d (groups 1) on NCHW16c activations. A `DotProduct` so that tuning finds its
    kernels (`schedules.tunable_rules`) and samples the same register-block tiles; only
    `plan_layout` builds blocked kernels.

    Accepts: uint8 activations blocked by 16 (or by 4 for a stem of fewer than 16 channels on
    an NCHW input), any batch and spatial size, weights channel-padded to (16k, 16m or 4m, kh,
    kw) (`plan_layout` pads them; zero weights), any kernel, strides and dilations (>= 1,
    height and width apart), any padding; int8 weights (4-bit layers stay NCHW), int32 bias,
    any requantize shift, output per `out_dtype`; with attribute `add`, the conv's output
    added to a skip operand of either 8-bit dtype (`conv2d_compute`).
    """

    def workload(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                 shifts: str = "any") -> tirx.PrimFunc:
        return _epilogue_func(conv2d_compute(x_shape, x_dtype, w_shape, attrs, shifts), attrs,
                              shifts)

    def schedule(self, sch: tvm.s_tir.Schedule, tunable: bool = False) -> None:
        schedule_conv2d(sch, self.intrinsic(), tunable)

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              trace: "tvm.s_tir.Trace | None" = None, shifts: str = "any") -> tirx.PrimFunc:
        sch = tvm.s_tir.Schedule(self.workload(op, x_shape, x_dtype, w_shape, attrs, shifts))
        if trace is None:
            self.schedule(sch)
        else:
            if shifts == "right":  # the trace names the epilogue's intrinsics
                requantize_intrin(attrs)
                requantize_intrin(attrs, COLUMNS)
            trace.apply_to_schedule(sch, remove_postproc=False)
        _schedule_pad(sch, attrs["padding"][1], x_shape[3])  # outside the trace: not tuned
        packed = {**attrs, "packed_lanes": BLOCK, "w_shape": list(w_shape)}
        # A fused add is not a tuning task (its workload has one more operand).
        return _with_attrs(sch.mod["main"], op, packed,
                           self.name + ("_add" if "add" in attrs else ""))

    def pack_operands(self, w: np.ndarray, bias: np.ndarray, attrs: dict
                      ) -> tuple[np.ndarray, np.ndarray]:
        return pack(w, BLOCK), folded_bias(w, bias, attrs["zp_x"])


BLOCKED_VNNI = BlockedConv("x86_vnni_blocked", BLOCK, "uint8", vpdpbusd_intrinsic)


# ---- depthwise conv2d: 16 channels in the lanes ----

DEPTHWISE_COLUMNS = 15  # output columns per register block (as the conv's)
# A depthwise conv over a padded plane larger than this pads its input a chunk of output rows
# at a time, in L1: the chunk's input rows up to `CHUNK_INPUT_ROWS` (measured on MobileNetV2's
# layers against the whole plane: stride 1 at 112 and 56 wide, 8 output rows, 17-19% faster;
# stride 2, 4 output rows, 7-9% faster than one output row at a time, which had gained 25-30%
# over the whole plane; planes of 28 and 14, in L1 whole, gain nothing).
CHUNKED_PLANE_BYTES = 32 * 1024
CHUNK_INPUT_ROWS = 10


def depthwise(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              shifts: str = "any", vbmi: bool = False) -> tirx.PrimFunc:
    """`w_shape`: the channel-padded (c, 1, kh, kw); the weight operand is
    `weight_layout.pack_depthwise(w, 16)`, (c/16, kh, kw/4, 16, 4), the bias folded.

    With unit dilation along the width, each filter row is `kw/4` groups of 4 taps, and the
    4 pixels of a group are one 64-byte load that `x86_vnni.VNNI_TAPS_INTRIN` turns into one
    `vpdpbusd` for 16 channels (3 instructions per group instead of 4 per tap). Otherwise the
    taps are unrolled in 32-bit lanes. `vbmi`: the target has AVX-512 VBMI (the transpose is
    one `vpermb`, `x86_vnni.VNNI_TAPS_VBMI_INTRIN`)."""
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
    xp = _padded_input(x, attrs, reach)
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
    y = _requantize(acc, params, attrs, shifts)
    sch = tvm.s_tir.Schedule(_epilogue_func([x, *params, y], attrs, shifts))
    chunk = _chunk_rows(oh, sh, (kh - 1) * dh + 1) \
        if _shape_bytes(xp) // cb > CHUNKED_PLANE_BYTES else 0
    _schedule_depthwise(sch, window, ow, vbmi, chunk)
    if has_block(sch, "x_pad"):
        _schedule_plane_pad(sch, attrs["padding"][1], w_)
    packed = {**attrs, "depthwise_lanes": BLOCK, "w_shape": list(w_shape)}
    return _with_attrs(sch.mod["main"], "conv2d", packed, "x86_blocked_depthwise")


def _chunk_rows(oh: int, stride: int, reach: int) -> int:
    """Output rows per padded chunk: the most that divide `oh` and read at most
    `CHUNK_INPUT_ROWS` input rows (1 where the filter's `reach` alone is taller)."""
    fits = [r for r in range(2, oh + 1)
            if oh % r == 0 and (r - 1) * stride + reach <= CHUNK_INPUT_ROWS]
    return max(fits, default=1)


def _schedule_depthwise(sch: tvm.s_tir.Schedule, window: bool, ow: int, vbmi: bool,
                        chunk: int) -> None:
    """Channel blocks in parallel; per block its padded plane (while it is in cache; with
    `chunk`, the input rows of each `chunk` output rows), then row by row register blocks of
    J columns, the taps outside them, the epilogue after each."""
    block = sch.get_sblock("acc")
    b, ob, i, j, oi, *taps = sch.get_loops(block)
    epilogue = _epilogue_attrs(sch)
    if epilogue is not None and ow % 4 == 0 and columns_apply(epilogue, 4):
        cols = 8 if ow % 8 == 0 else 4  # 4 columns at a time (measured: 10-12% faster)
    else:
        cols = max(d for d in range(1, DEPTHWISE_COLUMNS + 1) if ow % d == 0)
    jo, ji = sch.split(j, [None, cols])
    if window:
        sch.reorder(b, ob, i, jo, *taps[:-1], ji, oi, taps[-1])
    else:
        sch.reorder(b, ob, i, jo, *taps, ji, oi)
        sch.vectorize(oi)  # before the decomposition (a reduction block's loops can be)
    rows = sch.split(i, [None, chunk])[0] if chunk else None
    plane = sch.fuse(b, ob)
    _schedule_epilogue(sch, jo)
    padded = has_block(sch, "x_pad")
    if padded:
        sch.compute_at(sch.get_sblock("x_pad"), rows if chunk else plane)
    sch.parallel(plane)  # before the decompositions: it refuses split writers
    init = sch.decompose_reduction(block, taps[0])
    if window:
        from qcompiler.schedules.x86 import vnni as x86_vnni

        sch.tensorize(oi, x86_vnni.VNNI_TAPS_VBMI_INTRIN if vbmi else x86_vnni.VNNI_TAPS_INTRIN)
    for loop in (*taps[:-1], ji):
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(init)[-1])


def _schedule_plane_pad(sch: tvm.s_tir.Schedule, pl: int, w: int) -> None:
    """Each padded row (`pl` columns of left padding, `w` of input) in 64-byte vectors: those
    wholly within the interior one loop of aligned stores (the row stride made whole
    vectors), the others split where the border meets the interior, so that every piece is
    a fill or a copy. (A fill of the whole region and a copy over it stored every interior
    byte twice, 16 bytes off alignment: a depthwise conv with it took 13.5 cycles per 16
    outputs at stride 2, with this 10.8.)"""
    pad = sch.get_sblock("x_pad")
    sch.storage_align(pad, 0, 2, 64, 0)
    *_, col, lane = sch.get_loops(pad)
    pixel = int(sch.get(lane).extent)
    row = sch.fuse(col, lane)
    extent = int(sch.get(row).extent)
    left, right = pl * pixel, (pl + w) * pixel
    edges = [e for e in (left, right) if 0 < e < extent]
    whole = extent // 64 * 64
    # Past the whole vectors: pieces at the edges (a loop that does not start at 0 cannot be
    # split or partitioned).
    cuts = [whole, *(e for e in edges if e > whole)] if 0 < whole < extent else []
    pieces = sch.loop_partition(row, [*(b - a for a, b in zip([0, *cuts], cuts)), None]) \
        if cuts else [row]
    for piece in pieces[1:] if cuts else ([] if whole else pieces):
        sch.vectorize(piece)
    if not whole:
        return
    vectors, _ = sch.split(pieces[0], [None, 64])
    count = whole // 64
    first = min(ceil_div(left, 64), count)
    last = max(min(right // 64, count), first)
    spans = [(k, k + 1) for k in range(first)] + ([(first, last)] if last > first else []) \
        + [(k, k + 1) for k in range(last, count)]
    parts = sch.loop_partition(vectors, [*(b - a for a, b in spans[:-1]), None]) \
        if len(spans) > 1 else [vectors]
    for (a, b), part in zip(spans, parts):
        inner = sch.get_loops(sch.get_child_blocks(part)[0])[-1]
        _vectorize_between(sch, inner, [e - a * 64 for e in edges if a * 64 < e < b * 64]
                           if b - a == 1 else [])


def _vectorize_between(sch: tvm.s_tir.Schedule, loop: tvm.s_tir.LoopRV, cuts: list) -> None:
    """`loop` vectorized, in pieces at `cuts` (offsets from its start)."""
    if not cuts:
        sch.vectorize(loop)
        return
    sizes = [b - a for a, b in zip([0, *cuts], cuts)]
    for piece in sch.loop_partition(loop, [*sizes, None]):
        sch.vectorize(piece)


# ---- channel-wise ops: 16 channels as one vector ----

def _schedule_rows(sch: tvm.s_tir.Schedule, name: str) -> None:
    """(batch, block, row) in parallel, the 16 channels of a pixel as one vector."""
    loops = sch.get_loops(sch.get_sblock(name))
    sch.parallel(sch.fuse(*loops[:3]))
    sch.vectorize(loops[4])


INT32 = 2**31


@dataclass(frozen=True)
class ByteRescale:
    """`q_multiply_shift(x, m0, shift)` for the few values x of an 8-bit operand minus its
    zero point, in 32-bit arithmetic. Either one multiply, `(x M + R) >> T` (M a rounded
    multiplier, valid only where it is exact), or m0 split in 16-bit halves,
    `m0 = mh 2^16 + ml`, t = 31 - shift, R = 2^(t-1):

        t <= 16:  (x mh) << (16 - t)  +  (x ml + R) >> t
        t >  16:  (x mh + ((x ml + R) >> 16)) >> (t - 16)

    which is exact (2^t divides x mh 2^16, and floors of floors by powers of 2 nest).
    `rescale_form` checks the result for every value and every intermediate against int32
    (also the terms `q M` and `zp M` that TVM's simplifier makes of `(q - zp) M`)."""

    split: bool
    m: int  # M, or mh
    low: int  # 0, or ml
    r: int
    t: int  # T, or t = 31 - shift

    def apply(self, x: Any, tir: bool) -> Any:
        """The formula on numpy int64 arrays (`tir` False) or on int32 TIR expressions."""
        c = (lambda v: tirx.const(v, "int32")) if tir else (lambda v: v)
        if not self.split:
            return (x * c(self.m) + c(self.r)) >> c(self.t)
        low = x * c(self.low) + c(self.r)
        if self.t <= 16:
            return ((x * c(self.m)) << c(16 - self.t)) + (low >> c(self.t))
        return (x * c(self.m) + (low >> c(16))) >> c(self.t - 16)

    def terms(self, x: np.ndarray, zp: int) -> list[np.ndarray]:
        """Every intermediate value the kernel may compute (for the int32 check)."""
        products = [x * self.m, x * self.low, (x + zp) * self.m, (x + zp) * self.low,
                    np.full_like(x, zp * self.m), np.full_like(x, zp * self.low)]
        if not self.split:
            return products + [x * self.m + self.r]
        low = x * self.low + self.r
        if self.t <= 16:
            return products + [low, (x * self.m) << (16 - self.t)]
        return products + [low, x * self.m + (low >> 16)]


def rescale_form(m0: int, shift: int, values: np.ndarray, zp: int) -> ByteRescale | None:
    """The cheapest exact `ByteRescale` for x in `values` (= q - zp), or None."""
    want = q_multiply_shift(values, m0, shift)
    total = Q31 - shift
    candidates = [ByteRescale(False, int(round(m0 * 2.0 ** (t - total))), 0, (1 << t) >> 1, t)
                  for t in range(30, -1, -1)]
    if 1 <= total <= 31:
        candidates.append(ByteRescale(True, m0 >> 16, m0 & 0xFFFF, 1 << (total - 1), total))
    for form in candidates:
        if form.m <= 0 or form.m >= INT32:
            continue
        with np.errstate(over="ignore"):
            fits = all(np.abs(v).max() < INT32 for v in form.terms(values, zp))
        if fits and np.array_equal(form.apply(values, False), want):
            return form
    return None


def add(shape: tuple, a_dtype: str, b_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """The add on blocked operands (elementwise: the layout does not matter), on 16 lanes."""
    a = te.placeholder(shape, a_dtype, name="a")
    b = te.placeholder(shape, b_dtype, name="b")
    func = te.create_prim_func([a, b, te.compute(shape, add_body(a, b, attrs), name="add")])
    sch = tvm.s_tir.Schedule(func)
    _schedule_rows(sch, "add")
    return _with_attrs(sch.mod["main"], "add", {**attrs, "layout": LAYOUT}, "x86_blocked")


def add_body(a: te.Tensor, b: te.Tensor, attrs: dict) -> Callable:
    """The add's element function: where both rescales have an exact 32-bit form
    (`rescale_form`) and the sum cannot leave int32, everything is 32-bit; otherwise the
    portable kernel's 64-bit arithmetic (`kernels.add_body`)."""
    forms = [_operand_form(attrs, side, str(t.dtype)) for side, t in (("a", a), ("b", b))]
    k = attrs["k"]
    if any(f is None for f in forms) or sum(f[1] for f in forms) + (1 << k) >= INT32:
        return kernels.add_body(a, b, attrs)

    def body(*i: Any) -> Any:
        ta, tb = (f[0].apply(t[i].astype("int32") - tirx.const(attrs[f"zp_{side}"], "int32"),
                             True) for t, f, side in ((a, forms[0], "a"), (b, forms[1], "b")))
        y = ((ta + tb + tirx.const((1 << k) >> 1, "int32")) >> k) \
            + tirx.const(attrs["zp_y"], "int32")
        return tvm.te.min(tvm.te.max(y, tirx.const(attrs["lo"], "int32")),
                          tirx.const(attrs["hi"], "int32")).astype(attrs["out_dtype"])

    return body


def _operand_form(attrs: dict, side: str, dtype: str) -> tuple | None:
    """(ByteRescale, largest |result|) of one operand's rescale, or None."""
    lo, hi = dtype_range(dtype)
    zp = attrs[f"zp_{side}"]
    values = np.arange(lo, hi + 1, dtype=np.int64) - zp
    m0, shift = attrs[f"m0_{side}"], attrs[f"shift_{side}"]
    form = rescale_form(m0, shift, values, zp)
    if form is None:
        return None
    return form, int(np.abs(q_multiply_shift(values, m0, shift)).max())


def max_pool2d(x_shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """The window's maximum per channel lane; padding is the dtype's minimum."""
    n, cb, h, w, _ = x_shape
    oh, ow = pool2d_out_hw((h, w), attrs)
    kh, kw = attrs["kernel"]
    sh, sw = attrs["strides"]
    pt, pl, _, _ = attrs["padding"]
    x = te.placeholder(x_shape, x_dtype, name="x")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    lowest = tirx.const(attrs["dtype_min"], x_dtype)

    def tap(b: Any, c: Any, i: Any, j: Any, ci: Any) -> Any:
        yy, xx = i * sh + ry - pt, j * sw + rx - pl
        return tirx.if_then_else(
            tirx.all(yy >= 0, yy < h, xx >= 0, xx < w),
            x[b, c, tirx.max(tirx.min(yy, h - 1), 0), tirx.max(tirx.min(xx, w - 1), 0), ci],
            lowest)

    y = te.compute((n, cb, oh, ow, BLOCK),
                   lambda b, c, i, j, ci: te.max(tap(b, c, i, j, ci), axis=[ry, rx]),
                   name="max_pool")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    block = sch.get_sblock("max_pool")
    b, c, i, j, ci, ky, kx = sch.get_loops(block)
    sch.reorder(b, c, i, j, ky, kx, ci)
    sch.parallel(sch.fuse(b, c, i))
    sch.vectorize(ci)  # before the decomposition (a reduction block's loops can be)
    init = sch.decompose_reduction(block, ky)
    sch.unroll(ky)
    sch.unroll(kx)
    sch.vectorize(sch.get_loops(init)[-1])
    return _with_attrs(sch.mod["main"], "max_pool2d", {**attrs, "layout": LAYOUT},
                       "x86_blocked")


def global_mean(x_shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """`reduce_mean` over h and w, kept 1x1 (a global average pool): the portable kernel's
    compute on the 5-D blocked shape, scheduled per channel block with the 16 channels' int32
    sums in one vector. Blocked, the pool reads the last conv's output as it is; in NCHW it
    first waited for a from_blocked of the whole tensor (MobileNetV2: 0.019 ms for 7x7x1280,
    the pool 0.006)."""
    sch = tvm.s_tir.Schedule(kernels.reduce_mean(x_shape, x_dtype, attrs))
    block = sch.get_sblock("mean_sum")
    b, c, i, j, ci, ky, kx = sch.get_loops(block)
    sch.reorder(b, c, i, j, ky, kx, ci)
    plane = sch.fuse(b, c)
    sch.parallel(plane)
    sch.vectorize(ci)
    sch.reverse_compute_at(sch.get_sblock("reduce_mean"), plane)
    init = sch.decompose_reduction(block, ky)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(sch.get_sblock("reduce_mean"))[-1])
    return _with_attrs(sch.mod["main"], "reduce_mean", {**attrs, "layout": LAYOUT},
                       "x86_blocked")
