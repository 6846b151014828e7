"""Weight layouts (`numerics.weight_layout`): a grouped conv as groups of whole 16-channel
blocks (`block_groups`) computes the grouped conv's numbers on every real channel."""
from __future__ import annotations

import numpy as np
import pytest

from qcompiler.numerics.weight_layout import block_groups
from qcompiler.reference import conv2d


@pytest.mark.parametrize("width, channels", [(8, 104), (4, 32), (2, 20), (16, 48), (32, 64)])
def test_block_groups_compute_the_grouped_conv(width, channels, rng):
    padded = -(-channels // 16) * 16
    w = rng.integers(-127, 128, (channels, width, 3, 3)).astype(np.int8)
    got = block_groups(w, channels // width, padded, 16)
    assert got is not None
    wide, groups = got
    assert wide.shape == (padded, max(width, 16), 3, 3) and groups == padded // max(width, 16)
    x = rng.integers(0, 256, (1, padded, 6, 6)).astype(np.uint8)
    attrs = {"strides": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "zp_x": 7,
             "zp_y": 0, "lo": -2**31, "hi": 2**31 - 1, "out_dtype": "int32"}
    m0, shift = np.full(padded, 2**30, np.int32), np.ones(padded, np.int32)  # x1: the sums
    want = conv2d(x[:, :channels], w, np.zeros(channels, np.int32), m0[:channels],
                  shift[:channels], {**attrs, "groups": channels // width})
    out = conv2d(x, wide, np.zeros(padded, np.int32), m0, shift, {**attrs, "groups": groups})
    np.testing.assert_array_equal(out[:, :channels], want)
    assert np.abs(want).max() > 1000


@pytest.mark.parametrize("width, channels_out", [(24, 48), (3, 12)])
def test_groups_across_blocks_are_refused(width, channels_out, rng):
    w = rng.integers(-127, 128, (channels_out, width, 3, 3)).astype(np.int8)
    assert block_groups(w, channels_out // width, 48, 16) is None
    assert block_groups(w[:, :1], 1, 48, 16) is None  # groups 1: not grouped
