"""x86 kernels for the NCHW integer ops without a dot product (the residual add, requantize,
pools, the mean, tables, the gate multiply, resize, and convolutions no dot-product rule
takes: grouped, transposed),
split across threads and vectorized along their rows.

The portable kernels are one loop nest each, run on the calling thread: at 2 threads they
were the serial part of a ResNet-50 run (its 16 residual adds and the max pool). Here each
kernel keeps its computation (the portable kernel's blocks; the add in the exact 32-bit
arithmetic of the blocked kernels, `blocked.add_body`, which falls back to the portable
64-bit form where that is not exact) and gets a schedule: every root block's leading output
loops (batch x channel) in parallel, and, in a block with no reduction, the innermost output
loop vectorized (in pieces of at most MAX_VECTOR lanes; not where each lane would be a
gather: tables, resize). A schedule does not change the numbers; the blocked layout has its
own kernels (`x86.blocked`).
"""
from __future__ import annotations

import math

import tvm
from qcompiler.schedules.vector_rule import VectorRule
from qcompiler.schedules.x86.blocked import add_body
from tvm import te, tirx

from qcompiler.numerics import nibbles

MIN_VECTOR = 8  # a shorter innermost loop is left to LLVM (part-vectors cost more than they save)
MAX_VECTOR = 32  # lanes: a longer loop is split (LLVM's time grows fast with the vector width)
PARALLEL_LOOPS = 2  # batch x channel: rows of whole planes per task


def schedule_rows(func: tirx.PrimFunc, vectorize: bool = True) -> tirx.PrimFunc:
    """Every root block: leading output loops in parallel, the innermost vectorized where the
    block reduces nothing (and `vectorize`)."""
    sch = tvm.s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(block)
        kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
        spatial = loops[:next((k for k, t in enumerate(kinds) if t != 0), len(kinds))]
        if len(loops) != len(kinds) or not spatial:
            continue  # not one loop per block variable: left as it is
        lanes = _lanes(int(sch.get(spatial[-1]).extent))
        if vectorize and len(spatial) == len(loops) and len(spatial) >= 2 and lanes:
            *spatial, inner = [*spatial[:-1], *sch.split(spatial[-1], [None, lanes])]
            sch.vectorize(inner)
        outer = spatial[:PARALLEL_LOOPS]
        if math.prod(int(sch.get(loop).extent) for loop in outer) > 1:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    return sch.mod["main"]


def _lanes(extent: int) -> int | None:
    """Lanes of the innermost loop's vectors: the whole loop up to MAX_VECTOR, else the
    largest of 32, 16, 8 that divides it (a longer vector, e.g. a 1024-wide table lookup,
    took LLVM 100 s to compile), else none (a tail would be scalar anyway)."""
    if MIN_VECTOR <= extent <= MAX_VECTOR:
        return extent
    return next((v for v in (MAX_VECTOR, 16, MIN_VECTOR) if extent % v == 0), None) \
        if extent > MAX_VECTOR else None


def _scheduled(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    if nibbles.is_nibbles(attrs):  # the weight unpack stage is scheduled already
        return None
    return schedule_rows(func)


def _gather(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc:
    """A lookup table and resize read each output at an index computed from data or taken
    from a table: as a vector that is a gather (an insert a lane), 2-3x the time of the
    scalar loop (a 96x56x56 table 0.13 -> 0.41 ms): threads only."""
    return schedule_rows(func, vectorize=False)


def _add(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc:
    (a_buf, b_buf, y_buf) = func.params
    shape = tuple(int(d) for d in y_buf.shape)
    a = te.placeholder(shape, str(a_buf.dtype), name="a")
    b = te.placeholder(shape, str(b_buf.dtype), name="b")
    y = te.compute(shape, add_body(a, b, attrs), name="add")
    return schedule_rows(te.create_prim_func([a, b, y]))


X86_ROWS = VectorRule("x86_rows", {
    "add": _add, **{op: _gather for op in ("lut", "resize_nearest", "resize_bilinear",
                                           "interleave_phases")},
    **{op: _scheduled for op in ("requantize", "max_pool2d", "avg_pool2d", "reduce_mean", "mul",
                                 "conv2d", "dense", "conv2d_transpose")}})
"""Accepts every kernel of those ops on NCHW (any shape, batch, 8- or 16-bit dtype, padding,
stride) that no earlier x86 rule took, except 4-bit weights (their unpack stage is scheduled
already): grouped convolutions and the depthwise ones the depthwise rule declines, layers on
16-bit activations; the add of two tensors of one shape; resize (nearest and bilinear) and
transposed convolutions (and the interleave of a strided one's phases)."""
