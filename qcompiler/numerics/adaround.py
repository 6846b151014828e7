"""AdaRound (Nagel et al., *Up or Down? Adaptive Rounding for Post-Training Quantization*,
2020): per conv/dense layer, learn whether each weight rounds up or down so that the layer's
output on the calibration data moves least, instead of rounding each weight to nearest.

With the realizer's scales s[o] (`symmetric_weight_scales`, Q = 2^(bits-1) - 1) and
`W_int = clamp(floor(W / s) + h, -Q, Q)`, h in {0, 1}, the loss per layer is

    ||(s W_int - W) X||^2 = sum_o s[o]^2 e[o]^T G e[o],   e = floor(W/s) + h - W/s,

with X the layer's float input as im2col columns and G = X X^T (one per group for a grouped
conv), so each iteration costs O(out * K^2), independent of the calibration set's size. h is
relaxed to the rectified sigmoid `clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)` and V is
learned with Adam on `loss / loss(nearest) + lam * sum(1 - |2h - 1|^beta) / numel`, beta
annealed 20 -> 2 after a 20 % warm-up without the regulariser (the paper's section 4).
The result is only a rounding direction per weight; the quantizer applies it to its own scales,
so scales, biases and kernels are unchanged and the reference stays the oracle. A layer whose
learned rounding does not beat rounding to nearest on the loss keeps nearest.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from qcompiler.numerics.calibrate import probe_batches, tensor_bindings
from qcompiler.numerics.mixed_precision import weighted_layers
from qcompiler.numerics.qparams import symmetric_weight_scales, weight_absmax
from qcompiler.relax_access import bound_values, const_array, op_name

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)
# The regulariser's weight against the loss normalised to 1 at rounding-to-nearest, and Adam's
# step: chosen on the bundled CNN at 4 bits (layer losses 0.2-0.6 of nearest's; 0.01, the
# paper's weight for its unnormalised loss, left most layers at nearest here).
LAMBDA = 10.0
LR = 1e-2


@dataclass(frozen=True)
class LearnedRounding:
    """A layer's rounding: `up[o, ...]` = 1 where the weight rounds up (O-first layout, as the
    quantizer sees the weight), for `bits`-bit weights; the loss against nearest, for reports."""

    bits: int
    up: np.ndarray  # uint8, the weight's shape in (out, in, ...) layout
    loss: float      # ||(s W_int - W) X||^2 with the learned rounding ...
    nearest_loss: float  # ... and with rounding to nearest

    def integers(self, scaled: np.ndarray, bits: int) -> np.ndarray | None:
        """`clamp(floor(W / s) + up, -Q, Q)` for `scaled` = W / s, or None where the learned
        rounding does not apply (other bits, other shape)."""
        if bits != self.bits or scaled.shape != self.up.shape:
            return None
        q = 2 ** (bits - 1) - 1
        return np.clip(np.floor(scaled) + self.up, -q, q).astype(np.int8)


def weight_scales(w: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    """The quantizer's scales of an (out, ...) weight, shaped to broadcast against it."""
    return symmetric_weight_scales(weight_absmax(w, 0, per_channel), bits).reshape(
        -1, *([1] * (w.ndim - 1)))


