"""Requantization: a real multiplier as a Q31 fixed-point multiply, and the attributes of every
kernel that ends in one.

The contract (shared/DESIGN.md): `M = s_in / s_out` (times whatever the kernel's integer sum
needs: `s_w[c]`, `1 / count`, ...) becomes `M0` in [2^30, 2^31) and a shift `n` with
`M ~= M0 * 2^(n - 31)`, and a requantizing kernel computes

    y = clamp(zp_y + q_multiply_shift(acc, M0, n), lo, hi)      as out_dtype,

`q_multiply_shift(x, M0, n) = (x * M0 + 2^(30 - n)) >> (31 - n)` (int64, round half up): TVM's
`q_multiply_shift(x, M0, 31, n)`. `RequantizeAttrs` holds the output side (`zp_y`, `lo`, `hi`,
`out_dtype`, and `M0`, `n` when the kernel has one multiplier rather than operands per channel or
position); every requantizing kernel's `qcompiler.attrs` contains its keys, in its order.

Where the same multiply is written for each side of the compiler:
- numpy, the oracle: `q_multiply_shift` here (`qcompiler.reference`);
- TIR, the kernels' compute: `qcompiler.kernels.fixed_point_multiply` (int64, the same formula);
- x86 vector forms: `schedules/x86/requantize.py` (16 int32 lanes, the high dword of `vpmuldq`),
  `schedules/x86/epilogue.py` (the row kernels' int32 stage, then the int64 multiply, or
  for right shifts `right_shift_rows`: x86/requantize.py's high-word identity as a scalar
  expression),
  `schedules/x86/blocked/` (the blocked conv epilogue and its per-channel forms);
- Hexagon and ARM: `schedules/fixed_point32.py` (32-bit lanes, used by
  `schedules/lanes32.py` (the dot-product and depthwise epilogues) and
  `schedules/hexagon/vector.py`, `depthwise.py`).
Each of those is tested bit for bit against `q_multiply_shift`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qcompiler.numerics.qparams import QParams, dtype_range

Q31 = 31
# The q_multiply_shift contract needs total right shift = 31 + right_shift <= 62 so the rounding
# constant and the int64 product fit; a multiplier below 2**-32 rounds every int32 input to 0.
MAX_RIGHT_SHIFT = 31
MAX_LEFT_SHIFT = 30


def quantize_multiplier(m: float) -> tuple[int, int]:
    """Express a positive real multiplier as `(M0, shift)` with `m ~= M0 * 2^(shift - 31)`.

    `M0` is in [2^30, 2^31) (a Q31 number in [0.5, 1)), `shift` in [-31, 30]: positive shifts
    left, negative shifts right, exactly the operands of TVM's `q_multiply_shift(x, M0, 31, shift)`.
    A multiplier too small to change any int32 input (< 2^-32) becomes (0, 0): the product is 0.
    One of 2^30 or more becomes the largest representable, (2^31 - 1, 30): any nonzero input
    then saturates every 8- or 16-bit output either way, so the result is the same.
    """
    if not (m >= 0.0 and math.isfinite(m)):
        raise ValueError(f"multiplier must be finite and >= 0, got {m}")
    if m == 0.0:
        return 0, 0
    mantissa, exponent = math.frexp(m)  # m = mantissa * 2^exponent, mantissa in [0.5, 1)
    m0 = round(mantissa * (1 << Q31))
    if m0 == 1 << Q31:  # mantissa rounded up to 1.0
        m0 //= 2
        exponent += 1
    if exponent > MAX_LEFT_SHIFT:
        return (1 << Q31) - 1, MAX_LEFT_SHIFT
    if exponent < -MAX_RIGHT_SHIFT:
        return 0, 0
    return int(m0), int(exponent)


def quantize_multipliers(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` of every element (per channel, per pool position, ...): the int32
    operand arrays `(M0, shift)`, shaped like `m`. Each element is read as a float64."""
    m = np.asarray(m, np.float64)
    pairs = [quantize_multiplier(float(v)) for v in m.reshape(-1)]
    m0 = np.array([p[0] for p in pairs], np.int32).reshape(m.shape)
    shift = np.array([p[1] for p in pairs], np.int32).reshape(m.shape)
    return m0, shift


