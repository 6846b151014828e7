"""The portable depthwise convolution one channel at a time, for targets with no depthwise
kernel of their own (ARM; Hexagon's strided ones).

The portable kernel (`kernels.conv2d`) has no schedule: TVM computes each stage for the
whole tensor, so a depthwise layer holds its input centered and padded in int32 and its int32
accumulators at once, 8x its input and 4x its output (ARM, the bundled model's depthwise
conv: 57 KiB of scratch, the workspace 3.9x the live activations). Here the same stages run
per channel, channels in parallel: the channel's padded plane, its accumulators, its
requantize, each small enough for the stack. Same computation, same numbers; the requantize
in int32 lanes (`lanes32`), vectorized over the channel's pixels a chunk at a time.

On ARM the kernel is a tuning task (`schedules.tunable_rules`): its design space is the
requantize's chunk (a perfect tile of the output's pixels). Measured under qemu-aarch64 on
the bundled model's depthwise conv (32 channels, 14x14): the requantize not vectorized
96,967 instructions; a row (14 lanes) 79,038; 28 lanes 72,867; 49 lanes 74,819; with the
padded plane's rows vectorized (the padding's tests partitioned out) 67,006. Tried and
lost there: the taps unrolled (77,278), the columns explicitly vectorized (74,398), the
accumulators kept over the taps a block of columns at a time (74,430).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
import tvm
from qcompiler.schedules.axis_loops import axis_loops
from qcompiler.schedules.fixed_point32 import shift_kind32
from qcompiler.schedules.lanes32 import requantize_lanes32
from qcompiler.schedules.vector_rule import VectorRule
from tvm import tirx

from qcompiler import kernels
from qcompiler.numerics import nibbles

NEON_CHUNK = 32  # most int32 lanes per requantize chunk on NEON: 8 registers


def _chunk(pixels: int, most: int) -> int:
    """The fixed schedule's chunk: the largest divisor of `pixels` up to `most`; none (1)
    for a plane of fewer than 8 pixels, where vectors' set-up costs more than the scalar
    code (mobilenet_v3_small's 2x2 planes: 21,362 instructions; the requantize vectorized
    36,018, also the padded plane 39,475): such a plane keeps LLVM's own loops."""
    if pixels < 8:
        return 1
    return max(d for d in range(1, min(pixels, most) + 1) if pixels % d == 0)


