"""Every integer op, alone in a graph, compiled and compared with the reference bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import compile_and_compare, make_model
from onnx import helper, numpy_helper

CONV_CASES = [
    # (cin, cout, hw, k, stride, pads, dilation, groups, bias, activation)
    (3, 8, 9, 3, 1, (1, 1, 1, 1), 1, 1, True, None),
    (5, 7, 11, 3, 2, (1, 1, 1, 1), 1, 1, True, "Relu"),
    (6, 6, 8, 3, 1, (1, 1, 1, 1), 1, 6, False, "Clip6"),      # depthwise
    (8, 12, 7, 1, 1, (0, 0, 0, 0), 1, 1, True, None),         # 1x1
    (6, 9, 10, 3, 2, (0, 1, 2, 1), 1, 3, True, "Relu"),       # grouped, asymmetric pads
    (4, 5, 12, 3, 1, (2, 2, 2, 2), 2, 1, True, None),         # dilated
    (13, 17, 6, 5, 1, (2, 2, 2, 2), 1, 1, True, "Clip6"),     # odd channel counts, 5x5
    (1, 3, 8, 3, 2, (0, 0, 0, 0), 1, 1, True, None),          # stride 2, no pad, one channel
]


def _act_nodes(act: str | None, src: str, out: str) -> tuple[list, dict]:
    if act is None:
        return [helper.make_node("Identity", [src], [out])], {}
    if act == "Relu":
        return [helper.make_node("Relu", [src], [out])], {}
    return [helper.make_node("Clip", [src, "c_lo", "c_hi"], [out])], \
        {"c_lo": np.array(0.0), "c_hi": np.array(6.0)}


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"c{c[0]}x{c[1]}k{c[3]}s{c[4]}g{c[7]}")
@pytest.mark.parametrize("batch", [1, 2])
def test_conv2d(case, batch, tmp_path, rng):
    cin, cout, hw, k, stride, pads, dil, groups, bias, act = case
    w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32) * 0.3
    inits = {"w": w}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(cout).astype(np.float32)
        ins.append("b")
    conv = helper.make_node("Conv", ins, ["c"], strides=[stride, stride], pads=list(pads),
                            dilations=[dil, dil], group=groups, kernel_shape=[k, k])
    act_nodes, act_inits = _act_nodes(act, "c", "y")
    model = make_model([conv, *act_nodes], {"x": ("N", cin, hw, hw)}, {"y": None},
                       {**inits, **act_inits})
    calib = {"x": rng.standard_normal((8, cin, hw, hw)).astype(np.float32)}
    compiled, lib = compile_and_compare(model, tmp_path, calib, batch=batch)
    assert [x["op"] for x in lib.meta["layers"]] == ["conv2d"]
    assert lib.inputs[0]["shape"][0] == batch


@pytest.mark.parametrize("k,n,bias,relu", [(17, 5, True, False), (64, 10, True, True),
                                           (3, 33, False, False)])
def test_gemm(k, n, bias, relu, tmp_path, rng):
    inits = {"w": rng.standard_normal((n, k)).astype(np.float32)}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(n).astype(np.float32)
        ins.append("b")
    nodes = [helper.make_node("Gemm", ins, ["g" if relu else "y"], transB=1)]
    if relu:
        nodes.append(helper.make_node("Relu", ["g"], ["y"]))
    model = make_model(nodes, {"x": (2, k)}, {"y": None}, inits)
    calib = {"x": rng.standard_normal((6, k)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert [x["op"] for x in lib.meta["layers"]] == ["dense"]  # ReLU fused into the clamp


def test_matmul_with_constant_weights(tmp_path, rng):
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": (3, 20)},
                       {"y": None}, {"w": rng.standard_normal((20, 7)).astype(np.float32)})
    calib = {"x": rng.standard_normal((9, 20)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert lib.meta["layers"][0]["op"] == "dense"


@pytest.mark.parametrize(("x_shape", "w_shape"), [
    ((1, 6, 4, 8), (8,)),     # a GFL head's integral: softmax(bins) @ [0, 1, ..., reg_max]
    ((3, 8), (8,)),           # the same after the exporter's reshape to [-1, reg_max + 1]
    ((1, 6, 8), (8, 5)),      # rows of a sequence times a matrix
])
def test_matmul_by_a_constant_vector_or_of_stacked_rows(tmp_path, rng, x_shape, w_shape):
    """numpy's MatMul: a 1-D right operand drops the last axis, leading axes of the left one
    are rows. Integer dense kernel, bit-exact, the output shape ONNX gives."""
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": x_shape},
                       {"y": None}, {"w": rng.standard_normal(w_shape).astype(np.float32)})
    calib = {"x": rng.standard_normal((9, *x_shape[1:])).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert [x["op"] for x in lib.meta["layers"]] == ["dense"]
    assert lib.outputs[0]["shape"] == list(x_shape[:-1] + w_shape[1:])


def _two_branch(op_nodes: list, c: int, hw: int, rng, extra: dict | None = None):
    """x -> conv a, x2 -> conv b -> op(a, b): inputs of the op have different qparams. (Two
    inputs: convs of one input that are summed merge into one conv, `merge_parallel_convs`.)"""
    wa = rng.standard_normal((c, c, 1, 1)).astype(np.float32)
    wb = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.5
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["x2", "wb"], ["b"], kernel_shape=[3, 3], pads=[1] * 4),
             *op_nodes]
    return make_model(nodes, {"x": (1, c, hw, hw), "x2": (1, c, hw, hw)}, {"y": None},
                      {"wa": wa, "wb": wb, **(extra or {})})


def _two_inputs(rng, c: int, hw: int) -> dict[str, np.ndarray]:
    return {k: rng.standard_normal((8, c, hw, hw)).astype(np.float32) for k in ("x", "x2")}


@pytest.mark.parametrize("c,hw,act", [(4, 6, None), (7, 5, "Relu"), (16, 9, "Clip6")])
def test_residual_add(c, hw, act, tmp_path, rng):
    act_nodes, act_inits = _act_nodes(act, "s", "y")
    model = _two_branch([helper.make_node("Add", ["a", "b"], ["s"]), *act_nodes], c, hw, rng,
                        act_inits)
    calib = _two_inputs(rng, c, hw)
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert [x["op"] for x in lib.meta["layers"]] == ["conv2d", "conv2d", "add"]


@pytest.mark.parametrize("c,hw", [(3, 5), (8, 7)])
def test_concat_rescales_inputs(c, hw, tmp_path, rng):
    model = _two_branch([helper.make_node("Concat", ["a", "b"], ["y"], axis=1)], c, hw, rng)
    calib = _two_inputs(rng, c, hw)
    compiled, lib = compile_and_compare(model, tmp_path, calib)
    assert lib.meta["layers"][-1]["op"] == "concat"
    assert "requantize" in compiled.quantized.script()


@pytest.mark.parametrize("k,s,pads", [(2, 2, (0, 0, 0, 0)), (3, 2, (1, 1, 1, 1)),
                                      (3, 1, (0, 1, 1, 0))])
def test_max_pool(k, s, pads, tmp_path, rng):
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, k],
                                         strides=[s, s], pads=list(pads))],
                       {"x": (2, 5, 9, 9)}, {"y": None})
    calib = {"x": rng.standard_normal((8, 5, 9, 9)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert lib.meta["layers"][0]["op"] == "max_pool2d"


@pytest.mark.parametrize("k,s,pads,include", [(2, 2, (0, 0, 0, 0), 0), (3, 2, (1, 1, 1, 1), 0),
                                              (3, 2, (1, 1, 1, 1), 1), (3, 1, (1, 0, 0, 1), 0)])
def test_average_pool(k, s, pads, include, tmp_path, rng):
    model = make_model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[k, k],
                                         strides=[s, s], pads=list(pads),
                                         count_include_pad=include)],
                       {"x": (1, 6, 10, 10)}, {"y": None})
    calib = {"x": rng.standard_normal((8, 6, 10, 10)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert lib.meta["layers"][0]["status"] == "integer"


@pytest.mark.parametrize("c,hw", [(5, 7), (32, 4)])
def test_global_average_pool_flatten(c, hw, tmp_path, rng):
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    model = make_model(nodes, {"x": (2, c, hw, hw)}, {"y": None})
    calib = {"x": rng.standard_normal((8, c, hw, hw)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert all(x["status"] == "integer" for x in lib.meta["layers"])


def test_reshape(tmp_path, rng):
    shape = helper.make_node("Constant", [], ["shape"],
                             value=numpy_helper.from_array(np.array([1, 36], np.int64)))
    nodes = [shape, helper.make_node("Reshape", ["x", "shape"], ["y"])]
    model = make_model(nodes, {"x": (1, 4, 3, 3)}, {"y": None})
    calib = {"x": rng.standard_normal((4, 4, 3, 3)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert lib.outputs[0]["shape"] == [1, 36]


def test_float_fallback_is_listed_and_exact(tmp_path, rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Softmax", ["c"], ["y"], axis=1)]
    model = make_model(nodes, {"x": (1, 3, 6, 6)}, {"y": None}, {"w": w})
    calib = {"x": rng.standard_normal((8, 3, 6, 6)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    status = {x["op"]: x["status"] for x in lib.meta["layers"]}
    assert status == {"conv2d": "integer", "nn.softmax": "float"}