def im2col(x: np.ndarray, kernel: tuple[int, int], strides: list[int], padding: list[int],
           dilation: list[int], groups: int) -> np.ndarray:
    """NCHW input -> (groups, N * H' * W', C/groups * kh * kw) columns, in the order of an
    OIHW weight's row, so that `cols[g] @ w[o].ravel()` is output channel o's value."""
    kh, kw = kernel
    top, left, bottom, right = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1], ::dilation[0], ::dilation[1]]
    n, c, ho, wo = win.shape[:4]
    win = win.reshape(n, groups, c // groups, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    return win.reshape(groups, n * ho * wo, c // groups * kh * kw)


def columns(call: relax.Call, x: np.ndarray) -> tuple[np.ndarray, int]:
    """(im2col columns, groups) of a conv2d or matmul call's input batch."""
    if op_name(call) == "relax.matmul":
        return x.reshape(1, -1, x.shape[-1]), 1
    a = call.attrs
    w = const_array(call.args[1]).shape
    groups = int(a.groups)
    return im2col(x, (int(w[2]), int(w[3])), [int(v) for v in a.strides],
                  [int(v) for v in a.padding], [int(v) for v in a.dilation], groups), groups


def layer_weight(call: relax.Call) -> np.ndarray:
    """The weight in (out, in, ...) layout: OIHW as is, a matmul's (in, out) transposed."""
    w = const_array(call.args[1]).astype(np.float32)
    return w.T if op_name(call) == "relax.matmul" else w


def learn_rounding(w: np.ndarray, gram: np.ndarray, bits: int, per_channel: bool,
                   iters: int) -> LearnedRounding:
    """AdaRound of one (out, ...) weight against `gram` (groups, K, K), K = w[o].size.
    Deterministic: V starts where h equals each weight's fractional part."""
    groups = gram.shape[0]
    out = w.shape[0]
    s32 = weight_scales(w, bits, per_channel).reshape(out, 1)
    # W / s in float32, as the quantizer divides, so that both floor to the same integers
    scaled = (w.astype(np.float32).reshape(out, -1) / s32).astype(np.float64)
    s = s32.astype(np.float64)
    q = 2 ** (bits - 1) - 1
    base = np.floor(scaled)
    free = base < q  # rounding up stays within [-Q, Q]

    def g_times(e: np.ndarray) -> np.ndarray:
        """G e[o] for every output channel, each against its group's G."""
        by_group = e.reshape(groups, out // groups, -1)
        return np.einsum("gkl,gol->gok", gram, by_group).reshape(out, -1)

    def loss_of(h: np.ndarray) -> float:
        e = base + h - scaled
        return float(np.sum(s ** 2 * e * g_times(e)))

    nearest = (np.clip(np.rint(scaled), -q, q) - base).astype(np.float64)
    nearest_loss = loss_of(nearest)
    frac = np.clip(scaled - base, 0.01, 0.99)
    v = -np.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0)
    m, u = np.zeros_like(v), np.zeros_like(v)
    norm = max(nearest_loss, 1e-30)
    warm = iters // 5
    for t in range(1, iters + 1):
        sig = 1.0 / (1.0 + np.exp(-v))
        raw = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(raw, 0.0, 1.0) * free
        e = base + h - scaled
        grad_h = 2.0 * s ** 2 * g_times(e) / norm
        if t > warm:
            beta = 20.0 + (2.0 - 20.0) * (t - warm) / max(iters - warm, 1)
            d = 2.0 * h - 1.0
            grad_h += LAMBDA / h.size * -beta * np.abs(d) ** (beta - 1) * np.sign(d) * 2.0
        grad = grad_h * ((raw > 0) & (raw < 1) & free) * sig * (1 - sig) * (ZETA - GAMMA)
        m = 0.9 * m + 0.1 * grad
        u = 0.999 * u + 0.001 * grad * grad
        v -= LR * (m / (1 - 0.9 ** t)) / (np.sqrt(u / (1 - 0.999 ** t)) + 1e-8)
    raw = 1.0 / (1.0 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA
    hard = ((raw >= 0.5) & free).astype(np.float64)
    loss = loss_of(hard)
    if loss >= nearest_loss:
        hard, loss = nearest, nearest_loss
    return LearnedRounding(bits, hard.astype(np.uint8).reshape(w.shape), loss, nearest_loss)


def layer_inputs(mod: tvm.IRModule) -> list[tuple[int, relax.Var, relax.Call, int]]:
    """(position, var, conv2d/matmul call, index of its input among main's params + tensor
    bindings) of each NCHW conv2d and dense layer of the fused float graph."""
    main = mod["main"]
    values = bound_values(main)
    sources = [*main.params, *tensor_bindings(main)]
    found = []
    for pos, var, gv, call in weighted_layers(mod):
        if op_name(call) == "relax.nn.conv2d_transpose" or \
                (op_name(call) == "relax.nn.conv2d" and str(call.attrs.data_layout) != "NCHW"):
            continue
        params = list(mod[gv].params)
        param = next((k for k, p in enumerate(params) if call.args[0].same_as(p)), None)
        source = values[var].args[param] if param is not None else None
        index = next((i for i, v in enumerate(sources) if source is not None
                      and source.same_as(v)), None)
        if index is not None:
            found.append((pos, var, call, index))
    return found


def adaround(mod: tvm.IRModule, data: dict[str, np.ndarray], host: tvm.target.Target,
             bits_of: Callable[[int, relax.Var], int], per_channel: bool, iters: int,
             progress: bool = True) -> dict[int, LearnedRounding]:
    """Learned rounding per conv2d/dense layer of the fused float graph, by binding position;
    `bits_of(position, var)` gives each layer's weight bits."""
    layers = layer_inputs(mod)
    grams: dict[int, np.ndarray] = {}
    for feeds, results in probe_batches(mod, data, host, progress):
        tensors = feeds + results
        for pos, _, call, index in layers:
            cols, _ = columns(call, tensors[index].astype(np.float64))
            gram = np.einsum("gnk,gnl->gkl", cols, cols)
            grams[pos] = gram if pos not in grams else grams[pos] + gram
    return {pos: learn_rounding(layer_weight(call), grams[pos], bits_of(pos, var),
                                per_channel, iters)
            for pos, var, call, _ in layers}
