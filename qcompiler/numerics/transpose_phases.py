"""A strided transposed convolution as one ordinary convolution and an interleave.

Output row `o` of a transposed conv (stride s, kernel K, top padding p) sums `x[q - m] w[r + s m]`
over m, where `o + p = s q + r`: each phase `r` of the output is a stride-1 convolution of the
input with the taps `w[r], w[r + s], ...` flipped, `M = ceil(K / s)` of them. With the phases
as output channels, `(ry, rx, o)` phase-major, one conv computes every output's integer sum,
exactly the sum the zero-inserted form computes, without its `s^2` multiplications by inserted
zeros; an interleave (`kernels.interleave_phases`) then puts each value in its place. A 2x2
stride-2 layer (the U-Net / text-detector upsampler) becomes a 1x1 conv.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qcompiler.numerics.shapes import ceil_div, conv2d_transpose_out_hw


@dataclass(frozen=True)
class PhasePlan:
    """The ordinary conv (`taps`, `padding` t, l, b, r; stride 1) whose output `(n, sh sw cout,
    rows, cols)` interleaves to rows `rows * sh` x cols `cols * sw`, cropped from `offset`."""
    strides: tuple[int, int]
    taps: tuple[int, int]
    padding: tuple[int, int, int, int]
    rows: int
    cols: int
    offset: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def in_place(self) -> bool:
        """The conv's output is the transposed conv's (one phase, nothing to crop)."""
        return self.strides == (1, 1) and self.offset == (0, 0) \
            and (self.rows, self.cols) == self.out_hw


def plan(x_shape: tuple, w_shape: tuple, attrs: dict) -> PhasePlan | None:
    """The decomposition of a transposed conv (attrs of `kernels.conv2d_transpose`; weights
    (Cin, Cout, kh, kw)); None where it does not apply (groups, dilation)."""
    if attrs["groups"] != 1 or tuple(attrs["dilation"]) != (1, 1):
        return None
    oh, ow = conv2d_transpose_out_hw(x_shape, w_shape, attrs)
    pt, pl = attrs["padding"][:2]
    (sh, sw), (kh, kw), (h, w) = attrs["strides"], w_shape[2:], x_shape[2:]
    if (sh, sw) == (1, 1):  # one phase: the crop goes into the conv's padding where it can
        pad = (kh - 1 - pt, kw - 1 - pl, oh - h + pt, ow - w + pl)
        if min(pad) >= 0:
            return PhasePlan((1, 1), (kh, kw), pad, oh, ow, (0, 0), (oh, ow))
    mh, mw = ceil_div(kh, sh), ceil_div(kw, sw)
    # the last phase row any output reads, `(p + out - 1) // s`, must exist: pad below with
    # the zero point (its products are 0: an output no input reaches is the bias alone)
    pb, pr = max(0, (pt + oh - 1) // sh + 1 - h), max(0, (pl + ow - 1) // sw + 1 - w)
    return PhasePlan((sh, sw), (mh, mw), (mh - 1, mw - 1, pb, pr), h + pb, w + pr, (pt, pl),
                     (oh, ow))


def phase_weights(w: np.ndarray, p: PhasePlan) -> np.ndarray:
    """(Cin, Cout, kh, kw) -> (sh sw Cout, Cin, M_h, M_w): phase (ry, rx)'s taps, flipped,
    zeros past the kernel's edge."""
    cin, cout, kh, kw = w.shape
    (sh, sw), (mh, mw) = p.strides, p.taps
    full = np.zeros((cin, cout, mh * sh, mw * sw), w.dtype)
    full[:, :, :kh, :kw] = w
    # ky = ry + sh m with m = M - 1 - t (flipped): index [ry, t] of a (M, sh) view, reversed
    taps = full.reshape(cin, cout, mh, sh, mw, sw)[:, :, ::-1, :, ::-1, :]
    return np.ascontiguousarray(taps.transpose(3, 5, 1, 0, 2, 4).reshape(
        sh * sw * cout, cin, mh, mw))


def interleave(y: np.ndarray, strides: tuple, offset: tuple, out_hw: tuple) -> np.ndarray:
    """The phase conv's output `(n, sh sw cout, rows, cols)` in the transposed conv's place
    (`kernels.interleave_phases`, the reference's): phase `(ry, rx)`'s row q, column p is
    output row `q sh + ry - t`, column `p sw + rx - l`."""
    n, c, rows, cols = y.shape
    (sh, sw), (t, left), (oh, ow) = strides, offset, out_hw
    z = y.reshape(n, sh, sw, c // (sh * sw), rows, cols).transpose(0, 3, 4, 1, 5, 2)
    z = z.reshape(n, c // (sh * sw), rows * sh, cols * sw)
    return z[:, :, t:t + oh, left:left + ow]
