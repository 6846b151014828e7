"""The channel-wise blocked kernels: residual add (with its operands' rescale), the multiply
of two tensors (an SE block's gate), table lookups, resize, a transposed conv's interleave,
max pool and global average pool, 16 channels as one vector."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from qcompiler.schedules.x86.blocked.layout import BLOCK, LAYOUT, with_attrs
from qcompiler.schedules.x86.blocked.stages import schedule_rows
from qcompiler.schedules.x86.epilogue import right_shift_rows
from qcompiler.schedules.x86.lookup import fits as lookup_fits
from qcompiler.schedules.x86.lookup import lookup
from tvm import te, tirx

from qcompiler import kernels
from qcompiler.numerics.qparams import dtype_range
from qcompiler.numerics.requantize import Q31, RequantizeAttrs, q_multiply_shift
from qcompiler.numerics.shapes import pool2d_out_hw

INT32 = 2**31


@dataclass(frozen=True)
class ByteRescale:
    """`q_multiply_shift(x, m0, shift)` for the few values x of an 8-bit operand minus its
    zero point, in 32-bit arithmetic. Either one multiply, `(x M + R) >> T` (M a rounded
    multiplier, valid only where it is exact), or m0 split in 16-bit halves,
    `m0 = mh 2^16 + ml`, t = 31 - shift, R = 2^(t-1):

        t <= 16:  (x mh) << (16 - t)  +  (x ml + R) >> t
        t >  16:  (x mh + ((x ml + R) >> 16)) >> (t - 16)

    which is exact (2^t divides x mh 2^16, and floors of floors by powers of 2 nest).
    `rescale_form` checks the result for every value and every intermediate against int32
    (also the terms `q M` and `zp M` that TVM's simplifier makes of `(q - zp) M`)."""

    split: bool
    m: int  # M, or mh
    low: int  # 0, or ml
    r: int
    t: int  # T, or t = 31 - shift

    def apply(self, x: Any, tir: bool) -> Any:
        """The formula on numpy int64 arrays (`tir` False) or on int32 TIR expressions."""
        c = (lambda v: tirx.const(v, "int32")) if tir else (lambda v: v)
        if not self.split:
            return (x * c(self.m) + c(self.r)) >> c(self.t)
        low = x * c(self.low) + c(self.r)
        if self.t <= 16:
            return ((x * c(self.m)) << c(16 - self.t)) + (low >> c(self.t))
        return (x * c(self.m) + (low >> c(16))) >> c(self.t - 16)

    def terms(self, x: np.ndarray, zp: int) -> list[np.ndarray]:
        """Every intermediate value the kernel may compute (for the int32 check)."""
        products = [x * self.m, x * self.low, (x + zp) * self.m, (x + zp) * self.low,
                    np.full_like(x, zp * self.m), np.full_like(x, zp * self.low)]
        if not self.split:
            return products + [x * self.m + self.r]
        low = x * self.low + self.r
        if self.t <= 16:
            return products + [low, (x * self.m) << (16 - self.t)]
        return products + [low, x * self.m + (low >> 16)]


def rescale_form(m0: int, shift: int, values: np.ndarray, zp: int) -> ByteRescale | None:
    """The cheapest exact `ByteRescale` for x in `values` (= q - zp), or None."""
    want = q_multiply_shift(values, m0, shift)
    total = Q31 - shift
    candidates = [ByteRescale(False, int(round(m0 * 2.0 ** (t - total))), 0, (1 << t) >> 1, t)
                  for t in range(30, -1, -1)]
    if 1 <= total <= 31:
        candidates.append(ByteRescale(True, m0 >> 16, m0 & 0xFFFF, 1 << (total - 1), total))
    for form in candidates:
        if form.m <= 0 or form.m >= INT32:
            continue
        with np.errstate(over="ignore"):
            fits = all(np.abs(v).max() < INT32 for v in form.terms(values, zp))
        if fits and np.array_equal(form.apply(values, False), want):
            return form
    return None


def add(shape: tuple, a_dtype: str, b_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """The add on blocked operands (elementwise: the layout does not matter), on 16 lanes."""
    a = te.placeholder(shape, a_dtype, name="a")
    b = te.placeholder(shape, b_dtype, name="b")
    func = te.create_prim_func([a, b, te.compute(shape, add_body(a, b, attrs), name="add")])
    sch = tvm.s_tir.Schedule(func)
    schedule_rows(sch, "add")
    return with_attrs(sch.mod["main"], "add", {**attrs, "layout": LAYOUT}, "x86_blocked")


def mul(shape: tuple, a_shape: tuple, a_dtype: str, b_shape: tuple, b_dtype: str,
        m_shape: tuple, attrs: dict, shifts: str = "any") -> tirx.PrimFunc:
    """The multiply of two blocked tensors (`kernels.mul`: one may be 1x1 per channel, an SE
    gate), on 16 lanes; with `shifts` "right" (`schedules.shift_kind`), requantized in int32
    but the product's high word (`epilogue.right_shift_rows`; EfficientNet-B0's gates about
    20% faster). Padded channels multiply padding: their output is whatever the formula
    gives, in the kernel as in the reference."""
    rq = RequantizeAttrs.from_attrs(attrs)
    requant = (lambda p, m0, shift: right_shift_rows(p, m0, shift, rq)) \
        if shifts == "right" else None
    sch = tvm.s_tir.Schedule(kernels.mul(shape, a_shape, a_dtype, b_shape, b_dtype, m_shape,
                                         attrs, requant))
    schedule_rows(sch, "mul")
    return with_attrs(sch.mod["main"], "mul", {**attrs, "layout": LAYOUT}, "x86_blocked")


def requantize(shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """A change of qparams (`kernels.requantize`: a concat's inputs to the output's) on a
    blocked tensor, on 16 lanes."""
    sch = tvm.s_tir.Schedule(kernels.requantize(shape, x_dtype, attrs))
    schedule_rows(sch, "requantize")
    return with_attrs(sch.mod["main"], "requantize", {**attrs, "layout": LAYOUT},
                      "x86_blocked")


def table(shape: tuple, x_dtype: str, table_shape: tuple, attrs: dict, vbmi: bool
          ) -> tirx.PrimFunc:
    """A lookup table of one row on a blocked tensor (`kernels.lut`; the lookup is elementwise,
    so the layout does not matter): `x86.lookup` where the target has AVX-512 VBMI, else the
    portable kernel with its rows in parallel (a byte gather does not vectorize)."""
    out_dtype = attrs["out_dtype"]
    if vbmi and lookup_fits(x_dtype, out_dtype, table_shape):
        func = lookup(shape, x_dtype, out_dtype)
    else:
        sch = tvm.s_tir.Schedule(kernels.lut(shape, x_dtype, table_shape, attrs))
        loops = sch.get_loops(sch.get_sblock("lut"))
        sch.parallel(sch.fuse(*loops[:3]))
        func = sch.mod["main"]
    return with_attrs(func, "lut", {**attrs, "layout": LAYOUT}, "x86_blocked")


def resize(op: str, shape: tuple, x_dtype: str, out_hw: tuple, attrs: dict) -> tirx.PrimFunc:
    """Nearest or bilinear resize (`kernels.resize_nearest`, `kernels.resize_bilinear`) on a
    blocked tensor: the index tables pick a pixel, whose 16 channels are one vector (in NCHW
    the same gather is a byte an index)."""
    make = {"resize_nearest": kernels.resize_nearest, "resize_bilinear": kernels.resize_bilinear}
    sch = tvm.s_tir.Schedule(make[op](shape, x_dtype, out_hw, attrs))
    schedule_rows(sch, op)
    return with_attrs(sch.mod["main"], op, {**attrs, "layout": LAYOUT}, "x86_blocked")


def interleave_phases(shape: tuple, dtype: str, attrs: dict) -> tirx.PrimFunc:
    """The interleave of a transposed conv's phases (`kernels.interleave_phases`) on blocked
    tensors whose output channels are whole blocks: a pixel's 16 channels move as one
    vector."""
    sch = tvm.s_tir.Schedule(kernels.interleave_phases(shape, dtype, attrs))
    schedule_rows(sch, "interleave_phases")
    return with_attrs(sch.mod["main"], "interleave_phases", {**attrs, "layout": LAYOUT},
                      "x86_blocked")


def add_body(a: te.Tensor, b: te.Tensor, attrs: dict) -> Callable:
    """The add's element function: where both rescales have an exact 32-bit form
    (`rescale_form`) and the sum cannot leave int32, everything is 32-bit; otherwise the
    portable kernel's 64-bit arithmetic (`kernels.add_body`)."""
    rq = RequantizeAttrs.from_attrs(attrs)
    forms = [_operand_form(attrs, side, str(t.dtype)) for side, t in (("a", a), ("b", b))]
    k = attrs["k"]
    if any(f is None for f in forms) or sum(f[1] for f in forms) + (1 << k) >= INT32:
        return kernels.add_body(a, b, attrs)

    def body(*i: Any) -> Any:
        ta, tb = (f[0].apply(t[i].astype("int32") - tirx.const(attrs[f"zp_{side}"], "int32"),
                             True) for t, f, side in ((a, forms[0], "a"), (b, forms[1], "b")))
        y = ((ta + tb + tirx.const((1 << k) >> 1, "int32")) >> k) \
            + tirx.const(rq.zp_y, "int32")
        return tvm.te.min(tvm.te.max(y, tirx.const(rq.lo, "int32")),
                          tirx.const(rq.hi, "int32")).astype(rq.out_dtype)

    return body


def _operand_form(attrs: dict, side: str, dtype: str) -> tuple | None:
    """(ByteRescale, largest |result|) of one operand's rescale, or None."""
    lo, hi = dtype_range(dtype)
    zp = attrs[f"zp_{side}"]
    values = np.arange(lo, hi + 1, dtype=np.int64) - zp
    m0, shift = attrs[f"m0_{side}"], attrs[f"shift_{side}"]
    form = rescale_form(m0, shift, values, zp)
    if form is None:
        return None
    return form, int(np.abs(q_multiply_shift(values, m0, shift)).max())


def max_pool2d(x_shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """The window's maximum per channel lane; padding is the dtype's minimum."""
    n, cb, h, w, _ = x_shape
    oh, ow = pool2d_out_hw((h, w), attrs)
    kh, kw = attrs["kernel"]
    sh, sw = attrs["strides"]
    pt, pl, _, _ = attrs["padding"]
    x = te.placeholder(x_shape, x_dtype, name="x")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    lowest = tirx.const(attrs["dtype_min"], x_dtype)

    def tap(b: Any, c: Any, i: Any, j: Any, ci: Any) -> Any:
        yy, xx = i * sh + ry - pt, j * sw + rx - pl
        return tirx.if_then_else(
            tirx.all(yy >= 0, yy < h, xx >= 0, xx < w),
            x[b, c, tirx.max(tirx.min(yy, h - 1), 0), tirx.max(tirx.min(xx, w - 1), 0), ci],
            lowest)

    y = te.compute((n, cb, oh, ow, BLOCK),
                   lambda b, c, i, j, ci: te.max(tap(b, c, i, j, ci), axis=[ry, rx]),
                   name="max_pool")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    block = sch.get_sblock("max_pool")
    b, c, i, j, ci, ky, kx = sch.get_loops(block)
    sch.reorder(b, c, i, j, ky, kx, ci)
    sch.parallel(sch.fuse(b, c, i))
    sch.vectorize(ci)  # before the decomposition (a reduction block's loops can be)
    init = sch.decompose_reduction(block, ky)
    sch.unroll(ky)
    sch.unroll(kx)
    sch.vectorize(sch.get_loops(init)[-1])
    return with_attrs(sch.mod["main"], "max_pool2d", {**attrs, "layout": LAYOUT},
                       "x86_blocked")


def global_mean(x_shape: tuple, x_dtype: str, attrs: dict) -> tirx.PrimFunc:
    """`reduce_mean` over h and w, kept 1x1 (a global average pool): the portable kernel's
    compute on the 5-D blocked shape, scheduled per channel block with the 16 channels' int32
    sums in one vector. Blocked, the pool reads the last conv's output as it is; in NCHW it
    first waited for a from_blocked of the whole tensor (MobileNetV2: 0.019 ms for 7x7x1280,
    the pool 0.006)."""
    sch = tvm.s_tir.Schedule(kernels.reduce_mean(x_shape, x_dtype, attrs))
    block = sch.get_sblock("mean_sum")
    b, c, i, j, ci, ky, kx = sch.get_loops(block)
    sch.reorder(b, c, i, j, ky, kx, ci)
    plane = sch.fuse(b, c)
    sch.parallel(plane)
    sch.vectorize(ci)
    sch.reverse_compute_at(sch.get_sblock("reduce_mean"), plane)
    init = sch.decompose_reduction(block, ky)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(sch.get_sblock("reduce_mean"))[-1])
    return with_attrs(sch.mod["main"], "reduce_mean", {**attrs, "layout": LAYOUT},
                       "x86_blocked")
