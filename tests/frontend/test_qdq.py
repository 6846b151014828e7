"""QDQ (fake-quant) models compile with the scales, zero points and weights they carry.

Bit-exact against our reference always. Against ONNX Runtime on the same QDQ model the outputs
differ by at most 1 LSB on >= 99 % of elements: ORT requantizes in float (`acc * (s_x s_w /
s_y)`, rounded half to even) where we use the Q31 fixed-point multiply (rounded half up), and
ORT keeps a fused conv+ReLU as two roundings where we have one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, check_against_reference, make_model, save_model
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from support.qdq import compile_qdq, kernel_weights

from qcompiler.errors import QCompileError

FIXTURE = ROOT / "tests" / "fixtures" / "qdq" / "conv_add_gemm_qdq_per_channel.onnx"
LSB_BOUND, SHARE_WITHIN = 1, 0.99


def float_model(rng: np.random.Generator) -> onnx.ModelProto:
    """conv -> relu -> conv -> add (residual) -> relu -> maxpool -> global pool -> gemm."""
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
             "w2": rng.standard_normal((8, 8, 3, 3)) * 0.2, "b2": rng.standard_normal(8) * 0.1,
             "wg": rng.standard_normal((10, 8)) * 0.3, "bg": rng.standard_normal(10) * 0.1}
    pads = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **pads),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **pads),
             helper.make_node("Add", ["c2", "r1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["gp"]),
             helper.make_node("Flatten", ["gp"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    return make_model(nodes, {"x": ("N", 3, 8, 8)}, {"y": None}, inits)


class _Reader(CalibrationDataReader):
    def __init__(self, data: np.ndarray) -> None:
        self.items = iter([{"x": data[i:i + 1]} for i in range(len(data))])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def ort_qdq(model: onnx.ModelProto, tmp: Path, per_channel: bool,
            activations: QuantType = QuantType.QUInt8) -> onnx.ModelProto:
    """ONNX Runtime's static QDQ quantization of `model` on 16 random images."""
    data = np.random.default_rng(7).standard_normal((16, 3, 8, 8)).astype(np.float32)
    src, dst = save_model(model, tmp, "float.onnx"), tmp / "qdq.onnx"
    quantize_static(str(src), str(dst), _Reader(data), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=activations,
                    weight_type=QuantType.QInt8)
    return onnx.load(str(dst))


