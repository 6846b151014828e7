"""The requantize epilogue of a dot-product kernel (`dot_product`'s `epilogue` and part of its
`stages`) in int32 lanes (`fixed_point32`), for targets whose int64 vectors are scalar or
slow: HVX (no 64-bit lanes) and NEON (two per vector: on ARM the portable int64 epilogue was a
quarter of a conv's instructions).

The accumulator comes out of the dot product with its L output channels innermost
(`acc[.., o/L, .., o%L]`): the epilogue runs on the same L lanes. A dense layer's output is
contiguous in the channels. A convolution's NCHW output takes the L results at a stride of
one plane each: the epilogue computes all L lanes of every channel block (lanes past the last
channel repeat its operands, so a channel count off the multiple still fills whole vectors:
LLVM turns a part-vector into scalar code on HVX) into int32 scratch, and a scalar loop moves
each byte to its plane (a transpose is a byte move per output on any schedule; LLVM splits
vector stores to scattered bytes no better).
"""
from __future__ import annotations

from typing import Any

import tvm
from qcompiler.schedules.fixed_point32 import clamp_cast32, q_multiply_shift32
from qcompiler.schedules.hexagon.loops import vectorize_loop
from tvm import te

from qcompiler.numerics.requantize import RequantizeAttrs


def vector_epilogue(centered: te.Tensor, channel_axis: int, params: tuple, attrs: dict,
                    shifts: str = "any") -> te.Tensor:
    """The epilogue of a packed dot-product kernel (`dot_product`'s `epilogue` argument):
    `centered` is its NCHW / NC view of the accumulator."""
    rq = RequantizeAttrs.from_attrs(attrs)
    if len(centered.shape) == 2:
        return requantize_lanes32(centered, channel_axis, params, attrs, shifts)
    acc = centered.op.input_tensors[0]  # (n, o/L, y, x, L)
    n_lanes, cout = int(acc.shape[-1]), int(centered.shape[1])
    _, bias, m0, shift = params

    def body(b: Any, ob: Any, i: Any, j: Any, oi: Any) -> Any:
        # Lanes past the last channel repeat its operands (the min() folds away when the
        # channels fill whole blocks; else LLVM hoists the gather out of the columns' loop).
        c = ob * n_lanes + oi  # centered[.., c, ..] is acc[.., c // L, .., c % L]: in bounds
        o = tvm.te.min(c, cout - 1)
        return clamp_cast32(q_multiply_shift32(centered[b, c, i, j] + bias[o], m0[o], shift[o],
                                               shifts),
                            rq.zp_y, rq.lo, rq.hi, "int32")

    # Named "requantize": `schedule_acc` computes it per block of columns. Reading `centered`
    # (inlined there) keeps the accumulator's block structure the schedule expects.
    lanes = te.compute(acc.shape, body, name="requantize")
    return te.compute(centered.shape, lambda b, o, i, j: lanes[
        b, o // n_lanes, i, j, o % n_lanes].astype(rq.out_dtype), name="requantize_out")


def requantize_lanes32(acc: te.Tensor, channel_axis: int, params: tuple, attrs: dict,
                       shifts: str = "any") -> te.Tensor:
    """`kernels._requantize_channels` with the same numbers in int32 lanes (`shifts`: what
    the shift operand is known to hold, as in `q_multiply_shift32`)."""
    rq = RequantizeAttrs.from_attrs(attrs)
    _, bias, m0, shift = params

    def body(*i: Any) -> Any:
        c = i[channel_axis]
        return clamp_cast32(q_multiply_shift32(acc[i] + bias[c], m0[c], shift[c], shifts),
                            rq.zp_y, rq.lo, rq.hi, rq.out_dtype)

    return te.compute(acc.shape, body, name="requantize")


def vectorize_epilogue(sch: tvm.s_tir.Schedule, dense_lanes: int) -> None:
    """After `dot_product.schedule_acc`: the "requantize" block vectorized over its output
    channels, a convolution's L lanes per block (then its bytes moved to their planes in the
    same block of columns), a dense layer's `dense_lanes` at a time (a channel count off the
    multiple gets a scalar tail)."""
    block = sch.get_sblock("requantize")
    loops = sch.get_loops(block)
    if len(sch.get(block).iter_vars) == 5:  # conv: (task, column block, .., lane)
        sch.vectorize(loops[-1])
        sch.reverse_compute_at(sch.get_sblock("requantize_out"), loops[1])
    else:  # dense: (batch x channel) fused
        vectorize_loop(sch, loops[-1], dense_lanes)
