"""Extreme numerics: degenerate ranges, zero and denormal weights, multipliers far from 1, a
single calibration sample, and accumulators that could overflow (refused, never wrapped)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import compile_and_compare, make_model, save_calib, save_model
from onnx import helper

from qcompiler.errors import QCompileError
from qcompiler.relax_access import bindings


def _conv_model(w: np.ndarray, b: np.ndarray, hw: int = 5):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(w.shape[2:]),
                            pads=[w.shape[2] // 2] * 4)
    return make_model([node], {"x": ("N", w.shape[1], hw, hw)}, {"y": None}, {"w": w, "b": b})


def _float_out(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _lsb(lib):
    return lib.outputs[0]["scale"]


def test_all_zero_activation(tmp_path, rng):
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    model = _conv_model(w, np.zeros(3, np.float32))
    calib = {"x": np.zeros((4, 2, 5, 5), np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert lib.inputs[0]["scale"] == 1.0 and lib.outputs[0]["scale"] == 1.0
    zero = np.zeros((1, 2, 5, 5), np.float32)
    np.testing.assert_array_equal(lib.run(zero)[0], np.zeros((1, 3, 5, 5), np.float32))


def test_zero_weight_channel_keeps_its_bias(tmp_path, rng):
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w[1] = 0.0
    b = np.array([0.1, 0.7, -0.2], np.float32)
    model = _conv_model(w, b)
    calib = {"x": rng.standard_normal((8, 2, 5, 5)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    got = lib.run(x)[0]
    assert np.abs(got[0, 1] - 0.7).max() <= _lsb(lib)


def test_denormal_weights_with_bias(tmp_path, rng):
    w = (rng.standard_normal((2, 2, 1, 1)) * 1e-40).astype(np.float32)
    assert 0 < np.abs(w).max() < np.finfo(np.float32).tiny  # really denormal
    b = np.array([1.5, -2.5], np.float32)
    model = _conv_model(w, b)
    calib = {"x": rng.standard_normal((8, 2, 5, 5)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(lib.run(x)[0], _float_out(model, x), atol=_lsb(lib))


def test_huge_and_tiny_ranges(tmp_path, rng):
    # Channel 0 has a bias of 1e9, so the output scale is ~4e6 and channel 1's multiplier
    # s_x s_w / s_y is below 2^-31: it requantizes to exactly the zero point.
    w = (rng.standard_normal((2, 2, 3, 3)) * 1e-3).astype(np.float32)
    b = np.array([1e9, 0.0], np.float32)
    model = _conv_model(w, b)
    calib = {"x": (rng.standard_normal((8, 2, 5, 5)) * 1e-3).astype(np.float32)}
    compiled, lib = compile_and_compare(model, tmp_path, calib)
    from qcompiler.relax_access import const_array, op_name

    call = next(b.value for b in bindings(compiled.quantized["main_int"]) if op_name(b.value) == "relax.call_tir"
                and str(compiled.quantized[b.value.args[0]].attrs["qcompiler.op"]) == "conv2d")
    m0 = const_array(call.args[1].fields[3])
    assert m0[1] == 0  # multiplier < 2^-31 -> exactly zero
    x = (rng.standard_normal((1, 2, 5, 5)) * 1e-3).astype(np.float32)
    np.testing.assert_allclose(lib.run(x)[0], _float_out(model, x), atol=_lsb(lib))


def test_multiplier_far_above_one_saturates_without_wrapping(tmp_path, rng):
    # a and b nearly cancel on the calibration data (x2 = x there): their scales are ~1e4
    # times the sum's, so the add's multipliers are far above 1, and the checks' independent
    # x and x2 must saturate, not wrap around. (Two inputs: two convs of one input that are
    # summed merge into one conv.)
    w = rng.standard_normal((3, 3, 1, 1)).astype(np.float32) * 100
    w2 = -w + rng.standard_normal(w.shape).astype(np.float32) * 1e-2
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["x2", "w2"], ["b"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    model = make_model(nodes, {"x": (1, 3, 4, 4), "x2": (1, 3, 4, 4)}, {"y": None},
                       {"w": w, "w2": w2})
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    calib = {"x": x, "x2": x}
    _, lib = compile_and_compare(model, tmp_path, calib, n_checks=5)
    assert [x["op"] for x in lib.meta["layers"]] == ["conv2d", "conv2d", "add"]


@pytest.mark.parametrize("m", [3.0, 1e4, 2.0**29, 2.0**40])
def test_add_kernel_with_large_multipliers_saturates_exactly(m, rng):
    """The add kernel against the ideal `clamp(zp + round((a-za)*m + (b-zb)*m))`, over the
    whole uint8 range, compiled by TVM and in the reference."""
    import tvm
    from tvm import relax

    from qcompiler import kernels, reference
    from qcompiler.lowering.values import signed_bits as _signed_bits
    from qcompiler.numerics.requantize import quantize_multiplier

    k = int(min(16, max(0, 30 - _signed_bits("uint8") - int(np.ceil(np.log2(m))))))
    m0, sh = quantize_multiplier(m * 2.0**k)
    attrs = {"zp_a": 128, "zp_b": 100, "zp_y": 128, "m0_a": m0, "shift_a": sh, "m0_b": m0,
             "shift_b": sh, "k": k, "lo": 0, "hi": 255, "out_dtype": "uint8"}
    a = np.repeat(np.arange(256, dtype=np.uint8), 256)
    b = np.tile(np.arange(256, dtype=np.uint8), 256)
    ref = reference.add(a, b, attrs)
    ideal = np.clip(128 + np.rint(((a.astype(np.float64) - 128) + (b - 100.0)) * m), 0, 255)
    off = np.abs(ref.astype(np.int64) - ideal)
    assert off.max() <= 1 and (off == 0).mean() > 0.99
    f = kernels.add(a.shape, "uint8", "uint8", attrs).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": f}), tvm.target.Target({"kind": "llvm"}))
    out = tvm.runtime.tensor(np.zeros_like(a))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    np.testing.assert_array_equal(out.numpy(), ref)
    del relax


def test_single_calibration_sample_and_constant_input(tmp_path, rng):
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    model = _conv_model(w, np.zeros(4, np.float32))
    calib = {"x": np.full((1, 1, 5, 5), 3.0, np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    x = np.full((1, 1, 5, 5), 3.0, np.float32)
    # One LSB of output rounding plus the int8 weights' error over nine taps.
    np.testing.assert_allclose(lib.run(x)[0], _float_out(model, x), atol=2 * _lsb(lib))


def test_accumulator_that_could_overflow_is_refused(tmp_path, rng):
    k = 140_000  # 140000 * 128 * 127 > 2^31 (zero point mid-range)
    model = make_model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], {"x": (1, k)},
                       {"y": None}, {"w": rng.standard_normal((2, k)).astype(np.float32)})
    from qcompiler.api import compile_only

    mpath = save_model(model, tmp_path)
    cpath = save_calib({"x": rng.uniform(-1, 1, (2, k)).astype(np.float32)}, tmp_path)
    with pytest.raises(QCompileError, match=r"layer Gemm_0 \(Gemm\): the int32 "
                                            r"accumulator could overflow \(140000 taps"):
        compile_only(mpath, cpath, tmp_path / "out")
    assert not (tmp_path / "out").exists()