def lsb_differences(model: onnx.ModelProto, lib, inputs: list[np.ndarray]) -> np.ndarray:
    """|ours - ORT| in units of the output scale, over all elements of all inputs.

    ORT runs the QDQ graph as written (dequantize, float op, quantize), not its fused integer
    kernels: on CPUs without VNNI those multiply u8 x s8 with `vpmaddubsw`, whose int16 pair
    sums saturate (up to 8 LSB off here on an AVX2 EPYC), so they are no oracle."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    scale = lib.outputs[0]["scale"]
    return np.concatenate([np.abs(lib.run(x)[0] - sess.run(None, {name: x})[0]).ravel() / scale
                           for x in inputs])


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("per_channel,activations", [
    (True, QuantType.QUInt8), (False, QuantType.QUInt8), (True, QuantType.QInt8),
    (True, QuantType.QInt16)], ids=["per_channel-u8", "per_tensor-u8", "per_channel-s8",
                                     "per_channel-s16"])
def test_ort_quantize_static(per_channel, activations, tmp_path, rng):
    qdq = ort_qdq(float_model(rng), tmp_path, per_channel, activations)
    compiled, lib = compile_qdq(qdq, tmp_path)
    inputs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(32)]
    check_against_reference(compiled, lib, [[x] for x in inputs[:4]])
    inits = _inits(qdq)
    # The model's own weight integers and input qparams, not re-derived ones.
    for got, name in zip(kernel_weights(compiled), ("w1", "w2", "wg")):
        np.testing.assert_array_equal(got, inits[f"{name}_quantized"])
    x_qp = compiled.in_qparams[0]
    shift = 128 if activations == QuantType.QInt8 else 0  # int8 is stored as uint8 on x86
    assert (x_qp.scale, x_qp.zero_point - shift) == (float(inits["x_scale"]),
                                                      int(inits["x_zero_point"]))
    assert [x["status"] for x in lib.meta["layers"]] == ["integer"] * 7
    assert x_qp.dtype == ("int16" if activations == QuantType.QInt16 else "uint8")
    d = lsb_differences(qdq, lib, inputs)
    assert np.mean(np.rint(d) <= LSB_BOUND) >= SHARE_WITHIN, np.percentile(d, [50, 99, 100])


def _qdq_graph(nodes: list, inits: dict[str, np.ndarray], opset: int = 13,
               out_shape: tuple | None = None) -> onnx.ModelProto:
    """A checked model with input x (1, 4, 6, 6) and output y; initializers keep their dtype."""
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 10
    onnx.checker.check_model(model)
    return model


def _qdq(t: str, s: str, zp: str, out: str) -> list:
    """QuantizeLinear then DequantizeLinear of tensor t into tensor out."""
    return [helper.make_node("QuantizeLinear", [t, s, zp], [f"{t}_q"]),
            helper.make_node("DequantizeLinear", [f"{t}_q", s, zp], [out])]


def hand_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int8 conv (5, 4, 3, 3) and MatMul (45, 7) weights, deliberately not reaching +-127."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-90, 91, (5, 4, 3, 3)).astype(np.int8),
            rng.integers(-100, 101, (45, 7)).astype(np.int8))


def hand_made(seed: int = 0, zp_dtype=np.int8, fake_quant_weights: bool = False,
              output_qdq: bool = True, scale_dtype=np.float32) -> onnx.ModelProto:
    """x -> Q/DQ -> conv (per-axis weight DQ, axis 0) -> Q/DQ -> flatten -> Q/DQ ->
    MatMul (per-axis weight DQ, axis 1) -> [Q/DQ] -> y. Weight scales are deliberately not
    max|W| / 127, so a re-quantization would change them. `fake_quant_weights`: the weights are
    float behind a QuantizeLinear, scales behind Constant nodes (PyTorch fake-quant export)."""
    wc, wm = hand_weights(seed)
    rng = np.random.default_rng(seed + 1)
    inits = {"s_x": np.array(0.02, scale_dtype), "zp_x": np.array(3, zp_dtype),
             "s_c": np.array(0.05, np.float32), "zp_c": np.array(10, zp_dtype),
             "s_y": np.array(0.1, np.float32), "zp_y": np.array(5, zp_dtype),
             "sw_c": (rng.uniform(0.002, 0.01, 5)).astype(np.float32),
             "sw_m": (rng.uniform(0.002, 0.01, 7)).astype(np.float32),
             "zw_c": np.zeros(5, np.int8), "zw_m": np.zeros(7, np.int8),
             "bc": rng.standard_normal(5).astype(np.float32)}
    nodes = _qdq("x", "s_x", "zp_x", "xd")
    if fake_quant_weights:
        for w, s, q, axis in (("wc_f", "sw_c", wc, 0), ("wm_f", "sw_m", wm, 1)):
            inits[w] = (q.astype(np.float32) * inits[s].reshape((-1, 1, 1, 1)[:q.ndim]
                                                              if axis == 0 else (1, -1)))
            scale = inits.pop(s)
            nodes.append(helper.make_node("Constant", [], [s],
                                          value=numpy_helper.from_array(scale)))
            nodes.append(helper.make_node("QuantizeLinear", [w, s, f"zw_{s[-1]}"], [f"{w}_q"],
                                          axis=axis))
        w_c, w_m = "wc_f_q", "wm_f_q"
    else:
        inits["wc"], inits["wm"] = wc, wm
        w_c, w_m = "wc", "wm"
    nodes += [helper.make_node("DequantizeLinear", [w_c, "sw_c", "zw_c"], ["wcd"], axis=0),
              helper.make_node("DequantizeLinear", [w_m, "sw_m", "zw_m"], ["wmd"], axis=1),
              helper.make_node("Conv", ["xd", "wcd", "bc"], ["c"], kernel_shape=[3, 3],
                               pads=[1, 1, 1, 1], strides=[2, 2]),  # (1, 5, 3, 3)
              *_qdq("c", "s_c", "zp_c", "cd"),
              helper.make_node("Flatten", ["cd"], ["f"]),
              *_qdq("f", "s_c", "zp_c", "fd"),
              helper.make_node("MatMul", ["fd", "wmd"], ["m" if output_qdq else "y"])]
    if output_qdq:
        nodes += _qdq("m", "s_y", "zp_y", "y")
    return _qdq_graph(nodes, inits, 19 if scale_dtype != np.float32 else 13, [1, 7])


def _conv_bn_qdq(rng: np.random.Generator, tmp: Path) -> onnx.ModelProto:
    """ORT without pre-processing keeps BN, with Q/DQ between conv and BN."""
    inits = {"w": rng.standard_normal((6, 3, 3, 3)) * 0.3, "g": rng.uniform(0.5, 2, 6),
             "b": rng.standard_normal(6) * 0.1, "mu": rng.standard_normal(6) * 0.1,
             "var": rng.uniform(0.5, 2, 6)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "mu", "var"], ["y"])]
    qdq = ort_qdq(make_model(nodes, {"x": (1, 3, 8, 8)}, {"y": None}, inits), tmp, True)
    assert "BatchNormalization" in {n.op_type for n in qdq.graph.node}
    return qdq


def test_batch_norm_after_qdq_stays_a_layer(tmp_path, rng):
    """The BN becomes a depthwise 1x1 conv of its own, so the conv keeps the model's weights
    and the rounding between the two happens as in the model."""
    qdq = _conv_bn_qdq(rng, tmp_path)
    compiled, lib = compile_qdq(qdq, tmp_path)
    inputs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(16)]
    check_against_reference(compiled, lib, [[x] for x in inputs[:2]])
    assert [(x["op"], x["detail"]) for x in lib.meta["layers"]] == [("conv2d", "")] * 2
    np.testing.assert_array_equal(kernel_weights(compiled)[0], _inits(qdq)["w_quantized"])
    d = lsb_differences(qdq, lib, inputs)
    assert np.mean(np.rint(d) <= LSB_BOUND) >= SHARE_WITHIN, np.percentile(d, [50, 99, 100])


def test_batch_norm_right_after_conv_is_folded(tmp_path, rng):
    """Without Q/DQ between conv and BN, BN folds into the conv as for a float model: the
    conv's weights change, are re-quantized, and the summary says so."""
    qdq = _conv_bn_qdq(rng, tmp_path)
    drop = {"c_QuantizeLinear_Output", "c_DequantizeLinear_Output"}
    nodes = [n for n in qdq.graph.node if not set(n.output) & drop]
    for n in nodes:
        n.input[:] = ["c" if i == "c_DequantizeLinear_Output" else i for i in n.input]
    del qdq.graph.node[:]
    qdq.graph.node.extend(nodes)
    compiled, lib = compile_qdq(qdq, tmp_path)
    check_against_reference(compiled, lib, [[rng.standard_normal((1, 3, 8, 8))
                                             .astype(np.float32)]])
    [layer] = lib.meta["layers"]
    assert layer["detail"].startswith("weights re-quantized")


