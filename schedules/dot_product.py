"""Integer kernels with the inner product on a dot-product instruction: L output lanes, each the
sum of K products (K = 4 bytes, or 2 int16 values), one activation operand broadcast over the
lanes.

    ARM  `sdot`:     L = 4,  K = 4, s8 x s8 -> s32   (`arm.dot.ARM_SDOT`)
    x86  `vpdpbusd`: L = 16, K = 4, u8 x s8 -> s32   (`x86.dot.X86_VNNI`, AVX-512 VNNI)
    x86  `vpmaddwd`: L = 8,  K = 2, s16 x s16 -> s32 (`x86.dot.X86_AVX2`: u8 activations packed
                                                      as int16, the weights widened in registers)
    HVX  `vrmpy`:    L = 32, K = 4, u8 x s8 -> s32   (`hexagon.dot.HEXAGON_VRMPY`, 128-byte HVX)

This module is the machinery they share; each instruction's row (`DotProduct`: its lanes,
activation dtype, tensor intrinsic and any stages of its own) lives with its target.

Same operands and attributes as the portable kernels in `qcompiler.kernels` (so the reference
and the graph are unchanged); inside, the computation is re-laid for the instruction:

    acc[n, o/L, y, x, o%L] = sum_{c/K, ky, kx, c%K} xp[n, c/K, y', x', c%K] * wp[o/L, c/K, ky, kx, o%L, c%K]

with activations packed to K-channel blocks in the kernel (spatial padding = zp_x, channel
padding = 0) and weights packed to L x 4 blocks once, at compile time
(`qcompiler.numerics.weight_layout`). Raw byte products need the zero point out of the dot product,
which the packed bias carries:

    sum (x - zp_x) w + b = sum x w + (b - zp_x * sum w)      (exact in int32)

then the usual requantize epilogue. The packed kernel's attributes add `packed_lanes` and
`w_shape`, from which the reference unpacks the weights and the bias.

A 4-bit layer's `wp` is stored as nibbles (`qcompiler.numerics.nibbles`) and unpacked to int8
at the kernel's root, once per call, so the instruction still reads plain int8 bytes.

A conv with few input channels (a stem: 1-3) wastes most of each K-deep product on channel
padding; where taking the kernel's columns into the reduction needs at most 2/3 of the slots
(`folds_columns`: 1 channel x 3 columns is one 4-deep product instead of three), the input is
packed as `xp[n, v/K, y', x, v%K] = x[n, c, y', x sw + kx dw]` over v = c kw + kx, the conv
then 1 column wide (attribute `columns_folded`; weights `weight_layout.fold_columns`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.numerics import nibbles
from qcompiler.numerics.shapes import ceil_div, conv2d_out_hw
from qcompiler.numerics.weight_layout import fold_columns, folded_bias, pack, packed_shape


def _as(value: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """`value` in `dtype`, with no cast node where it already is (same kernel text)."""
    return value if str(value.dtype) == dtype else value.astype(dtype)


def packed_params(w_shape: tuple, lanes: int, attrs: dict, depth: int = 4) -> tuple:
    """(operands, weights read): the constant operands of a packed kernel, its weights in
    `weight_layout.pack` order (int8, or nibbles of that order: `kernels.weight_operand`) and
    per output channel the folded bias (`b - zp_x sum w`), Q31 multiplier and shift; and the
    int8 packed weights."""
    w, read = kernels.weight_operand(packed_shape(w_shape, lanes, depth), attrs, "w_packed")
    return (w, *(te.placeholder((w_shape[0],), "int32", name=n)
                 for n in ("bias", "m0", "shift"))), read


FOLD_GAIN = 1.5  # `folds_columns`: at most 1/FOLD_GAIN of the reduction's slots
# The acc block's annotation: the packed input's column step per output column (adjacent
# columns, 1, let an instruction take several columns at once: `DotProduct.columns_intrinsic`)
COLUMN_STEP = "qcompiler.x_column_step"


def folds_columns(w_shape: tuple, attrs: dict, depth: int) -> bool:
    """Whether a conv takes its kernel's columns into the reduction (the module docstring):
    where that needs at most 1/FOLD_GAIN of the K-deep slots per kernel row (the bundled
    model's 1-channel 3x3 stem: 4 instead of 12; a 3-channel 3x3 stem stays: 12 and 12)."""
    if len(w_shape) != 4 or attrs["groups"] != 1:
        return False
    _, cin, _, kw = w_shape
    return kw > 1 and ceil_div(cin * kw, depth) * FOLD_GAIN <= ceil_div(cin, depth) * kw


def packed_weight_shape(w_shape: tuple, attrs: dict, depth: int) -> tuple:
    """The weights' shape as the kernel packs them: (cout, cin kw, kh, 1) where it folds the
    columns, else `w_shape`."""
    if not folds_columns(w_shape, attrs, depth):
        return tuple(w_shape)
    cout, cin, kh, kw = w_shape
    return (cout, cin * kw, kh, 1)


def conv2d_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                   lanes: int = 4, epilogue: Callable = kernels._requantize_channels,
                   depth: int = 4, packed_dtype: str | None = None,
                   column_group: int = 1) -> list:
    """`depth` (K): reduction values per lane; `packed_dtype`: the packed activations' type
    (default the input's; int16 where the instruction multiplies 16-bit pairs);
    `column_group`: where the packed input's columns are adjacent, the accumulator's width
    rounded up to a multiple of it (its extra columns computed on the padding and dropped:
    `DotProduct.columns_intrinsic` takes that many columns a call)."""
    n, cin, h, w_ = x_shape
    cout, cin_w, kh, kw = w_shape
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["padding"]
    dh, dw = attrs["dilation"]
    oh, ow = conv2d_out_hw(x_shape, w_shape, attrs)
    K, L = depth, lanes
    fold = folds_columns(w_shape, attrs, K)
    channels = cin * kw if fold else cin  # (folded: v = c kw + kx)
    c4, o4 = ceil_div(channels, K), ceil_div(cout, L)
    zp = attrs["zp_x"]
    p_dtype = packed_dtype or x_dtype
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wp = packed_params(packed_weight_shape(w_shape, attrs, K), L, attrs, K)

    def packed(b, cb, i, j, ci):
        # One condition and one constant (zp_x, also in the channel tail, where the packed
        # weights are 0): the padding pattern `schedule_acc` splits into fill and copy.
        v = cb * K + ci
        c, col = (v // kw, j * sw + v % kw * dw) if fold else (v, j)
        inside = [i >= pt, i < h + pt, col >= pl, col < w_ + pl]
        if channels % K:
            inside.append(v < channels)
        value = x[b, tirx.min(c, cin - 1), i - pt, col - pl]
        return tirx.if_then_else(tirx.all(*inside), _as(value, p_dtype),
                                 tirx.const(zp, p_dtype))

    step = 1 if fold else sw  # the packed input's columns per output column
    acc_w = ceil_div(ow, column_group) * column_group if step == 1 else ow
    width = acc_w if fold else w_ + pl + pr + (acc_w - ow)
    xp = te.compute((n, c4, h + pt + pb, width, K), packed, name="x_packed")
    rcb = te.reduce_axis((0, c4), name="rcb")
    rky = te.reduce_axis((0, kh), name="rky")
    rkx = te.reduce_axis((0, 1 if fold else kw), name="rkx")
    rci = te.reduce_axis((0, K), name="rci")
    acc = te.compute(
        (n, o4, oh, acc_w, L),
        lambda b, ob, i, j, oi: te.sum(
            xp[b, rcb, i * sh + rky * dh, j + rkx if fold else j * sw + rkx * dw, rci]
            .astype("int32") * wp[ob, rcb, rky, rkx, oi, rci].astype("int32"),
            axis=[rcb, rky, rkx, rci]),
        # (only where a rule takes columns together: other rules' workloads, the tuning
        # database's keys, stay as they were)
        name="acc", attrs={COLUMN_STEP: step} if column_group > 1 else None)
    centered = te.compute((n, cout, oh, ow), lambda b, o, i, j: acc[b, o // L, i, j, o % L],
                          name="acc_centered")
    y = epilogue(centered, 1, params, attrs)
    return [x, *params, *(kernels.table_stage(y, attrs) or [y])]  # (a fused table: `lut`)


def dense_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                  lanes: int = 4, epilogue: Callable = kernels._requantize_channels,
                  depth: int = 4, packed_dtype: str | None = None,
                  column_group: int = 1) -> list:
    """`acc[n, o/L, o%L] = sum_{k/K, k%K} xp[n, k/K, k%K] * wp[o/L, k/K, o%L, k%K]`."""
    n, k = x_shape
    cout, _ = w_shape
    K, L = depth, lanes
    k4, o4 = ceil_div(k, K), ceil_div(cout, L)
    p_dtype = packed_dtype or x_dtype
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wp = packed_params(w_shape, L, attrs, K)
    xp = te.compute((n, k4, K), lambda b, kb, ki: tirx.if_then_else(
        kb * K + ki < k, _as(x[b, tirx.min(kb * K + ki, k - 1)], p_dtype),
        tirx.const(0, p_dtype)), name="x_packed")
    rkb = te.reduce_axis((0, k4), name="rkb")
    rki = te.reduce_axis((0, K), name="rki")
    acc = te.compute((n, o4, L), lambda b, ob, oi: te.sum(
        xp[b, rkb, rki].astype("int32") * wp[ob, rkb, oi, rki].astype("int32"),
        axis=[rkb, rki]), name="acc")
    centered = te.compute((n, cout), lambda b, o: acc[b, o // L, o % L], name="acc_centered")
    y = epilogue(centered, 1, params, attrs)
    return [x, *params, y]


BIASED = "acc_biased"  # the int32 `acc + bias` stage of an epilogue that has one
NIBBLE_UNPACK = "w_packed_unpack"  # 4-bit weights unpacked (`kernels.weight_operand`)
BLOCK_COLUMNS = 16  # output columns per register block (accumulators live across the reduction)
BLOCK_CHANNELS = 4  # at most this many output-channel blocks per register block (tuning only)
BLOCK_ROWS = 4  # at most this many output rows per register block (tuning only)
# A dense layer's output-channel blocks per register block: independent accumulator chains.
# One block alone waits out the dot instruction's latency at every step of its reduction
# (MobileNetV2's 1280 -> 1000 with vpdpbusd, in L2: 38 us; 7 blocks: 19 us).
DENSE_BLOCKS = 8
# Row packing (`schedule_acc`): at most this many packed weight bytes (each row block reads
# them all: from L2), and at least this many output rows (tasks for the threads).
ROW_PACKING_WEIGHTS = 64 * 1024
ROW_PACKING_ROWS = 4
ROW_PACKED = "qcompiler.row_packed"  # the annotation of a row-packed x_packed block


def split_tile(sch: tvm.s_tir.Schedule, loop: tirx.For, inner: int, tunable: bool,
          max_inner: int) -> list:
    """Split `loop` into (outer, inner): `inner` when fixed; a sampled perfect tile (one
    MetaSchedule can mutate) starting from `inner` when tuning."""
    extent = int(sch.get(loop).extent)
    if not tunable:
        return sch.split(loop, [None, inner])
    factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_inner,
                                      decision=[extent // inner, inner])
    return sch.split(loop, factors)


def packs_rows(sch: tvm.s_tir.Schedule, from_bytes: int = 0) -> bool:
    """Whether a conv packs its input a row block at a time (`schedule_acc`'s `row_packing`):
    where the weights are small (ROW_PACKING_WEIGHTS: every row block sweeps them all, from
    cache), the output has rows for the threads to share, and the whole packed input would
    take at least `from_bytes`."""
    wp = sch.get(sch.get_sblock("acc")).reads[-1].source  # the packed weights
    xp = sch.get(sch.get_sblock("x_packed")).writes[0].source
    acc_loops = sch.get_loops(sch.get_sblock("acc"))
    return len(acc_loops) == 9 and int(sch.get(acc_loops[2]).extent) >= ROW_PACKING_ROWS \
        and math.prod(int(d) for d in wp.shape) <= ROW_PACKING_WEIGHTS \
        and math.prod(int(d) for d in xp.shape) * xp.dtype.itemsize >= from_bytes


def schedule_acc(sch: tvm.s_tir.Schedule, intrin: str, tunable: bool = False,
                 columns: int = BLOCK_COLUMNS, row_packing: bool = False,
                 columns_intrin: tuple[str, int] | None = None,
                 row_packing_from: int = 0) -> None:
    """Move the output lanes and the K-deep reduction innermost and map them to the
    instruction.

    Convolutions are register-blocked: J output columns (by default the largest divisor of the
    width up to `columns`, which the register file bounds) times R rows times O output-channel
    blocks (by default 1 each) are computed together, the reduction outside them, so each
    weight vector is loaded once per J x R products and the accumulators stay in registers; the
    requantize epilogue runs on each block right after it is complete, while it is in cache.
    `tunable` turns J, R and O into sampled tiles (the design space of `qcompiler.tuning.tune`:
    tile decisions are what a trace can replay with new values; a choice of loop order made in
    Python could not be); their first values are the fixed schedule's.

    `row_packing` (where `packs_rows`): threads take row blocks, each packing the input rows
    it reads into its own buffer and then computing every output channel of them, instead of
    the whole input packed first; the packed copy (2x the input on AVX2) is no longer the
    largest part of the workspace.

    `columns_intrin` (name, C): an intrinsic computing C adjacent output columns at once,
    used where the packed input's columns are adjacent (`COLUMN_STEP` 1) and C divides the
    width; J is then a multiple of C (the tile sampled over the width / C).
    """
    block = sch.get_sblock("acc")
    loops = sch.get_loops(block)
    conv = len(loops) == 9  # n, o/L, y, x, o%L | c/K, ky, kx, c%K
    n_spatial = len(loops) - (4 if conv else 2)
    spatial, reduction = loops[:n_spatial], loops[n_spatial:]
    lane = call = spatial[-1]  # (`call`: where the intrinsic is tensorized)
    sch.compute_inline(sch.get_sblock("acc_centered"))
    rows = conv and row_packing and packs_rows(sch, row_packing_from)
    if conv:
        b, ob, i, j = spatial[:4]
        width = int(sch.get(j).extent)
        step = int(sch.get(block).annotations.get(COLUMN_STEP, 0))
        group = columns_intrin[1] if columns_intrin is not None and step == 1 \
            and width % columns_intrin[1] == 0 else 1
        if group > 1:  # the columns one call takes: the intrinsic's loop
            j, call = sch.split(j, [None, group])
            intrin = columns_intrin[0]
        tiles, most = width // group, columns // group
        cols = max(d for d in range(1, most + 1) if tiles % d == 0)
        jo, ji = split_tile(sch, j, cols, tunable, most)
        obo, obi = split_tile(sch, ob, 1, tunable, BLOCK_CHANNELS)
        io, ii = split_tile(sch, i, 1, tunable, BLOCK_ROWS)
        outer = list(reduction[:-1])  # c/K, ky, kx
        inner = [call, lane] if group > 1 else [lane]
        if rows:
            sch.reorder(b, io, obo, jo, *outer, obi, ii, ji, *inner, reduction[-1])
            tasks = sch.fuse(b, io)
            sch.parallel(tasks)
            sch.compute_at(sch.get_sblock("x_packed"), tasks)
            sch.annotate(sch.get_sblock("x_packed"), ROW_PACKED, 1)  # (for `split_padding`)
        else:
            sch.reorder(b, obo, io, jo, *outer, obi, ii, ji, *inner, reduction[-1])
            # Threads split the batch x output-channel-block x row space: disjoint outputs.
            sch.parallel(sch.fuse(b, obo, io))
        # Unit loops kept: the loop count (which traces record) must not depend on the tiles.
        if has_block(sch, BIASED):  # an epilogue's int32 stage goes first (`x86.epilogue`)
            sch.reverse_compute_at(sch.get_sblock(BIASED), jo, preserve_unit_loops=True)
        sch.reverse_compute_at(sch.get_sblock("requantize"), jo, preserve_unit_loops=True)
        sch.decompose_reduction(block, outer[0])
        for loop in (ji, ii, obi):
            sch.unroll(loop)
    else:
        b, ob = spatial[:2]
        blocks = int(sch.get(ob).extent)
        chains = max(d for d in range(1, DENSE_BLOCKS + 1) if blocks % d == 0)
        obo, obi = split_tile(sch, ob, chains, tunable, DENSE_BLOCKS)
        sch.reorder(b, obo, reduction[0], obi, lane, reduction[-1])
        sch.parallel(sch.fuse(b, obo))
        sch.decompose_reduction(block, reduction[0])
        sch.unroll(obi)
        outer = sch.get_loops(sch.get_sblock("requantize"))
        sch.parallel(sch.fuse(*outer[:2]))
    sch.tensorize(call, intrin)
    if not rows:
        _schedule_packing(sch)
    if NIBBLE_UNPACK in _block_names(sch):  # 4-bit weights: the unpack stage stays at the root,
        kernels.unpack_in_pairs(sch, NIBBLE_UNPACK)  # tensorize reads a plain buffer


def _block_names(sch: tvm.s_tir.Schedule) -> set[str]:
    root = sch.get_sblock("root")
    return {sch.get(b).name_hint for b in sch.get_child_blocks(root)}


def has_block(sch: tvm.s_tir.Schedule, name: str) -> bool:
    """Whether the schedule has a block of that name (an optional stage, e.g. padding)."""
    try:
        sch.get_sblock(name)
    except tvm.s_tir.ScheduleError:
        return False
    return True


def _schedule_packing(sch: tvm.s_tir.Schedule) -> None:
    """x_packed in parallel over (batch, channel block)."""
    loops = sch.get_loops(sch.get_sblock("x_packed"))
    sch.parallel(sch.fuse(*loops[:2]))


def split_padding(sch: tvm.s_tir.Schedule) -> None:
    """A padded conv's x_packed border filled apart from the interior copy, so the copy has
    no condition and LLVM vectorizes it (the 4 channel rows interleaved into 4-byte groups).

    Applied after the schedule or a tuning record's trace, outside the trace: TVM 0.27 cannot
    print a trace that holds `decompose_padding`, and MetaSchedule prints every candidate's."""
    block = sch.get_sblock("x_packed")
    if len(sch.get(block).iter_vars) != 5:  # dense: a plain copy
        return
    loops = sch.get_loops(block)
    # the root's fused (batch, channel block) loop, or a row block's first loop in its task
    row_packed = ROW_PACKED in sch.get(block).annotations
    if row_packed and len(loops) < 2:
        return  # (one loop, the task's: nothing to split inside it)
    fused = loops[1] if row_packed else loops[0]
    if sch.can_decompose_padding(block, fused):
        sch.decompose_padding(block, fused)


COMPUTES = {"conv2d": conv2d_compute, "conv2d_lut": conv2d_compute, "dense": dense_compute}


def place_table(sch: tvm.s_tir.Schedule) -> None:
    """A fused table (`kernels.table_stage`, the "lut" block) looked up by the epilogue's
    last stage as it writes each byte (the requantize, or HVX's move of the lanes to their
    planes): no pass of its own, no tensor between them."""
    sch.reverse_compute_inline(sch.get_sblock("lut"))


@dataclass(frozen=True)
class DotProduct:
    """One dot-product instruction as a kernel rule for `qcompiler.schedules`.

    Accepts: conv2d with groups == 1 and dense, on activations of the row's `x_dtype` (8-bit;
    int16 activations keep the portable kernels); NCHW, any batch and spatial size (h != w
    included), any input and output channel counts (channels padded to 4 and to `lanes`
    inside), any kernel kh x kw (1x1 and non-square included), any strides and dilations
    (>= 1, height and width apart), any padding (asymmetric included); weights int8 or 4-bit
    (nibbles, unpacked at the kernel's root), int32 bias, per-channel or per-tensor
    multipliers, any requantize shift, output per `out_dtype`. Declines (the portable kernel
    stays) when the folded bias overflows int32 (`pack_operands`: OverflowError).
    """

    name: str
    lanes: int
    x_dtype: str  # the activation operand (weights are always int8)
    # The registered TensorIntrin's name, registering it on first use (loading it is not free:
    # `intrinsics.load_intrinsics`).
    intrinsic: Callable[[], str]
    # The target's requantize epilogue `(centered, channel_axis, params, attrs, shifts) -> y`
    # and the stages it schedules after the dot product `(sch, lanes)` (e.g. HVX's vector
    # lanes: `hexagon.stages`); None: the portable int64 epilogue, nothing more.
    epilogue: Callable | None = None
    stages: Callable[[tvm.s_tir.Schedule, int], None] | None = None
    depth: int = 4  # K: reduction values per lane (4 bytes; 2 for int16 pairs)
    packed_dtype: str | None = None  # the packed activations' type (None: `x_dtype`)
    columns: int = BLOCK_COLUMNS  # most output columns per register block
    row_packing: bool = False  # convs with small weights pack a row block at a time
    row_packing_from: int = 0  # ... where the whole packed input would take this many bytes
    # Builds a conv fused with the one-row table that takes its output ("conv2d_lut",
    # `passes.fuse_conv_table`), the lookups in the epilogue (`place_table`).
    fuses_tables: bool = False
    # (name, C) of an intrinsic taking C adjacent output columns at once, registered on first
    # use (`schedule_acc`'s `columns_intrin`); None: one column a call.
    columns_intrinsic: Callable[[], tuple[str, int]] | None = None
    # The target's own copy into a conv's packed input `(sch, attrs)`, after the padding
    # split, for convs that do not fold their kernel's columns (HVX: `hexagon.packing`'s
    # shuffle networks); None: the copy as scheduled.
    packing: Callable[[tvm.s_tir.Schedule, dict], bool] | None = None
    # ... and its own move of a conv's requantized lanes to the output's planes
    # (`requantize_out`; HVX: `hexagon.output_planes`); None: the move as scheduled.
    unpacking: Callable[[tvm.s_tir.Schedule], bool] | None = None

    @property
    def kernel_names(self) -> tuple[str, ...]:
        """The `qcompiler.schedule` attributes of the kernels this rule builds (tuning finds
        its kernels by them)."""
        return (self.name,)

    def applies(self, op: str, attrs: dict, x_dtype: str) -> bool:
        """conv2d with groups == 1 and dense fit (one activation broadcast over the output
        lanes); depthwise (a different activation per output channel) does not."""
        convs = ("conv2d", "conv2d_lut") if self.fuses_tables else ("conv2d",)
        return x_dtype == self.x_dtype and (
            op == "dense" or (op in convs and attrs["groups"] == 1))

    def workload(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                 shifts: str = "any") -> tirx.PrimFunc:
        """The unscheduled packed kernel: what tuning searches schedules for, and the key of
        a tuning record (same compute, same record). `shifts`: "right" when every
        requantize shift is <= -1 (a simpler vector epilogue; `fixed_point32`)."""
        epilogue = (kernels._requantize_channels if self.epilogue is None
                    else functools.partial(self.epilogue, shifts=shifts))
        group = 1 if self.columns_intrinsic is None else self.columns_intrinsic()[1]
        return te.create_prim_func(COMPUTES[op](
            x_shape, x_dtype, w_shape, attrs, lanes=self.lanes, epilogue=epilogue,
            depth=self.depth, packed_dtype=self.packed_dtype, column_group=group))

    def schedule(self, sch: tvm.s_tir.Schedule, tunable: bool = False) -> None:
        """The whole schedule of a workload: the dot product (`schedule_acc`, the part tuning
        samples), then the target's stages around it. Tuning's design space and its traces
        are this function, so a record replays all of it."""
        columns = None if self.columns_intrinsic is None else self.columns_intrinsic()
        schedule_acc(sch, self.intrinsic(), tunable, self.columns, self.row_packing, columns,
                     self.row_packing_from)
        if self.stages is not None:
            self.stages(sch, self.lanes)
        if has_block(sch, "lut"):
            place_table(sch)

    def design_spaces(self, sch: tvm.s_tir.Schedule) -> list[tvm.s_tir.Schedule]:
        """Tuning's design spaces for a workload: schedules whose sampled decisions the
        search varies, the first the fixed schedule's (`schedule(tunable=True)`). A choice
        that changes which instructions a schedule has (a loop order) is one space per
        option: a trace replays its instructions as recorded, only its decisions vary.
        Here the second is the other packing of a conv's input (by row blocks or whole,
        `packs_rows`), where it applies."""
        fixed = sch.copy()
        self.schedule(fixed, tunable=True)
        spaces = [fixed]
        for rows in (False, True):
            other = sch.copy()
            dataclasses.replace(self, row_packing=rows, row_packing_from=0).schedule(other, True)
            if not any(tvm_ffi.structural_equal(s.mod, other.mod) for s in spaces):
                spaces.append(other)
        return spaces

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              trace: tvm.s_tir.Trace | None = None, shifts: str = "any") -> tirx.PrimFunc:
        """The packed kernel; its operands are `pack_operands`' results. `trace`: a tuned
        schedule for `workload(...)` (from the tuning database) instead of the fixed one."""
        sch = tvm.s_tir.Schedule(self.workload(op, x_shape, x_dtype, w_shape, attrs, shifts))
        if trace is None:
            self.schedule(sch)
        else:
            trace.apply_to_schedule(sch, remove_postproc=False)
        func = self.finish(sch, x_shape, attrs, w_shape)
        packed_attrs = {**attrs, "packed_lanes": self.lanes, "w_shape": list(w_shape)}
        if folds_columns(w_shape, attrs, self.depth):
            packed_attrs["columns_folded"] = True
        if nibbles.is_nibbles(attrs):
            packed_attrs.update(nibbles.storage_attrs(packed_shape(
                packed_weight_shape(w_shape, attrs, self.depth), self.lanes, self.depth)))
        return func.with_attr({"qcompiler.op": op, "qcompiler.attrs": json.dumps(packed_attrs),
                               "qcompiler.schedule": self.name})

    def finish(self, sch: tvm.s_tir.Schedule, x_shape: tuple, attrs: dict,
               w_shape: tuple | None = None) -> tirx.PrimFunc:
        """What follows the schedule (or a trace) outside it, and outside tuning's traces:
        here the padding split (`split_padding`), then the target's `packing` of a conv's
        input and `unpacking` of its output. Tuning's builder applies it to every candidate too, so candidates are measured
        as they will run."""
        split_padding(sch)
        if self.packing is not None and w_shape is not None and len(x_shape) == 4 \
                and not folds_columns(w_shape, attrs, self.depth):
            self.packing(sch, attrs)
        if self.unpacking is not None and has_block(sch, "requantize_out"):
            self.unpacking(sch)
        return sch.mod["main"]

    def pack_operands(self, w: np.ndarray, bias: np.ndarray, attrs: dict
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(packed weights, folded bias) for the portable kernel's int8 (weights, bias); the
        packed weights as nibbles where the kernel stores them so (`attrs`)."""
        folded = fold_columns(w) if folds_columns(w.shape, attrs, self.depth) else w
        wp = pack(folded, self.lanes, self.depth)
        return nibbles.pack(wp) if nibbles.is_nibbles(attrs) else wp, \
            folded_bias(w, bias, attrs["zp_x"])