@dataclass(frozen=True)
class ChannelLocal:
    """The depthwise kernel per channel, as a rule (`rule()`) and as a tuning task's rule.

    Accepts depthwise conv2d (groups == channels == outputs, any kernel, strides, dilations
    and padding, 8-bit weights); other kernels keep the portable kernel."""

    name: str
    # NEON: the padded plane's rows vectorized, the padding's tests cut out of the
    # interior (loop partition), the requantize in vector chunks of the pixels (a perfect
    # tile: tuning's decision). Else (HVX, whose kernel of choice is `depthwise_lanes`) the
    # stages as LLVM vectorizes them alone (mobilenet_v3_small: the NEON form 877,876 ->
    # 879,976 packets).
    vectors: bool = True

    @property
    def kernel_names(self) -> tuple[str, ...]:
        return (self.name,)

    @staticmethod
    def shift_kind(shift: np.ndarray | None) -> str:
        return shift_kind32(shift)

    def workload(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
                 shifts: str = "any") -> tirx.PrimFunc:
        """The portable kernel's computation with the int32-lane requantize (same operands:
        nothing is packed)."""
        return kernels.conv2d(x_shape, x_dtype, w_shape, attrs,
                              functools.partial(requantize_lanes32, shifts=shifts))

    def schedule(self, sch: tvm.s_tir.Schedule, tunable: bool = False) -> None:
        """Channels in parallel; per channel its padded plane, the accumulators (each row
        innermost, the taps outside it, for the vectorizer), the requantize in chunks."""
        out = sch.get_sblock("requantize")
        b, c = sch.get_loops(out)[:2]
        channel = sch.fuse(b, c)
        sch.parallel(channel)
        acc = sch.get_sblock("acc")
        sch.compute_at(acc, channel, preserve_unit_loops=True)  # (one row, one column: a loop)
        sch.compute_at(sch.get_sblock("x_centered"), channel, preserve_unit_loops=True)
        axes = axis_loops(sch, acc)  # (b, o, i, j, rc, ry, rx)
        i, j, taps = axes[2], axes[3], [axes[k] for k in (4, 5, 6)]
        sch.reorder(i, *taps, j)
        sch.decompose_reduction(acc, taps[0])
        pixels = sch.fuse(*sch.get_loops(out)[1:])
        extent = int(sch.get(pixels).extent)
        chunk = _chunk(extent, NEON_CHUNK)
        if not self.vectors or chunk == 1:
            return
        rows, cols = sch.get_loops(sch.get_sblock("x_centered"))[-2:]
        for loop in (rows, cols):
            sch.annotate(loop, "pragma_loop_partition_hint", 1)
        if int(sch.get(cols).extent) > 1:  # (an 8x1 plane unpadded: one column)
            sch.vectorize(cols)
        factors = [extent // chunk, chunk]
        if tunable:
            factors = sch.sample_perfect_tile(pixels, n=2, max_innermost_factor=64,
                                              decision=factors)
        sch.vectorize(sch.split(pixels, factors)[1])

    def design_spaces(self, sch: tvm.s_tir.Schedule) -> list[tvm.s_tir.Schedule]:
        fixed = sch.copy()
        self.schedule(fixed, tunable=True)
        return [fixed]

    def build(self, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple, attrs: dict,
              trace: tvm.s_tir.Trace | None = None, shifts: str = "any") -> tirx.PrimFunc:
        """The kernel: the fixed schedule, or a tuning record's trace."""
        sch = tvm.s_tir.Schedule(self.workload(op, x_shape, x_dtype, w_shape, attrs, shifts))
        if trace is None:
            self.schedule(sch)
        else:
            trace.apply_to_schedule(sch, remove_postproc=False)
        return self.finish(sch, x_shape, attrs).with_attr({
            "qcompiler.op": op, "qcompiler.attrs": json.dumps(attrs),
            "qcompiler.schedule": self.name})

    def finish(self, sch: tvm.s_tir.Schedule, x_shape: tuple, attrs: dict) -> tirx.PrimFunc:
        return sch.mod["main"]

    def rebuild(self, func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
        """The portable depthwise kernel `func` rebuilt (a `VectorRule` builder); None for
        other convs."""
        x, w = func.params[:2]
        channels = int(x.shape[1])
        if attrs["groups"] != channels or int(w.shape[0]) != channels \
                or nibbles.is_nibbles(attrs) or "lut" in attrs:
            return None
        x_shape, w_shape = (tuple(int(d) for d in p.shape) for p in (x, w))
        return self.build("conv2d", x_shape, str(x.dtype), w_shape, attrs,
                          shifts=self.shift_kind(consts[4]))

    def rule(self) -> VectorRule:
        return VectorRule(self.name, {"conv2d": self.rebuild})


NEON_CHANNEL_LOCAL = ChannelLocal("channel_local")
HVX_CHANNEL_LOCAL = ChannelLocal("channel_local", vectors=False)
CHANNEL_LOCAL = NEON_CHANNEL_LOCAL.rule()
HVX_CHANNEL_LOCAL_RULE = HVX_CHANNEL_LOCAL.rule()


def depthwise_by_channel(func: tirx.PrimFunc, attrs: dict, consts: list
                         ) -> tirx.PrimFunc | None:
    """The portable depthwise kernel (groups == channels == outputs) scheduled per channel
    (NEON's chunks); None for other convs."""
    return NEON_CHANNEL_LOCAL.rebuild(func, attrs, consts)
