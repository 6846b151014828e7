"""The NCHW16c layout itself: block sizes, blocked shapes, and the conversions at the edges
of a blocked region (see the package docstring for the layout and its contract)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import tvm
from tvm import te, tirx

from qcompiler.numerics.shapes import ceil_div

BLOCK = 16  # channels per block: the int32 lanes of one AVX-512 register
# The input of a stem (an NCHW graph input with few channels, e.g. RGB) is blocked by 4: one
# `vpdpbusd` group, so 3 channels are padded to 4, not 16; its output is NCHW16c as usual.
STEM_BLOCK = 4
LAYOUT = "NCHW16c"
EPILOGUE_ATTR = "qcompiler.epilogue"  # a right-shift epilogue's zp_y, lo, hi, out_dtype
LOOKUP_ATTR = "qcompiler.lookup"  # a table stage's [x_dtype, out_dtype] for `x86.lookup`
# 1 KiB for stack buffers (a larger block comes from the workspace pool on every iteration).


def blocked_shape(shape: tuple, block: int = BLOCK) -> tuple[int, ...]:
    """(n, c, h, w) -> (n, c/16, h, w, 16), the channel count rounded up (`block`: 4 for
    the input of a stem, see `STEM_BLOCK`)."""
    n, c, h, w = shape
    return (n, ceil_div(c, block), h, w, block)


def padded_channels(c: int) -> int:
    return ceil_div(c, BLOCK) * BLOCK


def bordered(read: Callable[[Any, Any], Any], i: Any, j: Any, hw: tuple, spatial: tuple,
             fill: Any, inside: Any = True) -> Any:
    """`read(i - top, j - left)` of an `hw` plane, or `fill` in the border `spatial` (top,
    left, bottom, right) adds and wherever `inside` is false; the row and column clamped so
    that no read leaves the plane."""
    (h, w), (pt, pl) = hw, spatial[:2]
    row, col = tirx.max(tirx.min(i - pt, h - 1), 0), tirx.max(tirx.min(j - pl, w - 1), 0)
    return tirx.if_then_else(tirx.all(inside, i >= pt, i < h + pt, j >= pl, j < w + pl),
                             read(row, col), fill)


def with_attrs(func: tirx.PrimFunc, op: str, attrs: dict, schedule: str) -> tirx.PrimFunc:
    return func.with_attr({"qcompiler.op": op, "qcompiler.attrs": json.dumps(attrs),
                           "qcompiler.schedule": schedule})


def to_blocked(shape: tuple, dtype: str, pad: int, block: int = BLOCK,
               spatial: tuple = (0, 0, 0, 0)) -> tirx.PrimFunc:
    """NCHW -> NCHW16c (or NCHW4c), the padded channels filled with `pad` (the tensor's zero
    point); with `spatial` (top, left, bottom, right) also the border a conv's padding adds,
    filled alike (a stem's input: its conv then pads nothing, `plan_layout`)."""
    n, c, h, w = shape
    pt, pl, pb, pr = spatial
    x = te.placeholder(shape, dtype, name="x")
    n, cb, _, _, lanes = blocked_shape(shape, block)
    y = te.compute((n, cb, h + pt + pb, w + pl + pr, lanes), lambda b, k, i, j, ci: bordered(
        lambda r, q: x[b, tirx.min(k * block + ci, c - 1), r, q], i, j, (h, w), spatial,
        tirx.const(pad, dtype), k * block + ci < c), name="to_blocked")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    b, k, i, j, ci = sch.get_loops(sch.get_sblock("to_blocked"))
    sch.parallel(sch.fuse(b, k, i))
    sch.unroll(ci)
    attrs = {"channels": c, "block": block, "pad": pad, **({"spatial": list(spatial)}
                                                           if any(spatial) else {})}
    return with_attrs(sch.mod["main"], "to_blocked", attrs, "blocked")


def from_blocked(shape: tuple, dtype: str) -> tirx.PrimFunc:
    """NCHW16c -> NCHW (`shape` is the NCHW shape), the padded channels dropped."""
    n, c, h, w = shape
    x = te.placeholder(blocked_shape(shape), dtype, name="x")
    y = te.compute(shape, lambda b, ch, i, j: x[b, ch // BLOCK, i, j, ch % BLOCK],
                   name="from_blocked")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    b, ch, i, j = sch.get_loops(sch.get_sblock("from_blocked"))
    sch.parallel(sch.fuse(b, ch))
    return with_attrs(sch.mod["main"], "from_blocked", {"channels": c}, "blocked")
