"""Lookup tables: an elementwise activation of an 8- (or 16-) bit tensor is a gather.

An input of qparams (s_x, zp_x) takes at most 2^bits values, so each output is known at compile
time; with (s_y, zp_y) the output qparams:

    T[c, q - qmin] = clamp(rint(f_c(s_x (q - zp_x)) / s_y) + zp_y, qmin_y, qmax_y)

in float64. The kernel is `y = T[c, x - qmin]` with no float at run time, and each output is
f of the exact dequantized input, rounded once (within 1/2 LSB of y before the clamp). One row
per channel for a per-channel f (PRelu's slope), else one row.

The attributes of a table kernel (`lut_attrs`) are all the inputs of `tables`, so the reference
rebuilds the table from them and thereby checks the constant the compiler put in the graph.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from qcompiler.numerics.qparams import QParams, dtype_range


def _sigmoid(x: np.ndarray, p: dict) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), with no overflow


def _leaky(x: np.ndarray, p: dict) -> np.ndarray:
    return np.where(x >= 0, x, p["alpha"] * x)


def _hardsigmoid(x: np.ndarray, p: dict) -> np.ndarray:
    return np.clip(p["alpha"] * x + p["beta"], p["lo"], p["hi"])


def _hardswish(x: np.ndarray, p: dict) -> np.ndarray:
    return x * np.clip(x + p["offset"], p["lo"], p["hi"]) / p["divisor"]


# f(x, params) in float64; the params are the float32 constants of the graph, widened exactly.
ACTIVATIONS: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "sigmoid": _sigmoid, "tanh": lambda x, p: np.tanh(x), "leakyrelu": _leaky,
    "prelu": _leaky, "hardsigmoid": _hardsigmoid, "hardswish": _hardswish,
}


def lut_attrs(fn: str, channel_params: list[dict], axis: int, x: QParams, y: QParams) -> dict:
    """The kernel attributes: f, its parameters per table row, and both qparams."""
    return {"fn": fn, "params": channel_params, "axis": axis, "scale_x": x.scale,
            "zp_x": x.zero_point, "x_dtype": x.dtype, "scale_y": y.scale,
            "zp_y": y.zero_point, "out_dtype": y.dtype}


def tables(a: dict) -> np.ndarray:
    """T[c, q - qmin] for every input integer q, shape (rows, 2^bits), in the output dtype."""
    qmin, qmax = dtype_range(a["x_dtype"])
    lo, hi = dtype_range(a["out_dtype"])
    real = np.float64(a["scale_x"]) * (np.arange(qmin, qmax + 1, dtype=np.float64) - a["zp_x"])
    f = ACTIVATIONS[a["fn"]]
    rows = [np.rint(f(real, p) / np.float64(a["scale_y"])) + a["zp_y"] for p in a["params"]]
    return np.clip(np.stack(rows), lo, hi).astype(a["out_dtype"])