@pytest.mark.parametrize("fake_quant", [False, True], ids=["int8-weights", "fake-quant"])
@pytest.mark.parametrize("zp_dtype", [np.int8, np.uint8], ids=["s8", "u8"])
def test_hand_made_per_axis(fake_quant, zp_dtype, tmp_path, rng):
    model = hand_made(0, zp_dtype, fake_quant)
    compiled, lib = compile_qdq(model, tmp_path)
    inputs = [rng.standard_normal((1, 4, 6, 6)).astype(np.float32) for _ in range(16)]
    check_against_reference(compiled, lib, [[x] for x in inputs[:3]])
    wc, wm = hand_weights(0)
    w_conv, w_mm = kernel_weights(compiled)
    np.testing.assert_array_equal(w_conv, wc)
    np.testing.assert_array_equal(w_mm, wm.T)  # the kernel stores (out, in)
    assert lib.outputs[0]["scale"] == pytest.approx(0.1)
    d = lsb_differences(model, lib, inputs)
    assert np.mean(np.rint(d) <= LSB_BOUND) >= SHARE_WITHIN, np.percentile(d, [50, 99, 100])


def test_missing_qdq_needs_calibration(tmp_path):
    model = hand_made(output_qdq=False)
    with pytest.raises(QCompileError, match=r"^tensor y: the model gives no scale and zero "
                                            r"point .* give --calib to calibrate it$"):
        compile_qdq(model, tmp_path)
    calib = {"x": np.random.default_rng(1).standard_normal((8, 4, 6, 6)).astype(np.float32)}
    compiled, lib = compile_qdq(model, tmp_path, calib)  # the output scale is calibrated
    check_against_reference(compiled, lib, [[calib["x"][:1]]])
    assert lib.inputs[0]["scale"] == pytest.approx(0.02)  # the model's, not calibrated