def q_multiply_shift(x: np.ndarray, m0: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """`round_half_up(x * m0 * 2^(shift - 31))` for int32 `x`, exactly, as int64.

    This is TVM's `q_multiply_shift(x, m0, 31, shift)` (int64 product, add the rounding constant,
    arithmetic shift right) computed as `(x * m0 + 2^(30 - shift)) >> (31 - shift)`: the same
    value whenever TVM's `(x << shift) * m0` fits in int64, and still exact when it would not.
    The result is not truncated to int32; callers clamp it (that is where saturation happens).
    """
    x = np.asarray(x, np.int64)
    total = Q31 - np.asarray(shift, np.int64)  # in [1, 62]
    return (x * np.asarray(m0, np.int64) + (np.int64(1) << (total - 1))) >> total


def clamp_bounds(qp: QParams, lo_real: float, hi_real: float) -> tuple[int, int]:
    """The integer bounds `(lo, hi)` of the real range [lo_real, hi_real] in `qp`:
    `zp + rint(a / s)` (an infinite end: the dtype's end), within the dtype's range."""
    qmin, qmax = dtype_range(qp.dtype)
    lo = qmin if lo_real == -math.inf else qp.zero_point + int(np.rint(lo_real / qp.scale))
    hi = qmax if hi_real == math.inf else qp.zero_point + int(np.rint(hi_real / qp.scale))
    return max(qmin, min(lo, qmax)), min(qmax, max(hi, qmin))


@dataclass(frozen=True)
class RequantizeAttrs:
    """The output side of a requantizing kernel: `clamp(zp_y + qms(acc, m0, shift), lo, hi)`
    stored as `out_dtype`. `m0`/`shift` are the kernel's one multiplier, or None where the
    multipliers are operands (per channel, per position)."""

    zp_y: int
    lo: int
    hi: int
    out_dtype: str
    m0: int | None = None
    shift: int | None = None

    @classmethod
    def for_output(cls, qp: QParams, lo_real: float = -math.inf, hi_real: float = math.inf,
                   m0: int | None = None, shift: int | None = None) -> RequantizeAttrs:
        """Into the output qparams `qp`, clamped to the real range [lo_real, hi_real] (a fused
        ReLU or Clip; unbounded: the dtype's range)."""
        lo, hi = clamp_bounds(qp, lo_real, hi_real)
        return cls(qp.zero_point, lo, hi, qp.dtype, m0, shift)

    @classmethod
    def from_attrs(cls, attrs: dict) -> RequantizeAttrs:
        """Read back from a kernel's attributes (`qcompiler.attrs`)."""
        return cls(attrs["zp_y"], attrs["lo"], attrs["hi"], attrs["out_dtype"],
                   attrs.get("m0"), attrs.get("shift"))

    def to_attrs(self, **after_zp_y: object) -> dict:
        """The attributes' fragment: `zp_y`, then `after_zp_y` (the add's own multipliers), the
        one multiplier if any, `lo`, `hi`, `out_dtype`. The order is the JSON's: kept as is."""
        one = {} if self.m0 is None else {"m0": self.m0, "shift": self.shift}
        return {"zp_y": self.zp_y, **after_zp_y, **one, "lo": self.lo, "hi": self.hi,
                "out_dtype": self.out_dtype}

    def clamp(self, y: np.ndarray) -> np.ndarray:
        """`clamp(zp_y + y, lo, hi)` as `out_dtype` (numpy), `y` a `q_multiply_shift` result."""
        return np.clip(y + self.zp_y, self.lo, self.hi).astype(self.out_dtype)
