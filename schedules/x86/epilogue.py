"""The requantize epilogue of the x86 row kernels (depthwise, columns, the AVX2 dot product):
per output row, the int32 accumulators plus their per-channel constant, then the contract's
fixed-point multiply, vectorized along the row.

The constant is added in int32 in a stage of its own (the reference wraps `acc + bias` to
int32 too): the multiply then widens an int32 load, which LLVM does with `vpmuldq` (one uop).
Inlined, TVM rewrites the widened sum as a sum of widened terms and LLVM needs `vpmullq`
(three uops) for the product.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tvm
from qcompiler.schedules.dot_product import BIASED, has_block
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.numerics.requantize import RequantizeAttrs

LANES = 16  # int32 lanes of one AVX-512 register


def requantize_rows(acc: te.Tensor, shape: tuple, constant: Callable, params: tuple,
                    attrs: dict, shifts: str = "any") -> te.Tensor:
    """`clamp(zp_y + qms(acc + constant(c), M0[c], n[c]))` over `shape` (which may crop the
    accumulators' padded rows), through the int32 stage `acc_biased`. `shifts`: "right"
    when every shift is in `requantize.RIGHT_SHIFTS` (`schedules.shift_kind`): then the
    high-word form (`right_shift_rows`)."""
    rq = RequantizeAttrs.from_attrs(attrs)
    _, _, m0, shift = params
    biased = te.compute(shape, lambda b, c, i, j: acc[b, c, i, j] + constant(c), name=BIASED)
    if shifts == "right":
        return te.compute(shape, lambda b, c, i, j: right_shift_rows(
            biased[b, c, i, j], m0[c], shift[c], rq), name="requantize")
    return te.compute(shape, lambda b, c, i, j: kernels.clamp_cast(
        kernels.fixed_point_multiply(biased[b, c, i, j], m0[c], shift[c]),
        rq.zp_y, rq.lo, rq.hi, rq.out_dtype), name="requantize")


def right_shift_rows(x: Any, m0: Any, shift: Any, rq: RequantizeAttrs) -> Any:
    """The contract's `clamp(zp_y + qms(x, M0, n))` for a right shift of 2 to 22 bits, as
    `(h + 2^(k-33) + zp_y 2^(k-32)) >> (k - 32)`, `h = (x M0) >> 32`, `k = 31 - n`: the
    identity and ranges of `requantize` (its AVX-512 intrinsic), here as a scalar
    expression. The only 64-bit value is the product's high word, which LLVM computes as a
    vector multiply-high (`vpmuldq` of even and odd lanes, 8 int32 lanes on AVX2) where the
    int64 form widens every lane: the rest, shift and clamp, is int32."""
    h = ((x.astype("int64") * m0.astype("int64")) >> tirx.const(32, "int64")).astype("int32")
    rest = tirx.const(-1, "int32") - shift  # k - 32, 1 to 21
    one = tirx.const(1, "int32")
    y = (h + (one << (rest - one)) + (tirx.const(rq.zp_y, "int32") << rest)) >> rest
    return tvm.te.min(tvm.te.max(y, tirx.const(rq.lo, "int32")),
                      tirx.const(rq.hi, "int32")).astype(rq.out_dtype)


def schedule_rows(sch: tvm.s_tir.Schedule, row: tvm.s_tir.LoopRV) -> None:
    """Both epilogue stages under the accumulators' row loop, vectorized along the row, the
    int32 stage one channel's row at a time (it stays under TVM's 1 KiB for stack buffers)."""
    biased, rq = sch.get_sblock(BIASED), sch.get_sblock("requantize")
    sch.reverse_compute_at(biased, row)
    sch.reverse_compute_at(rq, row)
    loops, anchor = sch.get_loops(rq), sch.get(row)
    inner = loops[[sch.get(lp).same_as(anchor) for lp in loops].index(True) + 1:]
    if len(inner) > 1:  # the channels of a register block
        sch.compute_at(biased, inner[-2])
    for block in (biased, rq):
        last = sch.get_loops(block)[-1]
        if not sch.get(last).same_as(anchor):  # a row of one column has no loop of its own
            vectorize_row(sch, last)


def vectorize_row(sch: tvm.s_tir.Schedule, col: tvm.s_tir.LoopRV, lanes: int = LANES) -> None:
    """A loop over a row: whole vectors of `lanes`, then the rest as one shorter vector (a
    vector whose width is no multiple of 16 makes LLVM split it badly)."""
    extent = int(sch.get(col).extent)
    whole = extent // lanes * lanes
    if whole and whole < extent:
        body, tail = sch.loop_partition(col, [whole, None])
    else:
        body, tail = (col, None) if whole else (None, col)
    if body is not None:
        sch.vectorize(sch.split(body, [None, lanes])[1])
    if tail is not None:
        sch.vectorize(tail)


def dot_product_epilogue(centered: te.Tensor, channel_axis: int, params: tuple, attrs: dict,
                         shifts: str = "any") -> te.Tensor:
    """A `DotProduct` rule's epilogue (`x86.dot.X86_AVX2`): a convolution's NCHW view of the
    accumulators through `requantize_rows` (the bias is the kernel's folded one; `shifts`
    picks its form); a dense layer's few outputs through the portable epilogue."""
    if len(centered.shape) != 4:
        return kernels._requantize_channels(centered, channel_axis, params, attrs)
    bias = params[1]
    return requantize_rows(centered, tuple(centered.shape), lambda c: bias[c], params, attrs,
                           shifts)


def schedule_dot_product_epilogue(sch: tvm.s_tir.Schedule, lanes: int) -> None:
    """After `dot_product.schedule_acc`, which put both epilogue stages under the block of
    columns: the int32 stage one channel's columns at a time, both vectorized along them
    (int32 lanes of one AVX2 register: `lanes`)."""
    if not has_block(sch, BIASED):  # dense
        return
    biased, rq = sch.get_sblock(BIASED), sch.get_sblock("requantize")
    # (.., channel, row, columns): unit loops kept, so each block's last loop is its columns
    sch.compute_at(biased, sch.get_loops(rq)[-3], preserve_unit_loops=True)
    for block in (biased, rq):
        vectorize_row(sch, sch.get_loops(block)[-1], lanes)
