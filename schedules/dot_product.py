"""Integer kernels with the inner product on a dot-product instruction: L output lanes, each the
sum of 4 byte products, one activation operand broadcast over the lanes.

    ARM  `sdot`:     L = 4,  s8 x s8 -> s32  (TVM's ARM_DOT_4x4_i8_SDOT_INTRIN)
    x86  `vpdpbusd`: L = 16, u8 x s8 -> s32  (TVM's VNNI_DOT_16x4_INTRIN, AVX-512 VNNI)
    HVX  `vrmpy`:    L = 32, u8 x s8 -> s32  (TVM's VRMPY_u8i8i32_INTRIN, 128-byte vectors)

Same operands and attributes as the portable kernels in `qcompiler.kernels` (so the reference
and the graph are unchanged); inside, the computation is re-laid for the instruction:

    acc[n, o/L, y, x, o%L] = sum_{c/4, ky, kx, c%4} xp[n, c/4, y', x', c%4] * wp[o/L, c/4, ky, kx, o%L, c%4]

with activations packed to 4-channel blocks in the kernel (spatial padding = zp_x, channel
padding = 0) and weights packed to L x 4 blocks once, at compile time
(`qcompiler.weight_layout`). Raw byte products need the zero point out of the dot product,
which the packed bias carries:

    sum (x - zp_x) w + b = sum x w + (b - zp_x * sum w)      (exact in int32)

then the usual requantize epilogue. The packed kernel's attributes add `packed_lanes` and
`w_shape`, from which the reference unpacks the weights and the bias.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.weight_layout import folded_bias, pack
from qcompiler.schedules.intrinsics import load_intrinsics


def _ceil(n: int, k: int) -> int:
    return (n + k - 1) // k


def _ceil4(n: int) -> int:
    return _ceil(n, 4)


def _packed_params(w_shape: tuple, lanes: int) -> tuple:
    """The constant operands of a packed kernel: weights in `weight_layout.pack` order, and
    per output channel the folded bias (`b - zp_x sum w`), Q31 multiplier and shift."""
    cout, cin = w_shape[:2]
    packed = (_ceil(cout, lanes), _ceil4(cin), *w_shape[2:], lanes, 4)
    return (te.placeholder(packed, "int8", name="w_packed"),
            *(te.placeholder((cout,), "int32", name=n) for n in ("bias", "m0", "shift")))


def conv2d_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                   lanes: int = 4) -> list:
    n, cin, h, w_ = x_shape
    cout, cin_w, kh, kw = w_shape
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["padding"]
    dh, dw = attrs["dilation"]
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w_ + pl + pr - dw * (kw - 1) - 1) // sw + 1
    c4, o4, L = _ceil4(cin), _ceil(cout, lanes), lanes
    zp = attrs["zp_x"]
    x = te.placeholder(x_shape, x_dtype, name="x")
    params = _packed_params(w_shape, L)
    wp = params[0]

    def packed(b, cb, i, j, ci):  # noqa: ANN001, ANN202
        # One condition and one constant (zp_x, also in the channel tail, where the packed
        # weights are 0): the padding pattern `schedule_acc` splits into fill and copy.
        inside = [i >= pt, i < h + pt, j >= pl, j < w_ + pl]
        if cin % 4:
            inside.append(cb * 4 + ci < cin)
        return tirx.if_then_else(tirx.all(*inside),
                                 x[b, tirx.min(cb * 4 + ci, cin - 1), i - pt, j - pl],
                                 tirx.const(zp, x_dtype))

    xp = te.compute((n, c4, h + pt + pb, w_ + pl + pr, 4), packed, name="x_packed")
    rcb = te.reduce_axis((0, c4), name="rcb")
    rky = te.reduce_axis((0, kh), name="rky")
    rkx = te.reduce_axis((0, kw), name="rkx")
    rci = te.reduce_axis((0, 4), name="rci")
    acc = te.compute(
        (n, o4, oh, ow, L),
        lambda b, ob, i, j, oi: te.sum(
            xp[b, rcb, i * sh + rky * dh, j * sw + rkx * dw, rci].astype("int32")
            * wp[ob, rcb, rky, rkx, oi, rci].astype("int32"), axis=[rcb, rky, rkx, rci]),
        name="acc")
    centered = te.compute((n, cout, oh, ow), lambda b, o, i, j: acc[b, o // L, i, j, o % L],
                          name="acc_centered")
    y = kernels._requantize_channels(centered, 1, params, attrs)
    return [x, *params, y]


def dense_compute(x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                  lanes: int = 4) -> list:
    """`acc[n, o/L, o%L] = sum_{k/4, k%4} xp[n, k/4, k%4] * wp[o/L, k/4, o%L, k%4]`."""
    n, k = x_shape
    cout, _ = w_shape
    k4, o4, L = _ceil4(k), _ceil(cout, lanes), lanes
    x = te.placeholder(x_shape, x_dtype, name="x")
    params = _packed_params(w_shape, L)
    wp = params[0]
    xp = te.compute((n, k4, 4), lambda b, kb, ki: tirx.if_then_else(
        kb * 4 + ki < k, x[b, tirx.min(kb * 4 + ki, k - 1)], tirx.const(0, x_dtype)),
        name="x_packed")
    rkb = te.reduce_axis((0, k4), name="rkb")
    rki = te.reduce_axis((0, 4), name="rki")
    acc = te.compute((n, o4, L), lambda b, ob, oi: te.sum(
        xp[b, rkb, rki].astype("int32") * wp[ob, rkb, oi, rki].astype("int32"),
        axis=[rkb, rki]), name="acc")
    centered = te.compute((n, cout), lambda b, o: acc[b, o // L, o % L], name="acc_centered")
    y = kernels._requantize_channels(centered, 1, params, attrs)
    return [x, *params, y]


BLOCK_COLUMNS = 16  # output columns per register block (accumulators live across the reduction)
BLOCK_CHANNELS = 4  # at most this many output-channel blocks per register block (tuning only)


def _tile(sch: tvm.s_tir.Schedule, loop: tirx.For, inner: int, tunable: bool,
          max_inner: int) -> list:
    """Split `loop` into (outer, inner): `inner` when fixed; a sampled perfect tile (one
    MetaSchedule can mutate) starting from `inner` when tuning."""
    extent = int(sch.get(loop).extent)
    if not tunable:
        return sch.split(loop, [None, inner])
    factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_inner,
                                      decision=[extent // inner, inner])
    return sch.split(loop, factors)


def schedule_acc(sch: tvm.s_tir.Schedule, intrin: str, tunable: bool = False) -> None:
    """Move the output lanes and the 4-deep reduction innermost and map them to the
    instruction.

    Convolutions are register-blocked: J output columns (by default the largest divisor of
    the width up to BLOCK_COLUMNS) times K output-channel blocks (by default 1) are computed
    together, the reduction outside them, so each weight vector is loaded once per J products
    and the J x K accumulators stay in registers; the requantize epilogue runs on each block
    right after it is complete, while it is in cache. `tunable` turns J and K into sampled
    tiles (the design space of `qcompiler.tuning`: tile decisions are what a trace can replay
    with new values; a choice of loop order made in Python could not be); their first values
    are the fixed schedule's.
    """
    block = sch.get_sblock("acc")
    loops = sch.get_loops(block)
    conv = len(loops) == 9  # n, o/L, y, x, o%L | c/4, ky, kx, c%4
    n_spatial = len(loops) - (4 if conv else 2)
    spatial, reduction = loops[:n_spatial], loops[n_spatial:]
    lane = spatial[-1]
    sch.compute_inline(sch.get_sblock("acc_centered"))
    if conv:
        b, ob, i, j = spatial[:4]
        width = int(sch.get(j).extent)
        cols = max(d for d in range(1, BLOCK_COLUMNS + 1) if width % d == 0)
        jo, ji = _tile(sch, j, cols, tunable, BLOCK_COLUMNS)
        obo, obi = _tile(sch, ob, 1, tunable, BLOCK_CHANNELS)
        outer = list(reduction[:-1])  # c/4, ky, kx
        sch.reorder(b, obo, i, jo, *outer, obi, ji, lane, reduction[-1])
        # Threads split the batch x output-channel-block x row space: disjoint outputs.
        sch.parallel(sch.fuse(b, obo, i))
        sch.reverse_compute_at(sch.get_sblock("requantize"), jo)
        sch.decompose_reduction(block, outer[0])
        sch.unroll(ji)
        sch.unroll(obi)
    else:
        b, ob = spatial[:2]
        obo, obi = _tile(sch, ob, 1, tunable, BLOCK_CHANNELS)
        sch.reorder(b, obo, reduction[0], obi, lane, reduction[-1])
        sch.parallel(sch.fuse(b, obo))
        sch.decompose_reduction(block, reduction[0])
        sch.unroll(obi)
        outer = sch.get_loops(sch.get_sblock("requantize"))
        sch.parallel(sch.fuse(*outer[:2]))
    sch.tensorize(lane, intrin)
    _schedule_packing(sch)


def _schedule_packing(sch: tvm.s_tir.Schedule) -> None:
    """x_packed in parallel over (batch, channel block); a padded conv's border is filled
    apart from the interior copy, so the copy has no condition and LLVM vectorizes it (the 4
    channel rows interleaved into 4-byte groups)."""
    block = sch.get_sblock("x_packed")
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops[:2])
    sch.parallel(fused)
    if len(loops) == 5 and sch.can_decompose_padding(block, fused):
        sch.decompose_padding(block, fused)


COMPUTES = {"conv2d": conv2d_compute, "dense": dense_compute}


@dataclass(frozen=True)
class DotProduct:
    """One dot-product instruction as a kernel rule for `qcompiler.schedules`."""

    name: str
    lanes: int
    x_dtype: str  # the activation operand (weights are always int8)
    intrin_module: str
    intrin_name: str

    def applies(self, op: str, attrs: dict, x_dtype: str) -> bool:
        """conv2d with groups == 1 and dense fit (one activation broadcast over the output
        lanes); depthwise (a different activation per output channel) does not."""
        return x_dtype == self.x_dtype and (
            op == "dense" or (op == "conv2d" and attrs["groups"] == 1))

    def intrinsic(self) -> str:
        """The registered TensorIntrin's name (registering it on first use)."""
        module = (importlib.import_module(self.intrin_module) if "." in self.intrin_module
                  else load_intrinsics(self.intrin_module))
        return getattr(module, self.intrin_name)

    def workload(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict
                 ) -> tirx.PrimFunc:
        """The unscheduled packed kernel: what tuning searches schedules for, and the key of
        a tuning record (same compute, same record)."""
        return te.create_prim_func(COMPUTES[op](x_shape, x_dtype, w_shape, attrs,
                                                lanes=self.lanes))

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              trace: "tvm.s_tir.Trace | None" = None) -> tirx.PrimFunc:
        """The packed kernel; its operands are `pack_operands`' results. `trace`: a tuned
        schedule for `workload(...)` (from the tuning database) instead of the fixed one."""
        intrin = self.intrinsic()
        sch = tvm.s_tir.Schedule(self.workload(op, x_shape, x_dtype, w_shape, attrs))
        if trace is None:
            schedule_acc(sch, intrin)
        else:
            trace.apply_to_schedule(sch, remove_postproc=False)
        func = sch.mod["main"]
        packed_attrs = {**attrs, "packed_lanes": self.lanes, "w_shape": list(w_shape)}
        return func.with_attr({"qcompiler.op": op, "qcompiler.attrs": json.dumps(packed_attrs),
                               "qcompiler.schedule": self.name})

    def pack_operands(self, w: np.ndarray, bias: np.ndarray, attrs: dict
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(packed weights, folded bias) for the portable kernel's (weights, bias)."""
        return pack(w, self.lanes), folded_bias(w, bias, attrs["zp_x"])


ARM_SDOT = DotProduct("arm_sdot", 4, "int8", "arm_cpu", "ARM_DOT_4x4_i8_SDOT_INTRIN")
X86_VNNI = DotProduct("x86_vnni", 16, "uint8", "qcompiler.schedules.x86_vnni",
                      "VNNI_DOT_16x4_INTRIN")
HEXAGON_VRMPY = DotProduct("hexagon_vrmpy", 32, "uint8", "hexagon", "VRMPY_u8i8i32_INTRIN")
