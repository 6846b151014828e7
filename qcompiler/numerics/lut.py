"""Lookup tables: an elementwise activation of an 8- (or 16-) bit tensor is a gather.

An input of qparams (s_x, zp_x) takes at most 2^bits values, so each output is known at compile
time; with (s_y, zp_y) the output qparams:

    T[c, q - qmin] = clamp(rint(f_c(s_x (q - zp_x)) / s_y) + zp_y, qmin_y, qmax_y)

in float64. The kernel is `y = T[c, x - qmin]` with no float at run time, and each output is
f of the exact dequantized input, rounded once (within 1/2 LSB of y before the clamp). One row
per channel for a per-channel f (PRelu's slope, a chain with a per-channel constant), else one
row. f is an activation, or any chain of elementwise ops on x and constants ("elementwise":
`passes.fuse_elementwise`), run step by step in float64 (`STEPS`); a NaN result maps to zp_y.

The attributes of a table kernel (`lut_attrs`) are all the inputs of `tables`, so the reference
rebuilds the table from them and thereby checks the constant the compiler put in the graph.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from qcompiler.numerics.qparams import QParams, dtype_range
from qcompiler.numerics.requantize import RequantizeAttrs, q_multiply_shift


def _sigmoid(x: np.ndarray, p: dict) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), with no overflow


def _leaky(x: np.ndarray, p: dict) -> np.ndarray:
    return np.where(x >= 0, x, p["alpha"] * x)


def _hardsigmoid(x: np.ndarray, p: dict) -> np.ndarray:
    return np.clip(p["alpha"] * x + p["beta"], p["lo"], p["hi"])


def _hardswish(x: np.ndarray, p: dict) -> np.ndarray:
    return x * np.clip(x + p["offset"], p["lo"], p["hi"]) / p["divisor"]


def _sigmoid_of(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_erf = np.vectorize(math.erf, otypes=[np.float64])
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# The ops of an elementwise chain (`passes.fuse_elementwise`), with ONNX/TVM semantics, in
# float64: step(args, step's attributes). Round is half to even (ONNX Round).
STEPS: dict[str, Callable[..., np.ndarray]] = {
    "add": lambda a, b, s: a + b, "subtract": lambda a, b, s: a - b,
    "multiply": lambda a, b, s: a * b, "divide": lambda a, b, s: a / b,
    "power": lambda a, b, s: np.power(a, b), "maximum": lambda a, b, s: np.maximum(a, b),
    "minimum": lambda a, b, s: np.minimum(a, b),
    "exp": lambda a, s: np.exp(a), "log": lambda a, s: np.log(a),
    "sqrt": lambda a, s: np.sqrt(a), "rsqrt": lambda a, s: 1.0 / np.sqrt(a),
    "erf": lambda a, s: _erf(a), "tanh": lambda a, s: np.tanh(a),
    "sigmoid": lambda a, s: _sigmoid_of(a), "negative": lambda a, s: -a,
    "abs": lambda a, s: np.abs(a), "floor": lambda a, s: np.floor(a),
    "ceil": lambda a, s: np.ceil(a), "round": lambda a, s: np.rint(a),
    "sign": lambda a, s: np.sign(a), "square": lambda a, s: a * a,
    "sin": lambda a, s: np.sin(a), "cos": lambda a, s: np.cos(a),
    "relu": lambda a, s: np.maximum(a, 0.0),
    "clip": lambda a, s: np.clip(a, s["lo"], s["hi"]),
    "gelu": lambda a, s: 0.5 * a * (1.0 + _erf(a / math.sqrt(2.0))),
    "gelu_tanh": lambda a, s: 0.5 * a * (1.0 + np.tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a ** 3))),
    "silu": lambda a, s: a * _sigmoid_of(a),
    "leakyrelu": lambda a, s: np.where(a >= 0, a, s["alpha"] * a),
    "prelu": lambda a, b, s: np.where(a >= 0, a, b * a),
}


def _elementwise(x: np.ndarray, p: dict) -> np.ndarray:
    """A chain `p["steps"]`: each step {"op", "args", attributes}; an argument is "%k" (the
    k-th value: %0 is x, %k the k-th step's result) or a number (the row's constant)."""
    values = [x]
    with np.errstate(all="ignore"):  # exp overflow, log(0), 0/0: inf and NaN as in float
        for step in p["steps"]:
            args = [values[int(a[1:])] if isinstance(a, str) else np.float64(a)
                    for a in step["args"]]
            values.append(STEPS[step["op"]](*args, step))
    return values[-1]


# f(x, params) in float64; the params are the float32 constants of the graph, widened exactly.
ACTIVATIONS: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "sigmoid": _sigmoid, "tanh": lambda x, p: np.tanh(x), "leakyrelu": _leaky,
    "prelu": _leaky, "hardsigmoid": _hardsigmoid, "hardswish": _hardswish,
    "elementwise": _elementwise,
}


def lut_attrs(fn: str, channel_params: list[dict], axis: int, x: QParams, y: QParams) -> dict:
    """The kernel attributes: f, its parameters per table row, and both qparams."""
    return {"fn": fn, "params": channel_params, "axis": axis, "scale_x": x.scale,
            "zp_x": x.zero_point, "x_dtype": x.dtype, "scale_y": y.scale,
            "zp_y": y.zero_point, "out_dtype": y.dtype}


def tables(a: dict) -> np.ndarray:
    """T[c, q - qmin] for every input integer q, shape (rows, 2^bits), in the output dtype."""
    qmin, qmax = dtype_range(a["x_dtype"])
    if a["fn"] == "requantize":  # a change of qparams, in the contract's integers
        return requantize_table(a)
    lo, hi = dtype_range(a["out_dtype"])
    real = np.float64(a["scale_x"]) * (np.arange(qmin, qmax + 1, dtype=np.float64) - a["zp_x"])
    f = ACTIVATIONS[a["fn"]]
    rows = [np.rint(_finite(f(real, p)) / np.float64(a["scale_y"])) + a["zp_y"]
            for p in a["params"]]
    return np.clip(np.stack(rows), lo, hi).astype(a["out_dtype"])


def _finite(y: np.ndarray) -> np.ndarray:
    """NaN (log or sqrt of a negative, 0/0) -> 0, i.e. the output zero point; +-inf saturate."""
    return np.where(np.isnan(y), 0.0, y)


def requantize_table(a: dict) -> np.ndarray:
    """`clamp(zp_y + qms(q - zp_x, M0, n))` for every input integer q, as one table row: a
    requantize kernel's attributes with `fn` "requantize" and `x_dtype` (a table kernel is a
    cheaper form of it where the target looks bytes up in registers, `x86.lookup`)."""
    qmin, qmax = dtype_range(a["x_dtype"])
    q = np.arange(qmin, qmax + 1, dtype=np.int64) - a["zp_x"]
    return RequantizeAttrs.from_attrs(a).clamp(q_multiply_shift(q, a["m0"], a["shift"]))[None]
