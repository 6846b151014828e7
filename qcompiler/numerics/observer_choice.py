"""`--observer auto`: per tensor, the range observer whose quantized tensor its consumers mind
least, measured on the first calibration batch.

For a tensor x with candidate qparams (one per range observer) and x' = s (q(x) - zp) its
fake-quantized value, the score is the SQNR of what consumes it,

    10 log10( sum_c ||f_c(x)||^2 / sum_c ||f_c(x) - f_c(x')||^2 )  dB,

where f_c is each conv2d/dense consumer's linear part (its weights times its input, before
bias and activation) and, for a tensor no conv/dense reads, the identity. A clipping observer
wins where the values it clips matter less to the next layer than the finer steps it buys.
Ties go to the earlier observer in `RANGE_OBSERVERS`.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from qcompiler.numerics.adaround import columns, layer_inputs, layer_weight
from qcompiler.numerics.observers import ObserverChoice
from qcompiler.numerics.qparams import QParams, dtype_range
from qcompiler.numerics.sqnr import sqnr_db
from qcompiler.reference import dequantize, quantize


def fake_quantize(x: np.ndarray, qp: QParams) -> np.ndarray:
    """`s (clamp(round(x / s) + zp) - zp)`: the value the integer graph carries for x."""
    lo, hi = dtype_range(qp.dtype)
    attrs = {**qp.to_json(), "lo": lo, "hi": hi}
    return dequantize(quantize(x, attrs), attrs).astype(np.float64)


def choose_observers(mod: tvm.IRModule, tensors: list[np.ndarray],
                     candidates: list[list[QParams]], kinds: tuple[str, ...]
                     ) -> list[tuple[QParams, ObserverChoice]]:
    """Per tensor (main's params, then its tensor bindings; `tensors` one batch of each, and
    `candidates[i][k]` its qparams by observer `kinds[k]`): the best qparams and the choice."""
    consumers: dict[int, list] = {}
    for _, _, call, index in layer_inputs(mod):
        consumers.setdefault(index, []).append(call)
    chosen = []
    for i, (x, cands) in enumerate(zip(tensors, candidates)):
        x = x.astype(np.float64)
        funcs = [_linear_part(call) for call in consumers.get(i, [])] or [lambda v: v]
        clean = [f(x) for f in funcs]
        signal = sum(float(np.sum(y * y)) for y in clean)
        scores = []
        for qp in cands:
            xq = fake_quantize(x, qp)
            scores.append(sqnr_db(signal, sum(float(np.sum((y - f(xq)) ** 2))
                                          for f, y in zip(funcs, clean))))
        best = int(np.argmax(scores))
        chosen.append((cands[best], ObserverChoice(kinds[best], scores[best])))
    return chosen


def _linear_part(call: relax.Call) -> Callable[[np.ndarray], np.ndarray]:
    """x -> the layer's weights times x (im2col columns times weight rows, per group)."""
    w = layer_weight(call).astype(np.float64)
    rows = w.reshape(w.shape[0], -1)

    def apply(x: np.ndarray) -> np.ndarray:
        cols, groups = columns(call, x)
        per = rows.shape[0] // groups
        return np.concatenate([cols[g] @ rows[g * per:(g + 1) * per].T for g in range(groups)],
                              axis=1)

    return apply
