"""The dot-product kernels' column folding (`dot_product.folds_columns`): a conv with few input
channels takes its kernel's columns into the K-deep reduction. The policy, the weights' way
there and back, and folded kernels bit-exact against the reference on x86 (VNNI, K = 4, and
AVX2, K = 2; ARM and Hexagon run the bundled model's folded stem under qemu in the library
tests)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from conftest import AVX2_TARGET, VNNI_TARGET, requires_cpu_for
from qcompiler.schedules.dot_product import folds_columns
from qcompiler.schedules.x86.dot import X86_AVX2, X86_VNNI

from qcompiler.numerics.weight_layout import canonical, fold_columns, pack, unfold_columns
from qcompiler.reference import conv2d as ref_conv2d

GROUPS1 = {"groups": 1}


@pytest.mark.parametrize(("w_shape", "depth", "folds"), [
    ((16, 1, 3, 3), 4, True),  # 4 slots per kernel row instead of 12
    ((16, 2, 5, 5), 4, True),  # 12 instead of 20
    ((16, 3, 3, 3), 4, False),  # 12 and 12
    ((64, 3, 7, 7), 4, False),  # 24 and 28: not 1.5x
    ((16, 1, 1, 1), 4, False),  # one column
    ((16, 1, 3, 3), 2, True),  # 4 instead of 6
    ((16, 4, 3, 3), 4, False),
    ((10, 48), 4, False),  # dense
])
def test_folds_columns_where_it_saves_a_third_of_the_slots(w_shape, depth, folds):
    assert folds_columns(w_shape, GROUPS1, depth) == folds
    assert not folds_columns(w_shape, {"groups": 2}, depth)


def test_folded_weights_read_back_exactly(rng):
    w = rng.integers(-128, 128, (10, 2, 3, 5)).astype(np.int8)
    folded = fold_columns(w)
    assert folded.shape == (10, 10, 3, 1)
    assert folded[4, 1 * 5 + 3, 2, 0] == w[4, 1, 2, 3]  # channel c kw + kx: column kx of c
    np.testing.assert_array_equal(unfold_columns(folded, 5), w)
    attrs = {"packed_lanes": 4, "w_shape": [10, 2, 3, 5], "columns_folded": True}
    np.testing.assert_array_equal(canonical(pack(folded, 4, 4), attrs), w)


# (rule, target, cin, cout, kernel, stride, dilation, pads, (h, w), batch)
CASES = [
    (X86_VNNI, VNNI_TARGET, 1, 16, (3, 3), 1, 1, (1, 1, 1, 1), (28, 28), 1),
    (X86_VNNI, VNNI_TARGET, 2, 20, (5, 5), 2, 1, (2, 1, 3, 2), (17, 13), 2),
    (X86_VNNI, VNNI_TARGET, 1, 8, (3, 7), 1, 2, (2, 6, 2, 6), (9, 11), 1),
    (X86_AVX2, AVX2_TARGET, 1, 24, (7, 7), 2, 1, (3, 3, 3, 3), (23, 21), 1),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0].name}-c{c[2]}k{c[4][0]}{c[4][1]}s{c[5]}"
                                             for c in CASES])
def test_folded_conv_kernel_equals_reference(case, rng):
    """Strided, dilated, asymmetrically padded, batch 2, non-square: bit-exact, and the
    packed input is one column per output column (the kernel's columns in its channels)."""
    rule, target, cin, cout, k, s, d, pads, hw, batch = case
    x_shape, w_shape = (batch, cin, *hw), (cout, cin, *k)
    assert folds_columns(w_shape, GROUPS1, rule.depth)
    attrs = {"strides": [s, s], "padding": list(pads), "dilation": [d, d], "groups": 1,
             "zp_x": 9, "zp_y": -3, "lo": -128, "hi": 127, "out_dtype": "int8"}
    x = rng.integers(0, 256, x_shape).astype(np.uint8)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    ops = [x, w, bias, rng.integers(2**30, 2**31 - 1, cout).astype(np.int32),
           np.full(cout, -12, np.int32)]
    want = ref_conv2d(*ops, attrs)
    assert 0.2 < np.mean((want > -128) & (want < 127))  # the clamp does not hide the sums
    wp, folded_bias = rule.pack_operands(w, bias, attrs)
    func = rule.build("conv2d", x_shape, "uint8", w_shape, attrs)
    sch = tvm.s_tir.Schedule(func)
    packed = sch.get(sch.get_sblock("x_packed")).writes[0].source
    assert int(packed.shape[3]) == want.shape[3]
    # the reference reads the folded kernel's operands back to the layer's
    kernel_attrs = json.loads(str(func.attrs["qcompiler.attrs"]))
    assert kernel_attrs["columns_folded"] is True
    np.testing.assert_array_equal(ref_conv2d(x, wp, folded_bias, *ops[3:], kernel_attrs), want)
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         tvm.target.Target(target))
    requires_cpu_for(target)
    out = tvm.runtime.tensor(np.zeros(want.shape, np.int8))
    lib["main"](*[tvm.runtime.tensor(a) for a in (x, wp, folded_bias, *ops[3:])], out)
    np.testing.assert_array_equal(out.numpy(), want)
