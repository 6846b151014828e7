"""Compile-time index and weight tables of Resize, in exact rational arithmetic.

The source coordinate of output index `o` (ONNX Resize, with the scale `out / in` that TVM's
`resize2d` uses, since the graph carries sizes):
  half_pixel          c = (o + 1/2) in / out - 1/2
  pytorch_half_pixel  the same, or 0 when out == 1
  asymmetric          c = o in / out
  align_corners       c = o (in - 1) / (out - 1), or 0 when out == 1
Nearest rounds c by the nearest mode; linear takes the taps floor(c), floor(c) + 1 (each
clamped into the input, as TOPI does) with the weight `round_half_up((c - floor(c)) 2^bits)`.
Computing with Fractions keeps ties (c = k + 1/2) ties, so no float error picks a side.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coordinate(o: int, n_in: int, n_out: int, mode: str) -> Fraction:
    half = Fraction(1, 2)
    if mode == "half_pixel" or (mode == "pytorch_half_pixel" and n_out > 1):
        return (o + half) * Fraction(n_in, n_out) - half
    if mode == "asymmetric":
        return Fraction(o * n_in, n_out)
    if mode == "align_corners" and n_out > 1:
        return Fraction(o * (n_in - 1), n_out - 1)
    return Fraction(0)


def _round(c: Fraction, nearest: str) -> int:
    half = Fraction(1, 2)
    if nearest == "floor":
        return math.floor(c)
    if nearest == "ceil":
        return math.ceil(c)
    if nearest == "round_prefer_ceil":
        return math.floor(c + half)
    return math.ceil(c - half)  # round_prefer_floor


def nearest_indices(n_in: int, n_out: int, mode: str, nearest: str) -> np.ndarray:
    """The input index each output index copies, clamped into the input."""
    idx = [_round(source_coordinate(o, n_in, n_out, mode), nearest) for o in range(n_out)]
    return np.clip(np.array(idx, np.int64), 0, n_in - 1).astype(np.int32)


def linear_taps(n_in: int, n_out: int, mode: str, bits: int) -> np.ndarray:
    """(3, n_out) int32: first tap, second tap, weight of the second tap in [0, 2^bits]."""
    out = np.zeros((3, n_out), np.int64)
    for o in range(n_out):
        c = source_coordinate(o, n_in, n_out, mode)
        lo = math.floor(c)
        out[:, o] = (lo, lo + 1, math.floor((c - lo) * (1 << bits) + Fraction(1, 2)))
    out[:2] = np.clip(out[:2], 0, n_in - 1)
    return out.astype(np.int32)
