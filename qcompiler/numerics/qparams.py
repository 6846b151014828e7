"""Quantization parameters: per-tensor activation qparams and symmetric weight scales.

With `qcompiler.numerics.requantize` (the fixed-point multipliers) these are the two numeric
primitives of the contract; everything else (weights, requantization, add, pooling) is written
in terms of them, so the math lives in exactly one place.

Affine quantization (whitepaper eq. 1-3): `r = s * (q - z)`, with `q` an integer in [qmin, qmax].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767),
              "int32": (-(2**31), 2**31 - 1)}
SYMMETRIC_DTYPES = frozenset({"int16"})  # activation dtypes whose zero point is always 0


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine parameters: `real = scale * (q - zero_point)`."""

    scale: float
    zero_point: int
    dtype: str

    def to_json(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point, "dtype": self.dtype}


def dtype_range(dtype: str) -> tuple[int, int]:
    if dtype not in INT_RANGES:
        raise ValueError(f"dtype must be one of {sorted(INT_RANGES)}, not {dtype!r}")
    return INT_RANGES[dtype]


def compute_qparams(lo: float, hi: float, dtype: str) -> QParams:
    """Asymmetric per-tensor qparams covering [lo, hi] (widened to include 0, so 0 is exact).

    `scale = (hi - lo) / (qmax - qmin)`, `zero_point = clamp(round(qmin - lo / scale))`.
    A degenerate range (all zeros) gets scale 1.0 so that every op stays well defined.
    The scale is rounded to float32, the precision the graph and ONNX store it in.
    int16 is symmetric (`zero_point = 0`, `scale = max(|lo|, |hi|) / 32767`): it halves the
    worst-case `|x - zp|` that bounds an int32 accumulator, where 16 bits are tight.
    """
    qmin, qmax = dtype_range(dtype)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"range [{lo}, {hi}] is not finite")
    if dtype in SYMMETRIC_DTYPES:
        lo, hi = min(lo, -hi), max(hi, -lo)
        qmin = -qmax
    scale = float(np.float32((hi - lo) / (qmax - qmin)))
    if scale == 0.0 or not math.isfinite(scale) or scale < np.finfo(np.float32).tiny:
        scale = 1.0
    zero_point = 0 if dtype in SYMMETRIC_DTYPES else \
        int(min(max(round(qmin - lo / scale), qmin), qmax))
    return QParams(scale, zero_point, dtype)


def with_dtype(qp: QParams, dtype: str) -> QParams:
    """The same real values stored as `dtype`: int8 and uint8 differ by 128 in the zero point
    (`s * (q - zp) = s * ((q + 128) - (zp + 128))`), so a model's int8 activations run exactly
    on a uint8 target and vice versa."""
    if qp.dtype == dtype:
        return qp
    shifts = {("int8", "uint8"): 128, ("uint8", "int8"): -128}
    if (qp.dtype, dtype) not in shifts:
        raise ValueError(f"cannot store {qp.dtype} activations as {dtype}")
    return QParams(qp.scale, qp.zero_point + shifts[(qp.dtype, dtype)], dtype)


def weight_absmax(w: np.ndarray, axis: int, per_channel: bool) -> np.ndarray:
    """max|w| per slice along `axis` (the output channels), or the tensor's max repeated."""
    if not per_channel:
        return np.full(w.shape[axis], np.abs(w).max())
    return np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis))


def symmetric_weight_scales(w_absmax: np.ndarray, bits: int = 8) -> np.ndarray:
    """Per-channel symmetric weight scales `s_w[c] = max|w[c]| / (2^(bits-1) - 1)`, float32.

    An all-zero channel gets scale 1.0: its weights quantize to 0 and its bias stays exact.
    """
    qmax = 2 ** (bits - 1) - 1
    s = (np.asarray(w_absmax, np.float64) / qmax).astype(np.float32)
    return np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