def test_float_model_needs_calibration(tmp_path, rng):
    with pytest.raises(QCompileError, match=r"^the model is float .*\(--calib\)$"):
        compile_qdq(float_model(rng), tmp_path)


def _error(model: onnx.ModelProto, tmp: Path) -> str:
    with pytest.raises(QCompileError) as info:
        compile_qdq(model, tmp)
    return str(info.value)


def test_float16_scale_is_refused(tmp_path):
    msg = _error(hand_made(scale_dtype=np.float16), tmp_path)
    assert msg == ("QuantizeLinear QuantizeLinear_0: scale s_x is float16; qcompiler takes float32 scales")


def test_uint16_activation_is_refused(tmp_path):
    inits = {"s": np.array(0.01, np.float32), "zp": np.array(0, np.uint16)}
    model = _qdq_graph([*_qdq("x", "s", "zp", "y")], inits, opset=21, out_shape=[1, 4, 6, 6])
    assert _error(model, tmp_path) == ("QuantizeLinear QuantizeLinear_0: zero point is uint16; qcompiler "
                                       "takes uint8, int8 or int16 activations")


def test_asymmetric_weight_is_refused(tmp_path):
    model = hand_made()
    for init in model.graph.initializer:
        if init.name == "zw_c":
            init.CopyFrom(numpy_helper.from_array(np.full(5, 2, np.int8), "zw_c"))
    assert _error(model, tmp_path) == ("DequantizeLinear DequantizeLinear_2: weight wc has a nonzero zero "
                                       "point; qcompiler takes symmetric weights (zero point 0)")


