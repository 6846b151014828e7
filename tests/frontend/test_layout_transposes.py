"""NHWC exports (tf2onnx): the Transpose pair around every Conv is pushed through and
cancelled before import (`frontend.layout_transposes`); the graph computes the same function,
compiles integer and bit-exact; other files keep their nodes."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from conftest import compile_and_compare, make_model
from onnx import helper

from qcompiler.frontend.layout_transposes import layout_transposes, sink_layout_transposes

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def nhwc_block(rng: np.random.Generator, c: int = 8) -> onnx.ModelProto:
    """What tf2onnx writes for a Keras conv -> BN -> ReLU -> squeeze-excite block with an NHWC
    input: each Conv between Transposes, BN as Mul/Add by constants on the last axis, the SE
    pool a ReduceMean over axes 1 and 2, its gate a HardSigmoid, the output back in NHWC."""
    c_ = helper.make_node
    nodes = [
        c_("Transpose", ["x"], ["x_t"], name="stem/in", perm=TO_NCHW),
        c_("Conv", ["x_t", "w1"], ["c1"], name="stem/conv", pads=[1, 1, 1, 1]),
        c_("Transpose", ["c1"], ["c1_t"], name="stem/out", perm=TO_NHWC),
        c_("Mul", ["c1_t", "bn_s"], ["bn_m"], name="stem/bn/mul"),
        c_("Add", ["bn_m", "bn_b"], ["bn"], name="stem/bn/add"),
        c_("Relu", ["bn"], ["r"], name="stem/relu"),
        c_("ReduceMean", ["r"], ["pool"], name="se/mean", axes=[1, 2], keepdims=1),
        c_("Transpose", ["pool"], ["pool_t"], name="se/in", perm=TO_NCHW),
        c_("Conv", ["pool_t", "w2", "b2"], ["g"], name="se/conv"),
        c_("Transpose", ["g"], ["g_t"], name="se/out", perm=TO_NHWC),
        c_("HardSigmoid", ["g_t"], ["gate"], name="se/gate"),
        c_("Mul", ["r", "gate"], ["se"], name="se/mul"),
        c_("Transpose", ["se"], ["se_t"], name="proj/in", perm=TO_NCHW),
        c_("Conv", ["se_t", "w3"], ["p"], name="proj/conv"),
        c_("Transpose", ["p"], ["y"], name="proj/out", perm=TO_NHWC),
    ]
    inits = {"w1": rng.standard_normal((c, 3, 3, 3)) * 0.3,
             "bn_s": rng.uniform(0.5, 1.5, c), "bn_b": rng.standard_normal(c) * 0.1,
             "w2": rng.standard_normal((c, c, 1, 1)) * 0.3, "b2": rng.standard_normal(c) * 0.1,
             "w3": rng.standard_normal((c, c, 1, 1)) * 0.3}
    return make_model(nodes, {"x": ["N", 12, 12, 3]}, {"y": None}, inits, opset=13)


def test_layout_transposes_cancel_and_the_function_is_the_same(rng):
    model = nhwc_block(rng)
    sunk = sink_layout_transposes(model)
    assert layout_transposes(model) == 6
    assert layout_transposes(sunk) <= 2  # the input's and the output's conversions at most
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(None, {"x": x})[0] for m in (model, sunk)]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-5, atol=1e-5)


def test_an_nhwc_export_compiles_integer_without_layout_copies(tmp_path, rng):
    calib = {"x": rng.standard_normal((4, 12, 12, 3)).astype(np.float32)}
    compiled, lib = compile_and_compare(nhwc_block(rng), tmp_path, calib)
    assert lib.outputs[0]["shape"] == [1, 12, 12, 8]
    from qcompiler.graph_meta import graph_meta
    layers = graph_meta(compiled.quantized)["layers"]
    assert all(r["status"] == "integer" for r in layers), layers
    assert sum(r["onnx_op"] == "Transpose" for r in layers) <= 2, layers


def test_files_without_layout_transposes_keep_their_nodes(rng):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=TO_NCHW),
             helper.make_node("Conv", ["t", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, {"x": [1, 6, 6, 3]}, {"y": None},
                       {"w": rng.standard_normal((4, 3, 1, 1))})
    assert sink_layout_transposes(model) is model
