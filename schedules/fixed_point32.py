"""The requantizing multiply in 32-bit lanes, for vector kernels (HVX has no 64-bit lanes).

The numeric contract's `q_multiply_shift(x, M0, 31, n) = (x M0 + 2^(30-n)) >> (31-n)` is an
int64 expression; LLVM scalarizes int64 vectors on HVX, so a vectorized kernel that keeps it
gains nothing. Two int32 forms, each one `(a * b [+ 2^30]) >> 31` that LLVM turns into an HVX
`vmpye` + `vmpyo:<<1[:rnd]` pair:

    n <= -1 (a right shift):  t = floor(x M0 / 2^31) >> (-n - 1)      (|x M0| < 2^62: fits)
                              q = floor((t + 1) / 2) = (t >> 1) + (t & 1)
    n >= 0 (a left shift):    q = ((x' << n) M0 + 2^30) >> 31,  x' = clamp(x, -2^(30-n), 2^(30-n))

Both are `floor(x M0 2^(n-31) + 1/2)`, the contract's one rounding. The clamp only changes
inputs whose result is at least 2^29 in magnitude, and keeps them there with the same sign:
any clamp to 8- or 16-bit bounds afterwards gives the exact answer's result (`n = 30`, the
saturating multiplier of `quantize_multiplier`, leaves only x in {-1, 0, 1}: exact or saturated).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tvm
from tvm import tirx

SATURATED = 1 << 29  # |result| beyond this may be saturated (still >= this, same sign)


def _i32(v: Any) -> Any:
    return tirx.const(v, "int32") if isinstance(v, int) else v


def _right(x: Any, m0: Any, shift: Any) -> Any:
    t = ((x.astype("int64") * m0.astype("int64")) >> 31).astype("int32")
    t = t >> (tirx.const(-1, "int32") - shift)
    return (t >> 1) + (t & 1)


def _left(x: Any, m0: Any, shift: Any) -> Any:
    bound = tirx.const(1, "int32") << (tirx.const(30, "int32") - shift)
    x = tvm.te.min(tvm.te.max(x, -bound), bound) << shift
    return ((x.astype("int64") * m0.astype("int64") + (1 << 30)) >> 31).astype("int32")


_BIND_ONCE = [True]


@contextlib.contextmanager
def unbound() -> Iterator[None]:
    """Build expressions without the `Let` binding: the same arithmetic, for TVM analyses that
    cannot read a `Let` (MetaSchedule's FLOP estimate, `qcompiler.tuning.tune`'s search copy)."""
    _BIND_ONCE[0] = False
    try:
        yield
    finally:
        _BIND_ONCE[0] = True


def shift_kind32(shift: Any) -> str:
    """`q_multiply_shift32`'s `shifts` for a kernel whose shift operand is `shift`: "right"
    when it is a graph constant of right shifts only (one form, no per-lane select), else
    "any"."""
    return "right" if shift is not None and bool(np.all(np.asarray(shift) <= -1)) else "any"


def q_multiply_shift32(x: Any, m0: Any, shift: Any, shifts: str = "any") -> Any:
    """`q_multiply_shift(x, m0, 31, shift)` as an int32 expression (see the module docstring).

    x, m0: int32 expressions or ints (m0 >= 0); shift: an int, whose sign picks the form here,
    or an int32 expression, both forms then selected per lane unless `shifts` promises
    "right" (every shift <= -1) or "left" (every shift >= 0).
    """
    x, m0 = _i32(x), _i32(m0)
    if _BIND_ONCE[0] and not isinstance(x, (tirx.Var, tirx.IntImm)):
        # Bound once: TVM's simplifier would rewrite `int64(a + b)` as `int64(a) + int64(b)`,
        # and LLVM then multiplies in 64-bit lanes instead of 32 x 32.
        var = tirx.Var("fxp_x", "int32")
        return tirx.Let(var, x, q_multiply_shift32(var, m0, shift, shifts))
    if isinstance(shift, int):
        shifts = "right" if shift < 0 else "left"
    shift = _i32(shift)
    if shifts == "right":
        return _right(x, m0, shift)
    if shifts == "left":
        return _left(x, m0, shift)
    return tirx.Select(shift < 0, _right(x, m0, tvm.te.min(shift, -1)),
                       _left(x, m0, tvm.te.max(shift, 0)))


def clamp_cast32(v: Any, zp_y: int, lo: int, hi: int, dtype: str) -> Any:
    """`clamp(v + zp_y, lo, hi)` in int32, then the storage dtype (bounds within 2^16)."""
    v = v + tirx.const(zp_y, "int32")
    return tvm.te.min(tvm.te.max(v, tirx.const(lo, "int32")),
                      tirx.const(hi, "int32")).astype(dtype)
