"""The stages around a dot-product kernel's inner product, on HVX vector lanes.

The accumulator comes out of the dot product with its L output channels innermost
(`acc[.., o/L, .., o%L]`), and so do the per-channel bias, multiplier and shift: the epilogue
runs on the same L lanes, with the multiply in 32-bit lanes (`fixed_point32`; the int64
formula of `kernels._requantize_channels` is scalar code on HVX). A convolution's NCHW output
takes those L bytes at a stride of one plane each (scalar stores: a transpose is a byte move
per output on any schedule); a dense layer's output is contiguous.
"""
from __future__ import annotations

from typing import Any

import tvm
from tvm import te, tirx

from qcompiler.schedules.fixed_point32 import clamp_cast32, q_multiply_shift32
from qcompiler.schedules.hvx_vector import VECTOR_BYTES, vectorize_loop


def requantize_lanes32(acc: te.Tensor, channel_axis: int, params: tuple, attrs: dict,
                       shifts: str = "any") -> te.Tensor:
    """`kernels._requantize_channels` with the same numbers in int32 lanes (`shifts`: what
    the shift operand is known to hold, as in `q_multiply_shift32`)."""
    _, bias, m0, shift = params

    def body(*i: Any) -> Any:
        c = i[channel_axis]
        return clamp_cast32(q_multiply_shift32(acc[i] + bias[c], m0[c], shift[c], shifts),
                            attrs["zp_y"], attrs["lo"], attrs["hi"], attrs["out_dtype"])

    return te.compute(acc.shape, body, name="requantize")


def schedule_stages(sch: tvm.s_tir.Schedule, lanes: int) -> None:
    """After `schedule_acc`: the stages around the dot product, for HVX."""
    _vectorize_epilogue(sch, lanes)
    pack = sch.get_sblock("x_packed")
    if len(sch.get(pack).iter_vars) == 3:  # dense: a copy (a plain one when K % 4 == 0)
        vectorize_loop(sch, sch.fuse(*sch.get_loops(pack)), VECTOR_BYTES)


def _vectorize_epilogue(sch: tvm.s_tir.Schedule, lanes: int) -> None:
    """The "requantize" block vectorized over its output channels, L at a time (a channel
    count off the multiple gets a scalar tail)."""
    block = sch.get_sblock("requantize")
    loops = sch.get_loops(block)
    if len(sch.get(block).iter_vars) == 4:  # conv, under its column block: (channel, column)
        channel, column = loops[-2:]
        sch.reorder(column, channel)
        vectorize_loop(sch, channel, lanes)
    else:  # dense: (batch x channel) fused
        vectorize_loop(sch, loops[-1], lanes)
