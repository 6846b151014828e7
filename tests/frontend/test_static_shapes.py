"""Exported models with symbolic dims and run-time shape arithmetic (`frontend.static_shapes`):
dims fixed from --input-shape or the calibration data, the shape subgraph folded at import,
the graph integer end to end; every way of giving a wrong shape is a one-line error."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import compile_and_compare, make_model
from onnx import helper

from qcompiler.config import CompileConfig
from qcompiler.errors import QCompileError
from qcompiler.frontend.static_shapes import (fold_shape_arithmetic, resolve_inputs,
                                              with_static_inputs)


def exported_classifier(rng: np.random.Generator, symbolic: bool = True) -> onnx.ModelProto:
    """conv -> relu -> global average pool -> flatten the way torch.onnx.export writes
    `x.view(x.size(0), -1)` (Constant, Shape, Gather, Unsqueeze, Concat, Reshape) -> Gemm."""
    c = helper.make_node
    const = [c("Constant", [], [k], name=k, value=onnx.numpy_helper.from_array(
        np.array(v, np.int64), k)) for k, v in (("zero", 0), ("axes0", [0]), ("minus1", [-1]))]
    nodes = const + [
        c("Conv", ["x", "w", "b"], ["conv"], name="stem/conv", pads=[1, 1, 1, 1]),
        c("Relu", ["conv"], ["relu"], name="stem/relu"),
        c("GlobalAveragePool", ["relu"], ["gap"], name="pool"),
        c("Shape", ["gap"], ["gap_shape"], name="flatten/shape"),
        c("Gather", ["gap_shape", "zero"], ["n"], name="flatten/gather", axis=0),
        c("Unsqueeze", ["n", "axes0"], ["n1"], name="flatten/unsqueeze"),
        c("Concat", ["n1", "minus1"], ["target"], name="flatten/concat", axis=0),
        c("Reshape", ["gap", "target"], ["flat"], name="flatten/reshape"),
        c("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    inits = {"w": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b": rng.standard_normal(8) * 0.1,
             "fc_w": rng.standard_normal((4, 8)) * 0.3, "fc_b": rng.standard_normal(4) * 0.1}
    x_shape = ["N", 3, "H", "W"] if symbolic else [1, 3, 12, 12]
    return make_model(nodes, {"x": x_shape}, {"y": None}, inits)


def test_shape_subgraph_folds_to_constants(rng):
    model = exported_classifier(rng)
    fixed = with_static_inputs(model, resolve_inputs(model, None, {"x": (1, 3, 12, 12)}))
    ops = [n.op_type for n in fold_shape_arithmetic(fixed).graph.node]
    assert ops == ["Conv", "Relu", "GlobalAveragePool", "Reshape", "Gemm"]
    target = {i.name: onnx.numpy_helper.to_array(i) for i in
              fold_shape_arithmetic(fixed).graph.initializer}["target"]
    np.testing.assert_array_equal(target, [1, -1])


def test_a_graph_without_shape_arithmetic_is_returned_as_is():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 2]}, {"y": None})
    assert fold_shape_arithmetic(model) is model


@pytest.mark.parametrize("shapes", [None, {"x": (1, 3, 10, 10)}])
def test_symbolic_dims_from_calibration_or_input_shape_compile_integer(tmp_path, rng, shapes):
    model = exported_classifier(rng)
    hw = 10 if shapes else 12
    calib = {"x": rng.standard_normal((4, 3, hw, hw)).astype(np.float32)}
    options = {"input_shapes": shapes} if shapes else {}
    compiled, lib = compile_and_compare(model, tmp_path, calib, **options)
    assert lib.inputs[0]["shape"] == [1, 3, hw, hw]
    from qcompiler.graph_meta import graph_meta
    layers = graph_meta(compiled.quantized)["layers"]
    assert layers and all(r["status"] == "integer" for r in layers), layers


def test_batch_comes_from_batch_not_from_the_calibration_data(rng):
    model = exported_classifier(rng)
    samples = {"x": np.zeros((7, 3, 9, 11), np.float32)}
    assert resolve_inputs(model, None, None, samples)[0].shape == (1, 3, 9, 11)
    assert resolve_inputs(model, 2, None, samples)[0].shape == (2, 3, 9, 11)
    assert resolve_inputs(model, None, None, None, partial=True)[0].shape == (1, 3, None, None)


@pytest.mark.parametrize("shapes,batch,message", [
    (None, None, r"input x: dimension 2 is symbolic \('H'\) and nothing fixes it: give "
                 r"--input-shape x:1x3x\?x\?"),
    ({"x": (1, 3, 10)}, None, r"input x: --input-shape 1x3x10 has rank 3, the model's input "
                              r"has rank 4 \(\?x3x\?x\?\)"),
    ({"x": (1, 4, 10, 10)}, None, r"input x: --input-shape gives dim 1 = 4, the model fixes "
                                  r"it at 3"),
    ({"img": (1, 3, 8, 8)}, None, r"--input-shape names 'img', which is no input of the "
                                  r"model \(inputs: x\)"),
    ({"x": (2, 3, 8, 8)}, 1, r"input x: --input-shape gives batch 2, --batch 1"),
])
def test_bad_input_shapes_are_one_line_errors(rng, shapes, batch, message):
    with pytest.raises(QCompileError, match=message) as err:
        resolve_inputs(exported_classifier(rng), batch, shapes)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape", [(1, 3, 0, 8), (1, 3, -2, 8), (), (1, 3, 2.5, 8)])
def test_non_positive_dims_are_refused_by_the_config(shape):
    with pytest.raises(QCompileError, match=r"input_shapes\['x'\].*positive whole dims"):
        CompileConfig(input_shapes={"x": shape})


def test_calibration_data_that_contradicts_input_shape_is_refused(tmp_path, rng):
    from qcompiler.api import compile_only
    from qcompiler.errors import CalibrationDataError

    model = exported_classifier(rng)
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(CalibrationDataError, match=r"input 'x' has shape \(2, 3, 16, 16\), "
                                                   r"expected \(N, 3, 10, 10\)"):
        compile_only(tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "out",
                     input_shapes={"x": (1, 3, 10, 10)})
    assert not (tmp_path / "out").exists()


def resize_by_computed_sizes(rng: np.random.Generator) -> onnx.ModelProto:
    """An FPN step as paddle2onnx writes `interpolate(x, size=[2h, 2w])`: Resize with empty
    `roi` and `scales` tensors and `sizes` computed from Shape (Slice, Cast, Mul, Concat)."""
    c = helper.make_node
    const = {"empty": np.zeros(0, np.float32), "s0": np.array([0], np.int64),
             "s2": np.array([2], np.int64), "s4": np.array([4], np.int64),
             "two": np.array([2.0], np.float32)}
    nodes = [c("Constant", [], [k], name=k, value=onnx.numpy_helper.from_array(v, k))
             for k, v in const.items()] + [
        c("Conv", ["x", "w", "b"], ["low"], name="lateral/conv", strides=[2, 2],
          pads=[1, 1, 1, 1]),
        c("Shape", ["low"], ["shape"], name="size/shape"),
        c("Slice", ["shape", "s0", "s2", "s0"], ["nc"], name="size/nc"),
        c("Slice", ["shape", "s2", "s4", "s0"], ["hw"], name="size/hw"),
        c("Cast", ["hw"], ["hw_f"], name="size/cast", to=onnx.TensorProto.FLOAT),
        c("Mul", ["hw_f", "two"], ["hw2_f"], name="size/mul"),
        c("Cast", ["hw2_f"], ["hw2"], name="size/cast_back", to=onnx.TensorProto.INT64),
        c("Concat", ["nc", "hw2"], ["sizes"], name="size/concat", axis=0),
        c("Resize", ["low", "empty", "empty", "sizes"], ["up"], name="up/resize",
          mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        c("Conv", ["x", "w2", "b"], ["skip"], name="skip/conv", pads=[1, 1, 1, 1]),
        c("Add", ["up", "skip"], ["y"], name="fuse/add"),
    ]
    inits = {"w": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b": rng.standard_normal(8) * 0.1,
             "w2": rng.standard_normal((8, 3, 3, 3)) * 0.3}
    return make_model(nodes, {"x": ["N", 3, "H", "W"]}, {"y": None}, inits, opset=11)


def test_resize_with_empty_scales_and_computed_sizes_compiles_integer(tmp_path, rng):
    """The empty `scales` beside `sizes` means "not given" (TVM's importer took it for both
    given and refused the model); the sizes fold from the fixed input shape."""
    calib = {"x": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    compiled, lib = compile_and_compare(resize_by_computed_sizes(rng), tmp_path, calib)
    assert lib.outputs[0]["shape"] == [1, 8, 16, 16]
    from qcompiler.graph_meta import graph_meta
    layers = graph_meta(compiled.quantized)["layers"]
    assert any(r["onnx_op"] == "Resize" for r in layers), layers
    assert all(r["status"] == "integer" for r in layers), layers


def detector_preamble(rng: np.random.Generator) -> onnx.ModelProto:
    """What torchvision's detectors write before the backbone and between its levels: the
    batch split into its one image (`Split` of one part), the image taken by `Gather(x, 0)`,
    and an upsampling whose sizes come from the feature's shape through `ReduceMax`, `Div`,
    `Ceil` and `Cast` (GeneralizedRCNNTransform's scale)."""
    c = helper.make_node

    def const(name: str, value: object, dtype: object = np.int64) -> onnx.NodeProto:
        return c("Constant", [], [name], name=name,
                 value=onnx.numpy_helper.from_array(np.array(value, dtype), name))

    nodes = [
        const("zero", 0), const("axes0", [0]), const("hw_lo", [2]), const("hw_hi", [4]),
        const("nc", [1, 8]), const("side", 24.0, np.float32),
        c("Split", ["x"], ["images"], name="split_batch", axis=0),
        c("Gather", ["images", "zero"], ["image"], name="first_image", axis=0),
        c("Unsqueeze", ["image", "axes0"], ["batch"], name="as_batch"),
        c("Conv", ["batch", "w", "b"], ["conv"], name="stem/conv", pads=[1, 1, 1, 1]),
        c("Relu", ["conv"], ["relu"], name="stem/relu"),
        c("Shape", ["relu"], ["shape"], name="size/shape"),
        c("Slice", ["shape", "hw_lo", "hw_hi"], ["hw"], name="size/hw"),
        c("Cast", ["hw"], ["hw_f"], name="size/cast", to=onnx.TensorProto.FLOAT),
        c("ReduceMax", ["hw_f"], ["longest"], name="size/longest", keepdims=0),
        c("Div", ["side", "longest"], ["scale"], name="size/scale"),
        c("Mul", ["hw_f", "scale"], ["scaled"], name="size/scaled"),
        c("Ceil", ["scaled"], ["ceiled"], name="size/ceil"),
        c("Cast", ["ceiled"], ["sizes_hw"], name="size/int", to=onnx.TensorProto.INT64),
        c("Concat", ["nc", "sizes_hw"], ["sizes"], name="size/concat", axis=0),
        c("Resize", ["relu", "", "", "sizes"], ["y"], name="upsample", mode="nearest"),
    ]
    inits = {"w": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b": rng.standard_normal(8) * 0.1}
    return make_model(nodes, {"x": ["N", 3, "H", "W"]}, {"y": None}, inits)


def test_detector_preamble_folds_and_compiles_integer(tmp_path, rng):
    """Split of one part, Gather of a constant index and a ReduceMax/Ceil size computation
    (once: an unsupported Gather, ReduceMax and Ceil, and a crash on the Split)."""
    calib = {"x": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    compiled, lib = compile_and_compare(detector_preamble(rng), tmp_path, calib)
    assert lib.outputs[0]["shape"] == [1, 8, 24, 24]
    from qcompiler.graph_meta import graph_meta
    layers = graph_meta(compiled.quantized)["layers"]
    assert all(r["status"] == "integer" for r in layers), layers
