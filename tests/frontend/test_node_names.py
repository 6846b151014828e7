"""Layers are named by their ONNX nodes, as Netron shows them, in model.json, the summary,
`--report` and errors; fused nodes are listed; unnamed nodes get `<OpType>_<index>`
(`frontend.node_names`, `frontend.layer_origin`)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import make_model, save_calib, save_model
from onnx import helper

from qcompiler.cli import main
from qcompiler.errors import UnsupportedModelError
from qcompiler.frontend.layer_origin import layer_origins
from qcompiler.frontend.node_names import name_nodes
from qcompiler.frontend.onnx_import import graph_inputs, import_onnx
from qcompiler.pipeline import float_graph
from qcompiler.relax_access import bindings

C = 4


def _nodes(named: bool) -> list:
    """Conv+BN+ReLU; two residual blocks whose Adds are equal (one shared composite); a
    hard-swish written out (one table); pool, flatten, Gemm and a float Softmax."""
    spec = [("Conv", ["x", "w0", "b0"], "c0", "/stem/Conv", {"pads": [1] * 4}),
            ("BatchNormalization", ["c0", "g", "be", "mu", "var"], "n0",
             "/stem/BatchNormalization", {}),
            ("Relu", ["n0"], "r0", "/stem/Relu", {}),
            ("Conv", ["r0", "w1", "b1"], "c1", "/b1/Conv", {"pads": [1] * 4}),
            ("Add", ["c1", "r0"], "a1", "/b1/Add", {}),
            ("Conv", ["a1", "w2", "b2"], "c2", "/b2/Conv", {"pads": [1] * 4}),
            ("Add", ["c2", "a1"], "a2", "/b2/Add", {}),
            ("Add", ["a2", "three"], "h0", "/act/Add", {}),
            ("Clip", ["h0", "zero", "six"], "h1", "/act/Clip", {}),
            ("Mul", ["a2", "h1"], "h2", "/act/Mul", {}),
            ("Div", ["h2", "six"], "h3", "/act/Div", {}),
            ("MaxPool", ["h3"], "p", "/pool/MaxPool", {"kernel_shape": [2, 2],
                                                       "strides": [2, 2]}),
            ("Flatten", ["p"], "f", "/Flatten", {}),
            ("Gemm", ["f", "wf", "bf"], "g0", "/fc/Gemm", {"transB": 1}),
            ("Softmax", ["g0"], "y", "/head/Softmax", {})]
    return [helper.make_node(op, ins, [out], name=name if named else "", **attrs)
            for op, ins, out, name, attrs in spec]


def _model(named: bool = True):
    rng = np.random.default_rng(0)
    inits = {"w0": rng.standard_normal((C, 3, 3, 3)), "b0": rng.standard_normal(C),
             "g": rng.uniform(0.5, 1.5, C), "be": rng.standard_normal(C),
             "mu": rng.standard_normal(C), "var": rng.uniform(0.5, 1.5, C),
             "w1": rng.standard_normal((C, C, 3, 3)) / 6, "b1": rng.standard_normal(C),
             "w2": rng.standard_normal((C, C, 3, 3)) / 6, "b2": rng.standard_normal(C),
             "three": np.array(3.0), "zero": np.array(0.0), "six": np.array(6.0),
             "wf": rng.standard_normal((5, C * 16)) / 8, "bf": rng.standard_normal(5)}
    return make_model(_nodes(named), {"x": (1, 3, 8, 8)}, {"y": None}, inits)


# (name, ONNX op, fused) per layer of `_model`, in graph order
NETRON = [("/stem/Conv", "Conv", ["/stem/BatchNormalization (BatchNormalization)",
                                  "/stem/Relu (Relu)"]),
          ("/b1/Conv", "Conv", []), ("/b1/Add", "Add", []),
          ("/b2/Conv", "Conv", []), ("/b2/Add", "Add", []),
          ("/act/Add", "Add", ["/act/Clip (Clip)", "/act/Mul (Mul)", "/act/Div (Div)"]),
          ("/pool/MaxPool", "MaxPool", []), ("/Flatten", "Flatten", []),
          ("/fc/Gemm", "Gemm", []), ("/head/Softmax", "Softmax", [])]


def _origins(model) -> list[tuple]:
    mod = float_graph(model, graph_inputs(model, 1))
    found = layer_origins(mod)
    return [(o.name, o.op_type, list(o.fused)) for b in bindings(mod["main"])
            if (o := found.get(b.var)) is not None]


def test_summary_report_and_manifest_name_onnx_nodes(tmp_path, capsys):
    path = save_model(_model(), tmp_path)
    calib = save_calib({"x": np.random.default_rng(1).standard_normal((4, 3, 8, 8))
                        .astype(np.float32)}, tmp_path)
    out, report = tmp_path / "out", tmp_path / "out" / "report.html"
    assert main([str(path), "--calib", str(calib), "-o", str(out), "--report", str(report),
                 "--quiet"]) == 0
    layers = json.loads((out / "model.json").read_text())["layers"]
    assert [(x["name"], x["onnx_op"], x["fused"]) for x in layers] == NETRON
    assert [x["op"] for x in layers][:6] == ["conv2d", "conv2d", "add", "conv2d", "add",
                                             "elementwise(add,clip,multiply,divide)"]
    text = capsys.readouterr().out
    assert "float fallback: /head/Softmax (Softmax)" in text
    assert re.search(r"report: .* dB at /[\w/]+ \((Conv|Add|Gemm|Softmax)\)\)", text), text
    html = report.read_text()
    assert "/stem/Conv (Conv) + /stem/BatchNormalization (BatchNormalization) + " \
        "/stem/Relu (Relu)" in html
    assert "<td>/b2/Add (Add)</td>" in html


def test_unnamed_nodes_get_stable_op_index_names():
    model = _model(named=False)
    expected = [("Conv_0", "Conv", ["BatchNormalization_1 (BatchNormalization)",
                                    "Relu_2 (Relu)"]),
                ("Conv_3", "Conv", []), ("Add_4", "Add", []), ("Conv_5", "Conv", []),
                ("Add_6", "Add", []),
                ("Add_7", "Add", ["Clip_8 (Clip)", "Mul_9 (Mul)", "Div_10 (Div)"]),
                ("MaxPool_11", "MaxPool", []), ("Flatten_12", "Flatten", []),
                ("Gemm_13", "Gemm", []), ("Softmax_14", "Softmax", [])]
    assert _origins(model) == expected
    assert _origins(model) == expected  # the same names on every import


def test_parallel_branches_keep_their_own_names():
    """Two convs (BN folded, no activation) on one input: equal but for their constants."""
    rng = np.random.default_rng(2)
    nodes, inits = [], {}
    for b in ("a", "b"):
        nodes += [helper.make_node("Conv", ["x", f"w{b}"], [f"c{b}"], name=f"/{b}/Conv"),
                  helper.make_node("BatchNormalization", [f"c{b}", "g", "be", "mu", "var"],
                                   [f"n{b}"], name=f"/{b}/BatchNormalization")]
        inits[f"w{b}"] = rng.standard_normal((C, 3, 1, 1))
    nodes.append(helper.make_node("Concat", ["na", "nb"], ["y"], name="/Concat", axis=1))
    inits.update(g=np.ones(C), be=np.zeros(C), mu=np.zeros(C), var=np.ones(C))
    model = make_model(nodes, {"x": (1, 3, 4, 4)}, {"y": None}, inits)
    assert _origins(model) == [
        ("/a/Conv", "Conv", ["/a/BatchNormalization (BatchNormalization)"]),
        ("/b/Conv", "Conv", ["/b/BatchNormalization (BatchNormalization)"]),
        ("/Concat", "Concat", [])]


def test_equal_activations_sharing_one_function_keep_their_own_names():
    """Two HardSwish ops become equal composites (one function, the first one's constants)."""
    nodes = [helper.make_node("HardSwish", ["x"], ["h"], name="/first/HardSwish"),
             helper.make_node("Conv", ["h", "w"], ["c"], name="/Conv"),
             helper.make_node("HardSwish", ["c"], ["y"], name="/second/HardSwish")]
    model = make_model(nodes, {"x": (1, C, 4, 4)}, {"y": None},
                       {"w": np.random.default_rng(3).standard_normal((C, C, 1, 1))})
    assert _origins(model) == [("/first/HardSwish", "HardSwish", []), ("/Conv", "Conv", []),
                               ("/second/HardSwish", "HardSwish", [])]


def test_synthesized_names_avoid_names_in_use():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"], name="Relu_0")]
    named = name_nodes(make_model(nodes, {"x": (1, 4)}, {"y": None}))
    assert [n.name for n in named.graph.node] == ["Relu_0_1", "Relu_0"]
    assert name_nodes(named) is named  # all named: nothing to copy


@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_unsupported_op_error_names_the_node(named):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/block/Relu" if named else ""),
             helper.make_node("Hardmax", ["a"], ["y"], name="/head/Hardmax" if named else "")]
    model = make_model(nodes, {"x": (1, 4)}, {"y": None})
    where = "/head/Hardmax" if named else "Hardmax_1"
    with pytest.raises(UnsupportedModelError, match=f"^unsupported: op Hardmax at node\\(s\\) "
                                                    f"{where}$"):
        import_onnx(model, graph_inputs(model, 1))
