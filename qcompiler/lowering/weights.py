"""Weights, biases and multipliers of the conv/dense kernels (and a `mul`'s constant operand).

Per the numeric contract (shared/DESIGN.md), with Q = 2^(weight_bits - 1) - 1 (127, or 7):
  weights  W_q[c] = clamp(rint(W[c] / s_w[c]), -Q, Q),  s_w[c] = max|W[c]| / Q  (int8 storage;
           4-bit: two per byte, `qcompiler.numerics.nibbles`)
  bias     b_q[c] = rint(b[c] / (s_x * s_w[c]))  (int32)
  requant  M[c] = s_x s_w[c] / s_y, as (M0[c], n[c])  (`qcompiler.numerics.requantize`)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from qcompiler.errors import QCompileError
from qcompiler.frontend.qdq_import import WeightTable
from qcompiler.graph_meta import LayerRecord
from qcompiler.numerics import nibbles
from qcompiler.numerics.qparams import (
    QParams,
    dtype_range,
    symmetric_weight_scales,
    weight_absmax,
)
from qcompiler.numerics.requantize import quantize_multipliers


@dataclass
class WeightQuantizer:
    """How each layer's weights are quantized: per channel or per tensor, the bits (global, or
    per layer: mixed precision), the model's own integers (QDQ), bias correction; and what the
    current layer's summary line says about it (`bits_used`, `note`)."""

    per_channel: bool
    weight_bits: int = 8
    given: WeightTable | None = None  # weights already quantized by the model (QDQ)
    means: dict | None = None  # float graph var -> E[x] per channel: bias correction is on
    layer_bits: dict = field(default_factory=dict)  # var, name or "#index" -> weight bits
    rounding: dict = field(default_factory=dict)  # var -> LearnedRounding (AdaRound)
    keys_used: set = field(default_factory=set)
    current: tuple = (None, "", -1)  # (var, name, index) of the layer being realized
    bits_used: int = 0  # the weight bits `quantize` chose for the current layer
    note: str = ""  # said in the summary line of the layer being realized

    def start_layer(self, var: relax.Var, name: str, index: int) -> None:
        self.current, self.bits_used = (var, name, index), 0

    def quantize(self, w: np.ndarray, axis: int, bias: np.ndarray, s_x: float
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Per-output-channel (or per-tensor) symmetric weights and their float32 scales.

        `s_w[c] = max|W[c]| / Q` (Q = 127, or 7 for 4-bit weights), widened where needed so
        that the int32 bias `b[c] / (s_x * s_w[c])` stays within 2^30: a channel of tiny (or
        denormal) weights with a real bias would otherwise saturate its bias instead of keeping
        it. Weights the model gives already quantized (QDQ) keep their integers and scales;
        a layer with a learned rounding (`qcompiler.numerics.adaround`) rounds by it instead
        of to nearest.
        """
        given = self.given.lookup(w, axis) if self.given else None
        if given is not None:
            self.bits_used = 8
            return given
        if self.given is not None:
            self.note = "weights re-quantized: they differ from the model's (BN folded in)"
        bits = self.bits_used = self.layer_weight_bits()
        w = w.astype(np.float32)
        s_w = symmetric_weight_scales(weight_absmax(w, axis, self.per_channel), bits)
        bias_floor = (np.abs(bias.astype(np.float64)) / (np.float64(s_x) * 2.0**30))
        s_w = np.maximum(s_w, bias_floor.astype(np.float32) * np.float32(1 + 2**-20))
        shape = [1] * w.ndim
        shape[axis] = -1
        q = 2 ** (bits - 1) - 1
        scaled = w / s_w.reshape(shape)
        learned = self.rounding.get(self.current[0])
        w_q = learned.integers(scaled, bits) if learned is not None else None
        if w_q is not None:
            self.note = "AdaRound"
            return w_q, s_w
        return np.clip(np.rint(scaled), -q, q).astype(np.int8), s_w

    def layer_weight_bits(self) -> int:
        """The current layer's weight bits: by its float graph variable (mixed precision), its
        index "#i" in the summary, its name, else the global `weight_bits`."""
        var, name, index = self.current
        for key in (var, f"#{index}", name):
            if key in self.layer_bits:
                self.keys_used.add(key)
                return self.layer_bits[key]
        return self.weight_bits

    def check_layer_keys(self, layers: list[LayerRecord]) -> None:
        """Every per-layer key named a layer with weights: a misspelt name is an error."""
        weighted = [r.name for r in layers if r.weight_bits]
        for key in self.layer_bits:
            if not isinstance(key, str) or key in self.keys_used:
                continue
            index = int(key[1:]) if key.startswith("#") else None
            found = layers[index] if index is not None and index < len(layers) else \
                next((r for r in layers if r.name == key), None)
            if found is not None:
                raise QCompileError(f"precision: layer {key} ({found.name}) is a {found.op}, "
                                    "which has no weights: give a conv2d or dense layer")
            raise QCompileError(f"precision: no layer {key!r} in the model (conv/dense layers: "
                                f"{', '.join(weighted) or 'none'})")

    def corrected_bias(self, x: relax.Expr, bias: np.ndarray, w: np.ndarray, w_q: np.ndarray,
                       s_w: np.ndarray, groups: int) -> np.ndarray:
        """`bias` less the mean error of the rounded weights, when bias correction is on and
        the calibration data gave the input's channel means (see `bias_correction`)."""
        mean = self.means.get(x) if self.means is not None else None
        if mean is None or mean.size != w.shape[1] * groups:
            return bias
        self.note = ", ".join(filter(None, (self.note, "bias corrected")))
        return bias_correction(bias, w, w_q, s_w, mean, groups)

    def channel_operands(self, w_q: np.ndarray, per_channel: tuple, attrs: dict) -> list:
        """The constant operands of a conv/dense kernel: its weights, as nibbles for a 4-bit
        layer (`qcompiler.numerics.nibbles`: half the bytes; `attrs` record it for the kernel
        and the reference), then the per-channel bias, multiplier and shift."""
        if self.bits_used == 4:
            attrs.update(nibbles.storage_attrs(w_q.shape))
            w_q = nibbles.pack(w_q)
        return [relax.const(a) for a in (w_q, *per_channel)]

    def constant(self, c: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """Symmetric int8 `c_q = rint(c / s_c)`: `s_c` per channel where c varies along one axis
        only (a per-channel scale), else per tensor; both shaped to broadcast like c."""
        c = c.astype(np.float32).reshape((1,) * (rank - c.ndim) + c.shape)
        varying = [k for k, d in enumerate(c.shape) if d > 1]
        if self.per_channel and len(varying) == 1:
            red = tuple(k for k in range(rank) if k != varying[0])
            absmax = np.abs(c).max(axis=red, keepdims=True)
        else:
            absmax = np.full((1,) * rank, np.abs(c).max(initial=0.0))
        s_c = symmetric_weight_scales(absmax)
        return np.clip(np.rint(c / s_c), -127, 127).astype(np.int8), s_c


def bias_and_multipliers(bias: np.ndarray, s_x: float, s_w: np.ndarray, s_y: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output channel: the int32 bias `rint(b[c] / (s_x s_w[c]))` (saturated) and the
    multiplier `s_x s_w[c] / s_y` as (M0[c], n[c])."""
    acc_scale = np.float64(s_x) * s_w.astype(np.float64)
    b_q = np.clip(np.rint(bias.astype(np.float64) / acc_scale), -2**31, 2**31 - 1)
    m0, shift = quantize_multipliers(acc_scale / s_y)
    return b_q.astype(np.int32), m0, shift


def check_accumulator(layer: str, taps: int, x: QParams, w_q: np.ndarray,
                      b_q: np.ndarray) -> None:
    """Refuse a layer whose int32 accumulator could wrap: taps * |x - zp| * |w| + |b|."""
    qmin, qmax = dtype_range(x.dtype)
    x_max = max(x.zero_point - qmin, qmax - x.zero_point)
    w_max = int(np.abs(w_q.astype(np.int64)).max(initial=0))
    b_max = int(np.abs(b_q.astype(np.int64)).max(initial=0))
    bound = taps * x_max * w_max + b_max
    if bound > 2**31 - 1:
        raise QCompileError(
            f"layer {layer}: the int32 accumulator could overflow ({taps} taps x |x - zp| <= "
            f"{x_max} x |w| <= {w_max} + |bias| <= {b_max} = {bound} > 2^31 - 1); "
            "qcompiler refuses rather than wrap")


def bias_correction(bias: np.ndarray, w: np.ndarray, w_q: np.ndarray, s_w: np.ndarray,
                    mean: np.ndarray, groups: int) -> np.ndarray:
    """Empirical bias correction (Nagel et al. 2019, section 4.2), float32 like the bias:

        b'[o] = b[o] - sum_{j,kh,kw} (s_w[o] W_q[o,j,kh,kw] - W[o,j,kh,kw]) E[x[g(o)*J + j]]

    i.e. the expected output error `(W_q - W) E[x]` of the quantized weights, taking E[x] over a
    conv's window as the channel mean at every tap (zero padding at the borders makes it an
    approximation there). `w` is (O, J[, kh, kw]) with J = input channels / groups.
    """
    w = w.astype(np.float64).reshape(w.shape[0], w.shape[1], -1)
    deq = w_q.astype(np.float64).reshape(w.shape) * s_w.astype(np.float64).reshape(-1, 1, 1)
    per_input = (deq - w).sum(axis=2)  # (O, J): the error summed over the taps
    group_of = np.arange(w.shape[0]) // (w.shape[0] // groups)
    x_mean = mean.astype(np.float64).reshape(groups, w.shape[1])[group_of]  # (O, J)
    err = (per_input * x_mean).sum(axis=1)
    return (bias.astype(np.float64) - err).astype(np.float32)
