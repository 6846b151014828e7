"""Activation observers: `observe(x)` on each calibration batch, then `compute_qparams()`.

Each keeps the exact min/max and a bounded uniform subsample of the values (2^18 by default),
which is what the percentile and MSE searches need; memory stays bounded on large models.
The math: `r = s * (q - z)`; the range an observer picks is turned into `(s, z)` by
`qparams.compute_qparams`, the single place that does it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qcompiler.numerics.qparams import QParams, compute_qparams, dtype_range

RANGE_OBSERVERS = ("minmax", "percentile", "mse", "entropy")
# `auto`: per tensor, the range observer whose quantized tensor serves its consumer best
# (`qcompiler.numerics.observer_choice`)
OBSERVERS = (*RANGE_OBSERVERS, "auto")


@dataclass(frozen=True)
class ObserverChoice:
    """The observer a tensor's qparams come from, and (`auto`) its consumers' SQNR with them."""

    observer: str
    sqnr_db: float | None  # None: the observer was given, not chosen


class Observer:
    """Collects statistics of one activation tensor over the calibration set."""

    def __init__(self, dtype: str, sample_size: int = 1 << 18, seed: int = 0) -> None:
        self.dtype = dtype
        self.lo = np.inf
        self.hi = -np.inf
        self.sample_size = sample_size
        self._rng = np.random.default_rng(seed)
        self._chunks: list[np.ndarray] = []
        self._seen = 0

    def observe(self, x: np.ndarray) -> None:
        flat = np.asarray(x, np.float32).reshape(-1)
        if flat.size == 0:
            return
        self.lo = min(self.lo, float(flat.min()))
        self.hi = max(self.hi, float(flat.max()))
        self._seen += flat.size
        keep = min(flat.size, self.sample_size)
        self._chunks.append(flat if keep == flat.size else
                            self._rng.choice(flat, keep, replace=False))
        total = sum(c.size for c in self._chunks)
        if total > 2 * self.sample_size:  # thin out, keeping each value's chance equal-ish
            merged = np.concatenate(self._chunks)
            self._chunks = [self._rng.choice(merged, self.sample_size, replace=False)]

    def sample(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(1, np.float32)

    def compute_range(self) -> tuple[float, float]:
        raise NotImplementedError

    def compute_qparams(self) -> QParams:
        if self._seen == 0:
            raise ValueError("observer saw no data")
        lo, hi = self.compute_range()
        return compute_qparams(lo, hi, self.dtype)


class MinMaxObserver(Observer):
    """The full observed range: no clipping, largest rounding error."""

    def compute_range(self) -> tuple[float, float]:
        return self.lo, self.hi


class PercentileObserver(Observer):
    """Clip the tails: [p_(100-q), p_q] of the values, q = 99.99 by default."""

    def __init__(self, dtype: str, percentile: float = 99.99, **kw: int) -> None:
        super().__init__(dtype, **kw)
        self.percentile = percentile

    def compute_range(self) -> tuple[float, float]:
        s = self.sample()
        lo, hi = np.percentile(s, [100.0 - self.percentile, self.percentile])
        # A tensor that is never negative (ReLU) keeps 0 as its exact lower bound.
        return (float(lo) if self.lo < 0 else self.lo), float(hi)


class MSEObserver(Observer):
    """Search the clipping range `t * [lo, hi]`, t in (0, 1], minimising quantization MSE."""

    def compute_range(self) -> tuple[float, float]:
        s = self.sample().astype(np.float64)
        qmin, qmax = dtype_range(self.dtype)
        best, best_err = (self.lo, self.hi), np.inf
        for t in np.linspace(1.0, 0.2, 81):
            qp = compute_qparams(self.lo * t, self.hi * t, self.dtype)
            q = np.clip(np.rint(s / qp.scale) + qp.zero_point, qmin, qmax)
            err = float(np.mean((qp.scale * (q - qp.zero_point) - s) ** 2))
            if err < best_err:
                best, best_err = (self.lo * t, self.hi * t), err
        return best


class EntropyObserver(Observer):
    """The clipping threshold t minimising KL(P || Q) (TensorRT's entropy calibration, as in
    ONNX Runtime): P is the histogram of |x| over `bins` bins, cut at t with the tail folded
    into its last bin; Q is P's first t bins merged into as many levels as the dtype has on
    that side (256 for a never-negative tensor, else 128) and spread back over their non-empty
    bins. The range is then `[max(lo, -t), min(hi, t)]`, keeping 0 as a ReLU output's bound.
    """

    bins = 2048  # candidates: every 8th bin count from `levels`, then the best's neighbours

    def compute_range(self) -> tuple[float, float]:
        qmin, qmax = dtype_range(self.dtype)
        levels = (qmax - qmin + 1) if self.lo >= 0 else (qmax - qmin + 1) // 2
        top = max(abs(self.lo), abs(self.hi))
        if levels >= self.bins or top == 0.0:
            return self.lo, self.hi
        hist, edges = np.histogram(np.abs(self.sample()), self.bins, (0.0, top))
        def kl(i: int) -> float:
            return _clipped_kl(hist, i, levels)

        coarse = min(range(levels, self.bins + 1, 8), key=kl)  # then refine at single bins
        best = min(range(max(levels, coarse - 7), min(self.bins, coarse + 7) + 1), key=kl)
        t = float(edges[best])
        return (self.lo if self.lo >= 0 else max(self.lo, -t)), min(self.hi, t)


def _clipped_kl(hist: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) of the first i bins of `hist` (tail folded in) against `levels` levels."""
    p = hist[:i].astype(np.float64)
    p[-1] += hist[i:].sum()
    kept = hist[:i].astype(np.float64)
    starts = (np.arange(levels) * i) // levels
    sums = np.add.reduceat(kept, starts)
    filled = np.add.reduceat((kept > 0).astype(np.float64), starts)
    group = np.repeat(np.arange(levels), np.diff(np.append(starts, i)))
    q = np.where(kept > 0, sums[group] / np.maximum(filled[group], 1.0), 0.0)
    p, q = p / p.sum(), q / max(q.sum(), 1e-300)
    on = p > 0
    return float(np.sum(p[on] * np.log(p[on] / np.maximum(q[on], 1e-12))))


def make_observer(kind: str, dtype: str, percentile: float = 99.99) -> Observer:
    if kind == "entropy":
        return EntropyObserver(dtype)
    if kind == "minmax":
        return MinMaxObserver(dtype)
    if kind == "percentile":
        return PercentileObserver(dtype, percentile)
    if kind == "mse":
        return MSEObserver(dtype)
    raise ValueError(f"observer must be one of {', '.join(RANGE_OBSERVERS)}, not {kind!r}")
