"""Sizes every kernel, schedule and the reference agree on: one formula each.

Padding is ONNX's order as our attributes carry it: (top, left, bottom, right).
"""
from __future__ import annotations


def ceil_div(n: int, k: int) -> int:
    """`ceil(n / k)` for non-negative integers (blocks of k covering n)."""
    return (n + k - 1) // k


def conv2d_out_hw(x_shape: tuple, w_shape: tuple, attrs: dict) -> tuple[int, int]:
    """Output rows and columns of a conv with dilated taps:
    `(in + pad_begin + pad_end - dilation * (k - 1) - 1) // stride + 1`."""
    (h, w), (kh, kw) = x_shape[2:], w_shape[2:]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
    pt, pl, pb, pr = attrs["padding"]
    return ((h + pt + pb - dh * (kh - 1) - 1) // sh + 1,
            (w + pl + pr - dw * (kw - 1) - 1) // sw + 1)


def conv2d_transpose_out_hw(x_shape: tuple, w_shape: tuple, attrs: dict) -> tuple[int, int]:
    """ONNX: `(in - 1) * stride - pad_begin - pad_end + dilation * (k - 1) + 1 + out_pad`."""
    pt, pl, pb, pr = attrs["padding"]
    return tuple((i - 1) * s - a - b + d * (k - 1) + 1 + op for i, s, a, b, d, k, op in zip(
        x_shape[2:], attrs["strides"], (pt, pl), (pb, pr), attrs["dilation"], w_shape[2:],
        attrs["output_padding"]))


def pool2d_out_hw(hw: tuple[int, int], attrs: dict) -> tuple[int, int]:
    """Output rows and columns of a max/average pool (attrs `kernel`, `strides`, `padding`):
    `(in + pad_begin + pad_end - k) // stride + 1`."""
    (h, w), (kh, kw), (sh, sw) = hw, attrs["kernel"], attrs["strides"]
    pt, pl, pb, pr = attrs["padding"]
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def pool2d_ceil_padding(hw: tuple[int, int], attrs: dict) -> list[int]:
    """Padding (top, left, bottom, right) under which `pool2d_out_hw`'s floor gives ONNX's
    `ceil_mode=1` size: bottom and right grow until the last window fits. That window must
    start inside the input or its top/left padding (ONNX, PyTorch): `out = ceil((in +
    pad_begin + pad_end - k) / stride) + 1`, less one if `(out - 1) * stride >= in + pad_begin`.
    """
    pt, pl, pb, pr = attrs["padding"]
    grown = []
    for n, k, s, begin, end in zip(hw, attrs["kernel"], attrs["strides"], (pt, pl), (pb, pr)):
        out = ceil_div(n + begin + end - k, s) + 1
        if (out - 1) * s >= n + begin:
            out -= 1
        grown.append(end + max((out - 1) * s + k - (n + begin + end), 0))
    return [pt, pl, grown[0], grown[1]]
