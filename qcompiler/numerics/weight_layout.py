"""Weights packed at compile time for the dot-product kernels, and the way back.

A dot-product instruction multiplies L output lanes by K reduction values at once (K = 4
bytes, or 2 for `vpmaddwd`'s int16 pairs), so the kernels read weights as
`wp[o/L, c/K, (ky, kx,) o%L, c%K]` (channels padded with zeros).
Packing once here, instead of in the kernel on every call, is what makes the layout free at
run time. The zero point leaves the dot product through the bias:

    sum (x - zp) w + b  =  sum x w + (b - zp sum w)

so a packed kernel's bias operand is `b - zp_x * sum(w)` (it fits in int32 whenever the
layer passed the accumulator check). The reference undoes both (`unpack`). A 4-bit layer's
packed weights are then stored as nibbles (`qcompiler.numerics.nibbles`); `canonical` undoes all.
"""
from __future__ import annotations

import numpy as np

from qcompiler.numerics import nibbles
from qcompiler.numerics.shapes import ceil_div


def packed_shape(w_shape: tuple, lanes: int, depth: int = 4) -> tuple[int, ...]:
    """(cout, cin[, kh, kw]) -> (cout/L, cin/K[, kh, kw], L, K), each quotient rounded up
    (K = `depth`, the reduction values per lane)."""
    return (ceil_div(w_shape[0], lanes), ceil_div(w_shape[1], depth), *w_shape[2:], lanes,
            depth)


def pack(w: np.ndarray, lanes: int, depth: int = 4) -> np.ndarray:
    """(cout, cin[, kh, kw]) int8 -> (cout/L, cin/K[, kh, kw], L, K), zero padded."""
    cout, cin = w.shape[:2]
    spatial = w.shape[2:]
    o4, c4 = packed_shape(w.shape, lanes, depth)[:2]
    padded = np.zeros((o4 * lanes, c4 * depth, *spatial), np.int8)
    padded[:cout, :cin] = w
    blocks = padded.reshape(o4, lanes, c4, depth, *spatial)
    order = (0, 2, *range(4, 4 + len(spatial)), 1, 3)
    return np.ascontiguousarray(blocks.transpose(order))


def unpack(wp: np.ndarray, w_shape: tuple) -> np.ndarray:
    """The inverse of `pack` for weights of shape `w_shape` (L and K read from `wp`'s shape)."""
    cout, cin = w_shape[:2]
    n_spatial = len(w_shape) - 2
    o4, c4, lanes, depth = wp.shape[0], wp.shape[1], wp.shape[-2], wp.shape[-1]
    order = (0, 2 + n_spatial, 1, 3 + n_spatial, *range(2, 2 + n_spatial))
    full = wp.transpose(order).reshape(o4 * lanes, c4 * depth, *w_shape[2:])
    return np.ascontiguousarray(full[:cout, :cin])


def fold_columns(w: np.ndarray) -> np.ndarray:
    """(cout, cin, kh, kw) -> (cout, cin kw, kh, 1): a conv's kernel columns as more input
    channels, channel c kw + kx holding column kx of channel c (`dot_product.folds_columns`)."""
    cout, cin, kh, kw = w.shape
    return np.ascontiguousarray(w.transpose(0, 1, 3, 2).reshape(cout, cin * kw, kh, 1))


def unfold_columns(w: np.ndarray, kw: int) -> np.ndarray:
    """The inverse of `fold_columns`."""
    cout, ckw, kh, _ = w.shape
    return np.ascontiguousarray(w.reshape(cout, ckw // kw, kw, kh).transpose(0, 1, 3, 2))


def canonical(w: np.ndarray, attrs: dict) -> np.ndarray:
    """A conv/dense kernel's weight operand as the int8 (cout, cin[, kh, kw]) tensor of the
    numeric contract: nibbles unpacked, then the dot-product layout undone (exact)."""
    w = nibbles.stored_weights(w, attrs)
    if "depthwise_lanes" in attrs:
        return unpack_depthwise(w, tuple(attrs["w_shape"]))
    if "packed_lanes" not in attrs:
        return w
    if attrs.get("columns_folded"):
        cout, cin, kh, kw = attrs["w_shape"]
        return unfold_columns(unpack(w, (cout, cin * kw, kh, 1)), kw)
    return unpack(w, tuple(attrs["w_shape"]))


def layer_weights(w: np.ndarray, attrs: dict) -> np.ndarray:
    """`canonical`, cropped to the layer's own channels: a blocked kernel
    (`passes.plan_layout`, attribute `channels`) stores the channel-padded layer's weights."""
    w = canonical(w, attrs)
    if "channels" not in attrs:
        return w
    cin, cout = attrs["channels"]
    return w[:cout, :cin] if attrs["groups"] == 1 else w[:cout]  # (depthwise: one channel)


def block_groups(w: np.ndarray, groups: int, channels: int, block: int
                 ) -> tuple[np.ndarray, int] | None:
    """A grouped conv's weights (cout, g, kh, kw), g channels in and out per group, as a conv
    whose groups are whole blocks of `block` channels: (channels, max(g, block), kh, kw) and
    its group count, or None where the groups do not tile the blocks (g neither divides nor
    is a multiple of `block`). With g < block, each block holds block/g groups and its weights
    are zero across them (block/g times the MACs, all in whole vectors); `channels`: the
    channel-padded count (its padded outputs get zero weights)."""
    cout, g = w.shape[:2]
    if groups == 1 or cout != groups * g or not (block % g == 0 or g % block == 0):
        return None
    size = max(g, block)
    out = np.zeros((channels, size, *w.shape[2:]), np.int8)
    o = np.arange(cout)[:, None]
    out[o, o // g * g - o // size * size + np.arange(g)] = w
    return out, channels // size


def pack_depthwise(w: np.ndarray, lanes: int) -> np.ndarray:
    """Depthwise (c, 1, kh, kw), c a multiple of L -> (c/L, kh, kw/4, L, 4): per filter row,
    groups of 4 taps for each of L channel lanes (taps padded with zeros)."""
    c, _, kh, kw = w.shape
    groups = ceil_div(kw, 4)
    padded = np.zeros((c, kh, groups * 4), np.int8)
    padded[:, :, :kw] = w[:, 0]
    blocks = padded.reshape(c // lanes, lanes, kh, groups, 4)
    return np.ascontiguousarray(blocks.transpose(0, 2, 3, 1, 4))


def unpack_depthwise(wd: np.ndarray, w_shape: tuple) -> np.ndarray:
    """The inverse of `pack_depthwise` for weights of shape `w_shape`."""
    cb, kh, groups, lanes, _ = wd.shape
    full = wd.transpose(0, 3, 1, 2, 4).reshape(cb * lanes, kh, groups * 4)
    return np.ascontiguousarray(full[:, None, :, :w_shape[3]])


def folded_bias(w: np.ndarray, bias: np.ndarray, zp_x: int) -> np.ndarray:
    """`bias - zp_x * sum(w)` per output channel, int32 (checked, never wrapped)."""
    wsum = w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    out = bias.astype(np.int64) - np.int64(zp_x) * wsum
    if np.any(out < -2**31) or np.any(out > 2**31 - 1):
        raise OverflowError("the folded bias does not fit in int32")
    return out.astype(np.int32)


def unfold_bias(w: np.ndarray, folded: np.ndarray, zp_x: int) -> np.ndarray:
    """The original bias from `folded_bias` (exact)."""
    wsum = w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    return (folded.astype(np.int64) + np.int64(zp_x) * wsum).astype(np.int32)
