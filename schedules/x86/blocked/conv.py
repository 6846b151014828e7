"""conv2d (groups 1, or groups of whole channel blocks) on `vpdpbusd` over NCHW16c: register
blocks of columns x channel blocks, the reduction outside them, the epilogue on each block
while it is in registers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from qcompiler.schedules.dot_product import DotProduct, packed_params, split_tile
from qcompiler.schedules.x86.blocked.elementwise import add_body
from qcompiler.schedules.x86.blocked.layout import BLOCK, with_attrs
from qcompiler.schedules.x86.blocked.stages import (
    epilogue_attrs,
    epilogue_func,
    pad_by_task,
    padded_input,
    requantize,
    schedule_epilogue,
    schedule_pad,
    scheduled,
)
from qcompiler.schedules.x86.dot import vpdpbusd_intrinsic
from qcompiler.schedules.x86.lookup import lower_lookups
from qcompiler.schedules.x86.requantize import columns_apply
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.numerics.shapes import ceil_div, conv2d_out_hw
from qcompiler.numerics.weight_layout import folded_bias, pack

# Output columns per register block of the conv: J x 16 int32 accumulators stay under TVM's
# 1 KiB for stack buffers (a larger block comes from the workspace pool on every iteration).
BLOCK_COLUMNS = 15
FUSED = {"add": "_add", "lut": "_lut"}  # a fused conv's suffix to the rule's name
PAIRED_COLUMNS = 7  # with two channel blocks: 14 accumulators (or 8 columns: `register_columns`)


def register_columns(width: int, limit: int, epilogue: dict | None) -> int:
    """Output columns per register block: the largest divisor of the width up to `limit`, or
    8 where it divides the width and the epilogue goes 4 columns at a time (measured on
    ResNet-50 and MobileNetV2 shapes: 2 channel blocks x 8 columns beat 2 x 7 by 1-25%; with
    one channel block, 8 columns lose to 14 and stay out)."""
    if epilogue is not None and width % 8 == 0 and columns_apply(epilogue, 8):
        return 8
    return max(d for d in range(1, limit + 1) if width % d == 0)


def conv2d_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                   shifts: str = "any") -> list:
    """`x_shape`: the blocked input (by 16 channels, or by 4 for a stem); `w_shape`: the
    channel-padded (cout, cin, kh, kw). With attribute `add` (the add's attributes, with
    `conv_side` "a" or "b" and `skip_dtype`): the conv's output added to a `skip` operand;
    with attribute `lut`: a table applied to its output (`stages.table_stage`)."""
    n, cb, h, w_, lanes = x_shape
    cout, cin, kh, kw = w_shape
    # Grouped (`weight_layout.block_groups`): groups of whole blocks, `cin` channels each;
    # output block ob reads the `reach` = cin / 16 input blocks of its group, from block
    # (ob // reach) reach on.
    reach = cin // lanes if attrs["groups"] > 1 else None
    assert (reach and cin % lanes == 0 and cb * lanes == attrs["groups"] * cin
            or cin == cb * lanes) and lanes % 4 == 0 and cout % BLOCK == 0, (x_shape, w_shape)
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilation"]
    oh, ow = conv2d_out_hw((n, cb * lanes, h, w_), w_shape, attrs)
    x = te.placeholder(x_shape, x_dtype, name="x")
    params, wp = packed_params(w_shape, BLOCK, attrs)
    xp = padded_input(x, attrs)
    per_block = lanes // 4  # groups of 4 channels
    # A 1x1 conv whose channels end in a partly padded block reads only the groups with real
    # channels (their weights are 0 past them): one loop over the groups, blocks and all.
    groups = ceil_div(attrs.get("channels", [cin])[0], 4)
    skip = kh * kw == 1 and groups < cb * per_block and not reach
    if skip:
        cb, per_block = 1, groups
    if reach:
        cb = reach
    rcb = te.reduce_axis((0, cb), name="rcb")
    rky = te.reduce_axis((0, kh), name="rky")
    rkx = te.reduce_axis((0, kw), name="rkx")
    rcq = te.reduce_axis((0, per_block), name="rcq")
    rci = te.reduce_axis((0, 4), name="rci")
    acc = te.compute(
        (n, cout // BLOCK, oh, ow, BLOCK),
        lambda b, ob, i, j, oi: te.sum(
            xp[b, rcb + rcq // (lanes // 4) if skip else (ob // reach * reach + rcb if reach
                                                           else rcb), i * sh + rky * dh,
               j * sw + rkx * dw, (rcq % (lanes // 4) if skip else rcq) * 4 + rci
               ].astype("int32")
            * wp[ob, rcb * per_block + rcq, rky, rkx, oi, rci].astype("int32"),
            axis=[rcb, rky, rkx, rcq, rci]),
        name="acc")
    y = requantize(acc, params, attrs, shifts)
    if "add" not in attrs:
        return [x, *params, *(kernels.table_stage(y, attrs) or [y])]
    # Fused residual add (`plan_layout`): the conv's bytes, then the add, in one loop nest.
    skip = te.placeholder(tuple(y.shape), attrs["skip_dtype"], name="skip")
    a, b = (y, skip) if attrs["conv_side"] == "a" else (skip, y)
    return [x, *params, skip, te.compute(tuple(y.shape), add_body(a, b, attrs["add"]),
                                         name="add")]


def reduction_variants(sch: tvm.s_tir.Schedule) -> list[tuple[int, int]]:
    """(order, unroll) of `schedule_conv2d` that tuning tries, each a design space of its own
    (the fixed schedule's first): the input blocks outside the taps (0) or inside them (1),
    for a kernel of more than one tap; the register block unrolled (0), also the 4-channel
    groups of a block (1), also the taps along a row (2)."""
    loops = sch.get_loops(sch.get_sblock("acc"))
    taps = int(sch.get(loops[6]).extent) * int(sch.get(loops[7]).extent)
    return [(o, u) for o in range(2 if taps > 1 else 1) for u in range(3 if taps > 1 else 2)]


def schedule_conv2d(sch: tvm.s_tir.Schedule, intrin: str, tunable: bool = False,
                    order: int = 0, unroll: int = 0) -> None:
    """Register blocks of J columns x R rows x K channel blocks (with the 4-column epilogue:
    K 4 and J 4 where the blocks come in fours, K 2 and J 4 for a 1x1 conv of one input
    block; else K 2 where the blocks pair up and the width has a divisor from 4 to 7, J
    `register_columns` up to 7 (or 8); K 3 and J 4 for a 1x1 whose blocks come in threes;
    K 4 where they come in fours and the width has no divisor from 4 to 15 (J 1 or 3);
    else K 1 and J up to 15; R: 1; sampled tiles when tuning), the reduction outside them
    (`order` and `unroll`: `reduction_variants`), the epilogue on each block as soon as it
    is complete."""
    block = sch.get_sblock("acc")
    b, ob, i, j, oi, rcb, rky, rkx, rcq, rci = sch.get_loops(block)
    width = int(sch.get(j).extent)
    # Two channel blocks share each activation broadcast where the channel blocks pair up
    # (measured on ResNet-50 and MobileNetV2 shapes: equal or faster everywhere, +55-75% on
    # 7x7 outputs, where 7 columns alone reload a weight vector for every 7 instructions).
    blocks, epilogue = int(sch.get(ob).extent), epilogue_attrs(sch)
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
    elif blocks % 4 == 0 and register_columns(width, BLOCK_COLUMNS, None) < 4:
        # A width with no divisor from 4 to 15 (SqueezeNet's stem: 111 = 3 x 37): four
        # blocks share each broadcast of the 1 or 3 columns (3 x 4 blocks: 1.2x faster than
        # 3 x 2 on that stem, alone, weights cold).
        chans, cols = 4, register_columns(width, BLOCK_COLUMNS, None)
    elif chans == 1 or register_columns(width, PAIRED_COLUMNS, epilogue) < 4 \
            < register_columns(width, BLOCK_COLUMNS, None):
        # One block x up to 15 columns also where the width has no divisor from 4 to 7 (13,
        # 27, 55: paired blocks got 1 or 3 columns, a weight load per instruction or two;
        # measured 3-4x faster on SqueezeNet's 64 -> 256 3x3 at 13x13, 2.7x at 55x55).
        chans, cols = 1, register_columns(width, BLOCK_COLUMNS, None)
    else:
        cols = register_columns(width, PAIRED_COLUMNS, epilogue)
    jo, ji = split_tile(sch, j, cols, tunable, BLOCK_COLUMNS)
    obo, obi = split_tile(sch, ob, chans, tunable, 4)
    io, ii = split_tile(sch, i, 1, tunable, 4)
    reduction = [rcb, rky, rkx] if order == 0 else [rky, rkx, rcb]
    sch.reorder(b, obo, io, jo, *reduction, rcq, obi, ii, ji, oi, rci)
    task = sch.fuse(b, obo, io)
    pad_by_task(sch, task, int(sch.get(rcb).extent))
    sch.parallel(task)
    schedule_epilogue(sch, jo)
    sch.decompose_reduction(block, reduction[0])
    for loop in (ji, ii, obi, *[[], [rcq], [rcq, rkx]][unroll]):
        sch.unroll(loop)
    sch.tensorize(oi, intrin)
    init = sch.get_sblock("acc_init")
    sch.vectorize(sch.get_loops(init)[-1])


@dataclass(frozen=True)
class BlockedConv(DotProduct):
    """conv2d (groups 1, or groups of whole 16-channel blocks: `weight_layout.block_groups`)
    on NCHW16c activations. A `DotProduct` so that tuning finds its kernels
    (`schedules.tunable_rules`) and samples the same register-block tiles; only `plan_layout`
    builds blocked kernels.

    Accepts: uint8 activations blocked by 16 (or by 4 for a stem of fewer than 16 channels on
    an NCHW input), any batch and spatial size, weights channel-padded to (16k, 16m or 4m, kh,
    kw) (`plan_layout` pads them; zero weights; grouped: (16k, 16m, kh, kw), groups of m
    blocks), any kernel, strides and dilations (>= 1, height and width apart), any padding; int8 weights (4-bit layers stay NCHW), int32 bias,
    any requantize shift, output per `out_dtype`; with attribute `add`, the conv's output
    added to a skip operand of either 8-bit dtype (`conv2d_compute`).
    """

    @property
    def kernel_names(self) -> tuple[str, ...]:
        return (self.name, self.name + FUSED["add"], self.name + FUSED["lut"])

    def workload(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                 shifts: str = "any") -> tirx.PrimFunc:
        return epilogue_func(conv2d_compute(x_shape, x_dtype, w_shape, attrs, shifts), attrs,
                              shifts)

    def schedule(self, sch: tvm.s_tir.Schedule, tunable: bool = False) -> None:
        schedule_conv2d(sch, self.intrinsic(), tunable)

    def design_spaces(self, sch: tvm.s_tir.Schedule) -> list[tvm.s_tir.Schedule]:
        spaces = []
        for order, unroll in reduction_variants(sch):
            space = sch.copy()
            schedule_conv2d(space, self.intrinsic(), True, order, unroll)
            spaces.append(space)
        return spaces

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              trace: "tvm.s_tir.Trace | None" = None, shifts: str = "any") -> tirx.PrimFunc:
        sch = scheduled(self, op, x_shape, x_dtype, w_shape, attrs, trace, shifts)
        packed = {**attrs, "packed_lanes": BLOCK, "w_shape": list(w_shape)}
        fused = next((FUSED[k] for k in FUSED if k in attrs), "")
        return with_attrs(self.finish(sch, x_shape, attrs), op, packed, self.name + fused)

    def finish(self, sch: tvm.s_tir.Schedule, x_shape: tuple, attrs: dict) -> tirx.PrimFunc:
        """The padded copy's schedule (not tuned) and the table lookups' bodies."""
        schedule_pad(sch, attrs["padding"][1], x_shape[3])
        return lower_lookups(sch.mod["main"])

    def pack_operands(self, w: np.ndarray, bias: np.ndarray, attrs: dict
                      ) -> tuple[np.ndarray, np.ndarray]:
        return pack(w, BLOCK), folded_bias(w, bias, attrs["zp_x"])


BLOCKED_VNNI = BlockedConv("x86_vnni_blocked", BLOCK, "uint8", vpdpbusd_intrinsic)
