"""The portable depthwise convolution one channel at a time, for targets with no depthwise
kernel of their own (ARM; Hexagon's strided ones).

The portable kernel (`kernels.conv2d`) has no schedule: TVM computes each stage for the
whole tensor, so a depthwise layer holds its input centered and padded in int32 and its int32
accumulators at once, 8x its input and 4x its output (ARM, the bundled model's depthwise
conv: 57 KiB of scratch, the workspace 3.9x the live activations). Here the same stages run
per channel, channels in parallel: the channel's padded plane, its accumulators, its
requantize, each small enough for the stack. Same computation, same numbers; the requantize
in int32 lanes (`lanes32`).
"""
from __future__ import annotations

import functools

import tvm
from qcompiler.schedules.axis_loops import axis_loops
from qcompiler.schedules.fixed_point32 import shift_kind32
from qcompiler.schedules.lanes32 import requantize_lanes32
from qcompiler.schedules.vector_rule import VectorRule
from tvm import tirx

from qcompiler import kernels
from qcompiler.numerics import nibbles


def depthwise_by_channel(func: tirx.PrimFunc, attrs: dict, consts: list
                         ) -> tirx.PrimFunc | None:
    """The portable depthwise kernel (groups == channels == outputs) scheduled per channel;
    None for other convs."""
    x, w = func.params[:2]
    channels = int(x.shape[1])
    if attrs["groups"] != channels or int(w.shape[0]) != channels \
            or nibbles.is_nibbles(attrs) or "lut" in attrs:
        return None
    # The requantize in int32 lanes (`lanes32`; int64 is two lanes per NEON vector and
    # scalar on HVX): the bundled model's depthwise conv on ARM 103,049 -> 96,969
    # instructions.
    shifts = consts[4]
    kind = shift_kind32(shifts)
    x_shape, w_shape = (tuple(int(d) for d in p.shape) for p in (x, w))
    func = kernels.conv2d(x_shape, str(x.dtype), w_shape, attrs,
                          functools.partial(requantize_lanes32, shifts=kind))
    sch = tvm.s_tir.Schedule(func)
    out = sch.get_sblock("requantize")
    b, c = sch.get_loops(out)[:2]
    channel = sch.fuse(b, c)
    sch.parallel(channel)
    acc = sch.get_sblock("acc")
    sch.compute_at(acc, channel, preserve_unit_loops=True)  # (one row, one column: a loop)
    sch.compute_at(sch.get_sblock("x_centered"), channel, preserve_unit_loops=True)
    # Each stage's row innermost (the taps outside it), for the vectorizer.
    axes = axis_loops(sch, acc)  # (b, o, i, j, rc, ry, rx)
    i, j, taps = axes[2], axes[3], [axes[k] for k in (4, 5, 6)]
    sch.reorder(i, *taps, j)
    sch.decompose_reduction(acc, taps[0])
    return sch.mod["main"]


CHANNEL_LOCAL = VectorRule("channel_local", {"conv2d": depthwise_by_channel})
"""Accepts depthwise conv2d (groups == channels == outputs, any kernel, strides, dilations
and padding, 8-bit weights); other kernels keep the portable kernel."""
