"""The NCHW16c layout of x86 VNNI graphs (`passes.plan_layout`, `schedules.blocked`): every
blocked kernel equals the reference on the channel-padded layer bit for bit (padded channels
included), and whole graphs stay bit-exact with the layout changed only at their edges."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from conftest import make_model
from onnx import helper
from tvm import relax

from qcompiler.calibrate import load_calibration
from qcompiler.config import CompileConfig
from qcompiler.emit import build
from qcompiler.onnx_import import graph_inputs
from qcompiler.passes.plan_layout import plan_layout
from qcompiler.pipeline import compile_model
from qcompiler.reference import Reference, kernel_for, to_blocked, unblocked
from qcompiler.reference import conv2d as ref_conv2d
from qcompiler.schedules import blocked
from qcompiler.targets.x86 import _cpu_flags, x86_target
from qcompiler.weight_layout import folded_bias, pack_depthwise

TARGET = tvm.target.Target(x86_target().tvm_target)


@pytest.fixture(autouse=True)
def _vnni():
    if "avx512_vnni" not in _cpu_flags():
        pytest.fail("this test machine is expected to have AVX-512 VNNI (shared/DESIGN.md)")


def _run(func: tvm.tirx.PrimFunc, args: list, out_shape: tuple, dtype=np.uint8) -> np.ndarray:
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), TARGET)
    out = tvm.runtime.tensor(np.zeros(out_shape, dtype))
    lib["main"](*[tvm.runtime.tensor(a) for a in args], out)
    return out.numpy()


def _layer(rng, cout, cin_g, k, channels_out):
    """Weights, bias, m0, shift of a layer, channel-padded to `channels_out` the way
    plan_layout pads them (zero weights and bias, multiplier 0)."""
    w = np.zeros((channels_out, cin_g, k, k), np.int8)
    w[:cout] = rng.integers(-127, 128, (cout, cin_g, k, k))
    bias, m0 = np.zeros(channels_out, np.int32), np.zeros(channels_out, np.int32)
    bias[:cout] = rng.integers(-20000, 20000, cout)
    m0[:cout] = rng.integers(2**30, 2**31 - 1, cout)
    shift = rng.integers(-14, -9, channels_out).astype(np.int32)
    return w, bias, m0, shift


def _attrs(k_stride, pads, dilation, groups, hi=255):
    return {"strides": [k_stride] * 2, "padding": list(pads), "dilation": [dilation] * 2,
            "groups": groups, "zp_x": 121, "zp_y": 90, "lo": 3, "hi": hi,
            "out_dtype": "uint8", "layout": blocked.LAYOUT}


# conv: (cin, cout, size, kernel, stride, pads, batch); ResNet-50 and MobileNetV2 shapes and
# channel counts that are no multiple of 4 or 16 (13, 33, 40), 1x1, 3x3, 7x7, stride 2.
CONV_CASES = [
    (64, 64, 14, 3, 1, (1, 1, 1, 1), 1),
    (64, 256, 14, 1, 1, (0, 0, 0, 0), 1),
    (256, 128, 15, 1, 2, (0, 0, 0, 0), 2),
    (33, 40, 9, 3, 2, (1, 1, 1, 1), 2),
    (13, 24, 11, 7, 2, (3, 3, 3, 3), 1),
    (144, 24, 7, 1, 1, (0, 0, 0, 0), 1),
    (48, 32, 10, 3, 1, (0, 0, 1, 1), 1),  # TF-style asymmetric padding
]


def _check(func, ops, real, cout, hi=255):
    """The kernel against the reference of the blocked graph (padded channels included) and
    against the plain reference of the unpadded layer (`real`: its NCHW output)."""
    attrs = json.loads(str(func.attrs["qcompiler.attrs"]))
    want = kernel_for("conv2d", attrs)(*ops, attrs)
    got = _run(func, ops, want.shape)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(unblocked(got)[:, :cout], real)
    assert np.mean((real > 3) & (real < hi)) > 0.5  # the clamp does not hide the arithmetic
    assert (unblocked(got)[:, cout:] == 90).all()  # a padded channel: the clamp of zp_y


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "c{}o{}hw{}k{}s{}".format(*c[:5]))
def test_blocked_conv_equals_reference(case, rng):
    cin, cout, hw, k, s, pads, batch = case
    c_in, c_out = blocked.padded_channels(cin), blocked.padded_channels(cout)
    w, bias, m0, shift = _layer(rng, cout, cin, k, c_out)
    wp = np.zeros((c_out, c_in, k, k), np.int8)
    wp[:, :cin] = w
    attrs = _attrs(s, pads, 1, 1)
    x4 = rng.integers(0, 256, (batch, cin, hw, hw)).astype(np.uint8)
    x = to_blocked(x4, {"block": 16, "pad": 7})  # a padded input channel: any value
    packed, fb = blocked.BLOCKED_VNNI.pack_operands(wp, bias, attrs)
    func = blocked.BLOCKED_VNNI.build("conv2d", x.shape, "uint8", wp.shape, attrs)
    plain = {k: v for k, v in attrs.items() if k != "layout"}
    real = ref_conv2d(x4, w[:cout], bias[:cout], m0[:cout], shift[:cout], plain)
    _check(func, [x, packed, fb, m0, shift], real, cout)


# depthwise: (channels, size, kernel, stride, dilation, pads, batch, clamp hi), as in
# test_x86_kernels: MobileNetV2's channels (24, 144, 960) and ones that are no multiple of 16;
# 5x5 (two groups of 4 taps); stride 3; dilation 2 (the 32-bit form).
DEPTHWISE_CASES = [
    (24, 56, 3, 1, 1, (1, 1, 1, 1), 1, 255),
    (33, 15, 3, 2, 1, (1, 1, 1, 1), 2, 255),
    (144, 28, 3, 2, 1, (0, 0, 1, 1), 1, 140),
    (960, 7, 3, 1, 1, (1, 1, 1, 1), 2, 140),
    (5, 9, 5, 1, 1, (2, 2, 2, 2), 1, 255),
    (7, 1, 3, 1, 1, (1, 1, 1, 1), 1, 255),
    (6, 13, 3, 3, 1, (1, 1, 1, 1), 1, 255),
    (6, 12, 3, 1, 2, (2, 2, 2, 2), 1, 255),
]


@pytest.mark.parametrize("case", DEPTHWISE_CASES,
                         ids=lambda c: "c{}hw{}k{}s{}d{}".format(*c[:5]))
def test_blocked_depthwise_equals_reference(case, rng):
    c, hw, k, s, d, pads, batch, hi = case
    cp = blocked.padded_channels(c)
    w, bias, m0, shift = _layer(rng, c, 1, k, cp)
    attrs = {**_attrs(s, pads, d, cp, hi)}
    x4 = rng.integers(0, 256, (batch, c, hw, hw)).astype(np.uint8)
    x = to_blocked(x4, {"block": 16, "pad": 121})
    func = blocked.depthwise(x.shape, "uint8", w.shape, attrs)
    plain = {**{k: v for k, v in attrs.items() if k != "layout"}, "groups": c}
    real = ref_conv2d(x4, w[:c], bias[:c], m0[:c], shift[:c], plain)
    ops = [x, pack_depthwise(w, 16), folded_bias(w, bias, 121), m0, shift]
    _check(func, ops, real, c, hi)
