"""normalize_onnx: constants evaluated, Sum as Adds, inference Dropout as Identity, unread
inputs dropped, zero Pads folded into their Conv, Upsample-9/Resize-10 as opset 11's Resize;
the model computes the same function (checked with onnx.reference or ONNX Runtime)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from qcompiler.frontend.normalize import normalize_onnx, resize_at_opset_11


def _model(ir_version: int = 3) -> onnx.ModelProto:
    shape = numpy_helper.from_array(np.array([1, 3, 4, 4], np.int64), "w_shape")
    nodes = [
        helper.make_node("ConstantOfShape", ["w_shape"], ["w"],
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Unsqueeze", ["b0"], ["b"], axes=[1, 2]),
        helper.make_node("Mul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Dropout", ["a"], ["d"]),
        helper.make_node("Sum", ["d", "x", "m"], ["y"]),
    ]
    b0 = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "b0")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])]
    if ir_version < 4:  # IR 3 lists initializers among the inputs
        inputs += [helper.make_tensor_value_info("w_shape", TensorProto.INT64, [4]),
                   helper.make_tensor_value_info("b0", TensorProto.FLOAT, [3])]
    graph = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [shape, b0])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = ir_version
    return model


def test_normalized_model_is_the_same_function():
    before = _model()
    after = normalize_onnx(before)
    onnx.checker.check_model(after)
    ops = [n.op_type for n in after.graph.node]
    assert ops == ["Mul", "Add", "Identity", "Add", "Add"]
    inits = {i.name for i in after.graph.initializer}
    assert {"w", "b"} <= inits and not {"w_shape", "b0"} & inits
    assert [i.name for i in after.graph.input] == ["x"]
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    want = ReferenceEvaluator(before).run(None, {"x": x})[0]
    got = ReferenceEvaluator(after).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dropout_with_a_used_mask_is_kept():
    model = _model(ir_version=8)
    drop = next(n for n in model.graph.node if n.op_type == "Dropout")
    drop.output.append("mask")
    model.graph.output.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, None))
    assert "Dropout" in [n.op_type for n in normalize_onnx(model).graph.node]


def test_inputs_no_node_reads_are_dropped():
    model = _model(ir_version=4)
    model.graph.input.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1, 3]))
    after = normalize_onnx(model)
    assert [i.name for i in after.graph.input] == ["x"]
    onnx.checker.check_model(after)


def _pad_conv(value: float = 0.0, extra_reader: bool = False) -> onnx.ModelProto:
    """TensorFlow's 'SAME' on a stride-2 conv as tf2onnx writes it: Pad (bottom/right one
    more) then a Conv without padding."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(value, np.float32), "value"),
             numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["p"]),
             helper.make_node("Conv", ["p", "w"], ["y"], group=4, strides=[2, 2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["p"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4, 9, 9]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_zero_pad_read_by_a_conv_becomes_its_padding():
    before = _pad_conv()
    after = normalize_onnx(before)
    assert [n.op_type for n in after.graph.node] == ["Conv"]
    conv = after.graph.node[0]
    assert next(list(a.ints) for a in conv.attribute if a.name == "pads") == [0, 0, 1, 1]
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ReferenceEvaluator(after).run(None, {"x": x})[0],
                               ReferenceEvaluator(before).run(None, {"x": x})[0], rtol=1e-6)


def test_a_pad_of_another_value_or_with_other_readers_stays():
    for model in (_pad_conv(value=1.0), _pad_conv(extra_reader=True)):
        assert "Pad" in [n.op_type for n in normalize_onnx(model).graph.node]


@pytest.mark.parametrize("op,opset", [("Upsample", 9), ("Resize", 10)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scale", [2.0, 1.5])
def test_old_upsampling_becomes_opset_11_resize_with_the_same_values(op, opset, mode, scale):
    """Upsample-9 and Resize-10 (asymmetric, nearest = floor) as opset 11's Resize: ONNX
    Runtime computes the same tensor from both files."""
    import onnxruntime as ort

    scales = numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales")
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "scales"], ["y"], mode=mode)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scales])
    before = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    before.ir_version = 7
    after = resize_at_opset_11(before)
    assert after.opset_import[0].version == 11
    assert [n.op_type for n in normalize_onnx(before).graph.node] == ["Resize"]
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 6)).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(None, {"x": x})[0] for m in (before, after)]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-6, atol=1e-6)
