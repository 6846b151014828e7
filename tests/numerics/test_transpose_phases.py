"""A transposed conv as its phase conv and an interleave (`numerics.transpose_phases`): the
reference's transposed conv, to the byte, on the shapes exporters write (kernel = stride,
kernel not a multiple of the stride, padding, output padding, rectangular strides)."""
from __future__ import annotations

import numpy as np
import pytest

from qcompiler import reference
from qcompiler.numerics import transpose_phases

CASES = [  # (cin, cout, h, w, kh, kw, strides, padding t l b r, output padding)
    (5, 3, 6, 7, 2, 2, (2, 2), (0, 0, 0, 0), (0, 0)),  # the 2x2 upsampler: a 1x1 conv
    (4, 6, 5, 5, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),  # k3 s2 p1 op1
    (3, 2, 4, 6, 4, 4, (2, 2), (1, 1, 1, 1), (0, 0)),  # k4 s2 p1 (DCGAN)
    (2, 3, 5, 4, 5, 3, (3, 2), (2, 0, 1, 1), (2, 1)),  # k not a multiple of s, uneven
    (3, 4, 3, 3, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)),  # kernel smaller than the stride
    (2, 2, 4, 4, 3, 3, (1, 1), (1, 1, 1, 1), (0, 0)),  # stride 1: one phase
    (2, 2, 3, 5, 2, 3, (4, 3), (3, 2, 0, 1), (3, 0)),  # padding past the first phase row
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_phase_conv_equals_the_transposed_conv(case, rng):
    cin, cout, h, w, kh, kw, strides, pads, out_pad = case
    attrs = {"strides": list(strides), "padding": list(pads), "output_padding": list(out_pad),
             "dilation": [1, 1], "groups": 1, "zp_x": 7, "zp_y": -3, "lo": -128, "hi": 127,
             "out_dtype": "int8"}
    x = rng.integers(-128, 128, (2, cin, h, w)).astype(np.int8)
    wt = rng.integers(-127, 128, (cin, cout, kh, kw)).astype(np.int8)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    m0 = rng.integers(1 << 30, (1 << 31) - 1, cout).astype(np.int32)
    shift = rng.integers(-9, -5, cout).astype(np.int32)
    want = reference.conv2d_transpose(x, wt, bias, m0, shift, attrs)

    p = transpose_phases.plan(x.shape, wt.shape, attrs)
    phases = strides[0] * strides[1]
    conv_attrs = {**attrs, "strides": [1, 1], "padding": list(p.padding)}
    y = reference.conv2d(x, transpose_phases.phase_weights(wt, p), np.tile(bias, phases),
                         np.tile(m0, phases), np.tile(shift, phases), conv_attrs)
    assert y.shape == (2, phases * cout, p.rows, p.cols)
    got = transpose_phases.interleave(y, p.strides, p.offset, p.out_hw)
    np.testing.assert_array_equal(got, want)
    assert p.taps == (-(-kh // strides[0]), -(-kw // strides[1]))
    assert p.in_place == (strides == (1, 1))  # stride 1: the crop is the conv's padding


def test_groups_and_dilation_keep_the_zero_inserted_form():
    base = {"strides": [2, 2], "padding": [0] * 4, "output_padding": [0, 0],
            "dilation": [1, 1], "groups": 1}
    assert transpose_phases.plan((1, 4, 3, 3), (4, 2, 2, 2), {**base, "groups": 2}) is None
    assert transpose_phases.plan((1, 4, 3, 3), (4, 2, 2, 2), {**base, "dilation": [2, 2]}) \
        is None
