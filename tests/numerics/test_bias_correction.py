"""Bias correction: b'[o] = b[o] - sum (s_w W_q - W)[o, j, taps] E[x_j], from calibration means."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from conftest import ROOT, compile_and_compare, make_model
from onnx import helper
from qcompiler.targets.x86 import x86_target

from qcompiler.config import CompileConfig
from qcompiler.errors import QCompileError
from qcompiler.frontend.onnx_import import graph_inputs
from qcompiler.lowering.weights import bias_correction
from qcompiler.numerics.calibrate import channel_means
from qcompiler.numerics.qparams import symmetric_weight_scales
from qcompiler.numerics.weight_layout import canonical
from qcompiler.pipeline import compile_model, float_graph
from qcompiler.relax_access import bindings, const_array, op_name


def _conv_model(w: np.ndarray, b: np.ndarray, hw: int, groups: int = 1, relu: bool = False):
    cin = w.shape[1] * groups
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if relu else "y"], group=groups,
                              kernel_shape=list(w.shape[2:]))]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    return make_model(nodes, {"x": (4, cin, hw, hw)}, {"y": None}, {"w": w, "b": b})


def _conv_constants(compiled) -> tuple[np.ndarray, np.ndarray]:
    """(int8 OIHW weights, int32 bias) of the one conv kernel (portable; 4-bit weights read
    back from their nibbles)."""
    for b in bindings(compiled.quantized["main_int"]):
        if op_name(b.value) == "relax.call_tir" and "conv2d" in b.value.args[0].name_hint:
            args = b.value.args[1].fields
            attrs = json.loads(str(compiled.quantized[b.value.args[0]].attrs[
                "qcompiler.attrs"]))
            return canonical(const_array(args[1]), attrs), const_array(args[2])
    raise AssertionError("no conv2d kernel")


def test_channel_means_are_the_per_channel_means(rng):
    model = _conv_model(rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3), 6)
    mod = float_graph(model, graph_inputs(model, None))
    x = rng.standard_normal((8, 2, 6, 6)).astype(np.float32) + np.float32([[[[2.0]], [[-1.0]]]])
    in_means, _ = channel_means(mod, {"x": x}, tvm.target.Target(x86_target().tvm_target),
                                progress=False)
    np.testing.assert_allclose(in_means[0], x.astype(np.float64).mean(axis=(0, 2, 3)),
                               rtol=1e-12)


@pytest.mark.parametrize("groups", [1, 2])
def test_corrected_bias_differs_by_the_expected_error(groups, rng):
    """A constant input per channel: E[x_j] = m_j exactly, so the int32 biases are known."""
    w = rng.standard_normal((4, 6 // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    m = np.array([0.5, 2.0, -1.0, 3.0, 1.5, -0.25], np.float32)
    x = np.broadcast_to(m.reshape(1, 6, 1, 1), (8, 6, 5, 5)).copy()
    model = _conv_model(w, b, 5, groups)
    plain, corrected = (compile_model(model, {"x": x}, CompileConfig(
        bias_correction=on, weight_bits=4, schedules=False), progress=False)
        for on in (False, True))
    w_q, b_q0 = _conv_constants(plain)
    w_q1, b_q1 = _conv_constants(corrected)
    np.testing.assert_array_equal(w_q, w_q1)  # only the bias changes
    s_w = symmetric_weight_scales(np.abs(w).max(axis=(1, 2, 3)), 4).astype(np.float64)
    s_x = np.float64(plain.in_qparams[0].scale)
    err = np.zeros(4)
    for o in range(4):  # the definition, term by term
        g = o // (4 // groups)
        for j in range(w.shape[1]):
            deq = w_q[o, j].astype(np.float64) * s_w[o]
            err[o] += (deq - w[o, j].astype(np.float64)).sum() * m[g * w.shape[1] + j]
    np.testing.assert_array_equal(b_q0, np.rint(b / (s_x * s_w)).astype(np.int32))
    want = np.rint((b.astype(np.float64) - err).astype(np.float32) / (s_x * s_w))
    np.testing.assert_array_equal(b_q1, want.astype(np.int32))
    assert np.any(b_q1 != b_q0)


def test_bias_correction_helper_on_dense():
    """Dense weights are (out, in): E[x] is one mean per input feature, no taps."""
    w = np.array([[0.30, -0.20], [0.11, 0.50]], np.float32)
    w_q = np.array([[3, -2], [1, 5]], np.int8)
    s_w = np.array([0.1, 0.1], np.float32)
    got = bias_correction(np.zeros(2, np.float32), w, w_q, s_w, np.array([2.0, 4.0]), 1)
    deq = w_q * np.float64(np.float32(0.1))
    np.testing.assert_allclose(got, -((deq - w.astype(np.float64)) @ [2.0, 4.0]), rtol=1e-6)


def test_compiled_equals_reference_with_correction(tmp_path, rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    model = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)],
        {"x": (2, 3, 9, 9)}, {"y": None},
        {"w": w, "b": rng.standard_normal(8), "fw": rng.standard_normal((5, 8)),
         "fb": rng.standard_normal(5)})
    calib = {"x": rng.uniform(0, 2, (8, 3, 9, 9)).astype(np.float32)}
    compiled, lib = compile_and_compare(model, tmp_path, calib, bias_correction=True,
                                        weight_bits=4)
    notes = [x["detail"] for x in lib.meta["layers"] if x["op"] in ("conv2d", "dense")]
    assert notes == ["bias corrected", "bias corrected"]


def test_correction_shrinks_the_mean_output_error(tmp_path, rng):
    """4-bit weights on inputs with a large mean: rounding shifts every output channel's mean;
    the corrected bias takes that shift out (measured on data other than the calibration)."""
    w = (rng.standard_normal((16, 24, 1, 1)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(16) * 0.1).astype(np.float32)
    model = _conv_model(w, b, 6)
    shift = np.linspace(0.5, 3.0, 24, dtype=np.float32).reshape(1, 24, 1, 1)
    calib = {"x": rng.uniform(0, 1, (64, 24, 6, 6)).astype(np.float32) + shift}
    test = rng.uniform(0, 1, (64, 24, 6, 6)).astype(np.float32) + shift
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    errors = []
    for i, on in enumerate((False, True)):
        (tmp_path / str(i)).mkdir()
        _, lib = compile_and_compare(model, tmp_path / str(i), calib, bias_correction=on,
                                     weight_bits=4)
        diffs = [lib.run(test[k:k + 4])[0] - sess.run(None, {"x": test[k:k + 4]})[0]
                 for k in range(0, len(test), 4)]
        errors.append(np.abs(np.concatenate(diffs).mean(axis=(0, 2, 3))).mean())
    without, with_ = errors
    assert with_ < 0.5 * without, (without, with_)


@pytest.mark.parametrize("option", [{"equalize": True}, {"bias_correction": True},
                                    {"adaround": 10}])
def test_qdq_model_refuses_weight_options(option):
    model = onnx.load(str(ROOT / "tests" / "fixtures" / "qdq" /
                          "conv_add_gemm_qdq_per_channel.onnx"))
    with pytest.raises(QCompileError) as info:
        compile_model(model, None, CompileConfig(**option), progress=False)
    assert str(info.value) == ("a QDQ model carries its own quantized weights: leave equalize, "
                               "bias_correction and adaround off")
