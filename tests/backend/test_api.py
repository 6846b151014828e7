"""The API's results: `compile_to_dir` gives the loaded model and the compile behind it;
`qcompiler.compile` gives the loaded model alone."""
from __future__ import annotations

import json

import numpy as np
from conftest import make_model, save_calib, save_model
from onnx import helper

import qcompiler
from qcompiler.api import compile_to_dir
from qcompiler.backend.runtime import CompiledModel
from qcompiler.graph_meta import graph_meta
from qcompiler.reference import Reference


def _two_output_model(tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("MaxPool", ["c"], ["z"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["y"])]
    # two outputs, z (pooled) before y: their order is checked by shape
    model = make_model(nodes, {"x": (1, 2, 6, 6)}, {"z": None, "y": None}, {"w": w})
    calib = {"x": np.random.default_rng(1).standard_normal((4, 2, 6, 6)).astype(np.float32)}
    return save_model(model, tmp_path), save_calib(calib, tmp_path)


def test_compile_to_dir_returns_the_loaded_model_and_its_compile(tmp_path):
    mp, cp = _two_output_model(tmp_path)
    out = tmp_path / "out"
    result = compile_to_dir(mp, cp, out)
    lib, compiled = result
    assert isinstance(lib, CompiledModel) and result.lib is lib and result.compiled is compiled
    manifest = json.loads((out / "model.json").read_text())
    outputs = graph_meta(compiled.quantized)["outputs"]
    assert outputs == manifest["outputs"] == lib.outputs
    assert [o["shape"] for o in outputs] == [[1, 4, 3, 3], [1, 4, 6, 6]]  # z, then y
    # the compiled graph is the one the library runs: the reference agrees bit for bit
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 6)).astype(np.float32)
    q = lib.quantize_inputs(x)
    for got, want in zip(lib.run_int(*q), Reference(compiled.quantized).run(*q)):
        np.testing.assert_array_equal(got, want)


def test_qcompiler_compile_returns_the_loaded_model(tmp_path):
    mp, cp = _two_output_model(tmp_path)
    lib = qcompiler.compile(mp, cp, tmp_path / "out")
    assert isinstance(lib, CompiledModel)
    assert [o["shape"] for o in lib.outputs] == [[1, 4, 3, 3], [1, 4, 6, 6]]
