"""vrmpy convs' packed input and output planes by shuffle networks (`hexagon.packing`,
`hexagon.output_planes`): bit-exact under qemu-hexagon on every path (one run of pixels,
padded rows, windows past the plane's end, input and output channel tails, strides, batch
2), and fewer packets than the element copies."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from qcompiler.schedules.hexagon.dot import HEXAGON_VRMPY
from support.emulated_kernels import run_under_qemu

from qcompiler import reference
from qcompiler.numerics.shapes import conv2d_out_hw

ATTRS = {"dilation": [1, 1], "groups": 1, "zp_x": 3, "zp_y": 5, "lo": 0, "hi": 255,
         "out_dtype": "uint8"}

CASES = [  # (x shape, w shape, stride, padding)
    ((1, 72, 16, 16), (24, 72, 1, 1), 1, 0),   # one run of 256 pixels: two windows
    ((1, 16, 12, 12), (8, 16, 1, 1), 1, 0),    # 144 pixels: the second window overlaps
    ((1, 24, 5, 5), (40, 24, 1, 1), 1, 0),     # 25 pixels: a window past the tensor's end
    ((1, 40, 6, 6), (33, 40, 3, 3), 1, 1),     # padded rows (the padding split's copy)
    ((2, 37, 9, 7), (16, 37, 3, 3), 2, 1),     # channel tail (zp rows), strided, batch 2
    ((1, 16, 16, 16), (64, 16, 1, 1), 1, 0),   # whole output blocks (no channel condition)
    ((1, 32, 14, 14), (16, 32, 1, 1), 2, 0),   # stride 2: no read of the last row or column
]


def _operands(case: tuple, rng: np.random.Generator) -> tuple:
    x_shape, w_shape, stride, pad = case
    attrs = {**ATTRS, "strides": [stride] * 2, "padding": [pad] * 4}
    x = rng.integers(0, 256, x_shape).astype("uint8")
    w = rng.integers(-128, 128, w_shape).astype("int8")
    bias = rng.integers(-20000, 20000, w_shape[0]).astype("int32")
    m0 = rng.integers(1 << 29, (1 << 31) - 1, w_shape[0]).astype("int32")
    shift = np.full(w_shape[0], -9, "int32")
    want = reference.conv2d(x, w, bias, m0, shift, attrs)
    wp, folded = HEXAGON_VRMPY.pack_operands(w, bias, attrs)
    return attrs, [x, wp, folded, m0, shift], want


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_packing_by_shuffles_equals_reference_under_qemu(case, tmp_path, rng):
    attrs, args, want = _operands(case, rng)
    func = HEXAGON_VRMPY.build("conv2d", case[0], "uint8", case[1], attrs)
    script = func.script()
    assert "x_packed_shuffled" in script
    # the output's move: column blocks of 4 to 128 (a power of two) only
    _, ow = conv2d_out_hw(case[0], case[1], attrs)
    assert ("requantize_out_shuffled" in script) == (ow in (4, 8, 16))
    assert 0.1 < np.mean((want > 0) & (want < 255))  # the clamp hides few sums
    run_under_qemu(func, args, want, tmp_path)


@pytest.mark.parametrize("case,off", [
    (CASES[0], {"packing": None}),  # 72 -> 24: 17,868 vs 35,889 packets when written
    (CASES[-2], {"unpacking": None}),  # 16 -> 64: the output's move
])
def test_shuffles_take_fewer_packets(case, off, tmp_path, rng):
    """1x1 convs on a 16x16 plane, against the element copy of the input or the output."""
    attrs, args, want = _operands(case, rng)
    packets = {}
    for name, rule in (("shuffles", HEXAGON_VRMPY),
                       ("elements", dataclasses.replace(HEXAGON_VRMPY, **off))):
        func = rule.build("conv2d", case[0], "uint8", case[1], attrs)
        packets[name] = run_under_qemu(func, args, want, tmp_path / name)
    assert packets["shuffles"] * 3 < packets["elements"] * 2, packets


@pytest.mark.parametrize("x_shape,w_shape", [
    ((1, 24, 1, 1), (8, 24, 1, 1)),   # an SE block's conv on its pooled plane
    ((2, 16, 5, 1), (40, 16, 1, 1)),  # one column
    ((1, 16, 1, 5), (8, 16, 1, 1)),   # one row
])
def test_planes_without_row_or_column_loops(x_shape, w_shape, tmp_path, rng):
    """Copies whose unit loops are dropped leave the networks nothing to take (their rewrite
    checks the loop nest it replaces; the hexagon fuzz once saw a vrmpy conv fall back to
    the portable kernel on a nest it misread): vrmpy kernels, bit-exact under qemu."""
    case = (x_shape, w_shape, 1, 0)
    attrs, args, want = _operands(case, rng)
    func = HEXAGON_VRMPY.build("conv2d", x_shape, "uint8", w_shape, attrs)
    assert "vrmpy" in func.script()
    run_under_qemu(func, args, want, tmp_path)