def test_cli_compiles_fixture_without_calib(tmp_path):
    """The committed fixture: `ort_qdq(float_model(default_rng(0)), per_channel=True)`."""
    from qcompiler.cli import main

    assert main([str(FIXTURE), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "libconv_add_gemm_qdq_per_channel.a").exists()


def test_cli_float_model_without_calib(tmp_path, rng, capsys):
    from qcompiler.cli import main

    path = save_model(float_model(rng), tmp_path)
    assert main([str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qcompile: error: the model is float")


def se_block_model(rng: np.random.Generator) -> onnx.ModelProto:
    """conv -> hard-swish written out (`c * relu(c + 3) * (1/6)`) -> squeeze-excitation (GAP,
    1x1 conv, ReLU, 1x1 conv, HardSigmoid, gate Mul) -> Mul by a per-channel constant -> GAP
    -> Gemm: the constant operands of Add/Mul that ORT quantizes like activations (uint8)."""
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
             "wr": rng.standard_normal((4, 8, 1, 1)) * 0.3, "br": rng.standard_normal(4) * 0.1,
             "we": rng.standard_normal((8, 4, 1, 1)) * 0.3, "be": rng.standard_normal(8) * 0.1,
             "three": np.array(3.0), "sixth": np.array(1 / 6),
             "ch": rng.uniform(0.5, 1.5, (1, 8, 1, 1)),
             "wg": rng.standard_normal((10, 8)) * 0.3, "bg": rng.standard_normal(10) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[3, 3],
                              pads=[1] * 4),
             helper.make_node("Add", ["c", "three"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["h1"]),
             helper.make_node("Mul", ["h1", "sixth"], ["h2"]),
             helper.make_node("Mul", ["c", "h2"], ["hs"]),
             helper.make_node("GlobalAveragePool", ["hs"], ["g"]),
             helper.make_node("Conv", ["g", "wr", "br"], ["r"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["r"], ["rr"]),
             helper.make_node("Conv", ["rr", "we", "be"], ["e"], kernel_shape=[1, 1]),
             helper.make_node("HardSigmoid", ["e"], ["gate"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["hs", "gate"], ["se"]),
             helper.make_node("Mul", ["se", "ch"], ["sc"]),
             helper.make_node("GlobalAveragePool", ["sc"], ["gp"]),
             helper.make_node("Flatten", ["gp"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    return make_model(nodes, {"x": ("N", 3, 8, 8)}, {"y": None}, inits)


@pytest.mark.parametrize("activations", [QuantType.QUInt8, QuantType.QInt8], ids=["u8", "s8"])
def test_ort_qdq_with_quantized_constant_operands(activations, tmp_path, rng):
    """ORT (per-channel QDQ) writes the constants of Add/Mul like activations (uint8, or
    int8 with a zero point) behind a DequantizeLinear: each is its float value, not a weight,
    and the graph compiles integer end to end,
    bit-exact against the reference, its conv and Gemm weights the model's own integers, and
    within 1 LSB of ORT's QDQ graph (the hard-swish table keeps the saturation of the tensors
    ORT quantizes inside it: without, up to 9 LSB off wherever `c + 3 < 0`)."""
    qdq = ort_qdq(se_block_model(rng), tmp_path, per_channel=True, activations=activations)
    inits = _inits(qdq)
    dtype = np.uint8 if activations == QuantType.QUInt8 else np.int8
    constant_ops = {n.op_type for n in qdq.graph.node for d in qdq.graph.node
                    if d.op_type == "DequantizeLinear" and d.output[0] in n.input
                    and n.op_type not in ("Conv", "Gemm")
                    and inits.get(d.input[0], np.zeros(0, np.float32)).dtype == dtype}
    assert constant_ops == {"Add", "Mul"}  # the pattern this test is about
    if activations == QuantType.QInt8:  # (a 4-D int8 constant: once taken for a weight)
        assert inits["ch_quantized"].ndim == 4 and inits["ch_zero_point"] != 0
    compiled, lib = compile_qdq(qdq, tmp_path)
    inputs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(32)]
    check_against_reference(compiled, lib, [[x] for x in inputs[:4]])
    assert all(x["status"] == "integer" for x in lib.meta["layers"])
    for got, name in zip(kernel_weights(compiled), ("w1", "wr", "we", "wg")):
        np.testing.assert_array_equal(got, inits[f"{name}_quantized"])
    d = lsb_differences(qdq, lib, inputs)
    assert np.mean(np.rint(d) <= LSB_BOUND) >= SHARE_WITHIN, np.percentile(d, [50, 99, 100])


def test_quantized_tensors_inside_a_chain_keep_their_rounding(tmp_path, rng):
    """Stripped, ORT's SE-block model rounds (quantize-dequantize as float ops) the tensors
    inside the hard-swish chain, `c + 3` (ORT dropped its ReLU: the quantization clamps at
    0) and `/ 6`; not the gate, which a Mul with another tensor reads (no table skips it)."""
    from qcompiler.frontend.qdq_import import strip_qdq

    qdq = ort_qdq(se_block_model(rng), tmp_path, per_channel=True)
    assert "Relu" not in {n.op_type for n in qdq.graph.node}  # why the saturation matters
    stripped = strip_qdq(qdq)
    rounded = {n.input[0] for n in stripped.model.graph.node if n.op_type == "Div"
               and n.input[1].endswith("__scale")}
    assert rounded == {"h1", "h2"}
    assert stripped.activations["h1__rounded"] == stripped.activations["h1"]


def test_summed_branches_keep_their_own_weights(tmp_path, rng):
    """ORT's QDQ of convs of one input that are summed (a RepVGG block): each branch keeps
    the model's int8 weights and its output qparams; nothing merges them (a float model's
    branches would become one conv, `merge_parallel_convs`)."""
    inits = {"w3": (rng.standard_normal((3, 3, 3, 3)) * 0.3).astype(np.float32),
             "w1": (rng.standard_normal((3, 3, 1, 1)) * 0.3).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w3"], ["a"], pads=[1] * 4),
             helper.make_node("Conv", ["x", "w1"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    qdq = ort_qdq(make_model(nodes, {"x": (1, 3, 8, 8)}, {"y": None}, inits), tmp_path, True)
    compiled, lib = compile_qdq(qdq, tmp_path)
    check_against_reference(compiled, lib, [[rng.standard_normal((1, 3, 8, 8))
                                             .astype(np.float32)] for _ in range(2)])
    assert [x["op"] for x in lib.meta["layers"]] == ["conv2d", "conv2d", "add"]
    given = _inits(qdq)
    got = sorted(kernel_weights(compiled), key=np.size)  # (in whichever order they run)
    for w, name in zip(got, ("w1", "w3"), strict=True):
        np.testing.assert_array_equal(w, given[f"{name}_quantized"])
