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

from qcompiler.schedules.x86.blocked.conv import (
    BLOCKED_VNNI,
    BlockedConv,
    conv2d_compute,
    schedule_conv2d,
)
from qcompiler.schedules.x86.blocked.depthwise import (
    CHUNKED_PLANE_BYTES,
    BlockedDepthwise,
    chunk_rows,
    depthwise,
    depthwise_rule,
)
from qcompiler.schedules.x86.blocked.elementwise import (
    ByteRescale,
    add,
    add_body,
    global_mean,
    interleave_phases,
    max_pool2d,
    mul,
    requantize,
    rescale_form,
    resize,
    table,
)
from qcompiler.schedules.x86.blocked.layout import (
    BLOCK,
    LAYOUT,
    STEM_BLOCK,
    blocked_shape,
    from_blocked,
    padded_channels,
    to_blocked,
)

__all__ = ["BLOCK", "BLOCKED_VNNI", "CHUNKED_PLANE_BYTES", "LAYOUT", "STEM_BLOCK", "BlockedConv",
           "BlockedDepthwise", "ByteRescale", "add", "add_body", "blocked_shape", "chunk_rows",
           "conv2d_compute", "depthwise", "depthwise_rule", "from_blocked", "global_mean",
           "interleave_phases", "max_pool2d", "mul", "padded_channels", "requantize",
           "rescale_form", "resize", "schedule_conv2d", "table", "to_blocked"]
