"""quantize: the fused float graph + qparams -> integer kernels carrying the contract."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_model
from onnx import helper
from qcompiler.passes.quantize import quantize, realize
from tvm import relax

from qcompiler.errors import QCompileError
from qcompiler.frontend.onnx_import import graph_inputs
from qcompiler.graph_meta import graph_meta
from qcompiler.numerics.calibrate import tensor_bindings
from qcompiler.numerics.qparams import QParams
from qcompiler.numerics.requantize import quantize_multiplier
from qcompiler.pipeline import float_graph
from qcompiler.relax_access import bindings, const_array, op_name


def _fused(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    model = make_model(nodes, {"x": (1, 3, 6, 6)}, {"y": None}, {"w": w, "b": b})
    return float_graph(model, graph_inputs(model, None)), w, b


def _kernels(mod):
    out = []
    for b in bindings(mod["main_int"]):
        if op_name(b.value) == "relax.call_tir":
            prim = mod[b.value.args[0]]
            out.append((str(prim.attrs["qcompiler.op"]),
                        json.loads(str(prim.attrs["qcompiler.attrs"])), b.value))
    return out


def test_conv_relu_pool_realized_as_integer_kernels(rng):
    before, w, b = _fused(rng)
    x_qp, y_qp = QParams(0.02, 128, "uint8"), QParams(0.05, 0, "uint8")
    n_bind = len(tensor_bindings(before["main"]))
    after = quantize([x_qp], [y_qp] * n_bind)(before)
    relax.analysis.well_formed(after)  # raises on the first violation
    kinds = _kernels(after)
    assert [k for k, _, _ in kinds] == ["conv2d", "max_pool2d"]
    _, attrs, call = kinds[0]
    assert attrs["zp_x"] == 128 and attrs["zp_y"] == 0
    assert attrs["lo"] == 0 and attrs["hi"] == 255  # ReLU folded: lo = zp_y
    w_q, b_q, m0, shift = (const_array(a) for a in call.args[1].fields[1:])
    assert w_q.dtype == np.int8 and np.abs(w_q).max() == 127
    s_w = (np.abs(w).reshape(4, -1).max(axis=1) / 127).astype(np.float32)
    np.testing.assert_array_equal(w_q, np.clip(np.rint(w / s_w.reshape(-1, 1, 1, 1)), -127, 127))
    np.testing.assert_array_equal(b_q, np.rint(b.astype(np.float64) / (0.02 * s_w)))
    expect = [quantize_multiplier(0.02 * float(s) / 0.05) for s in s_w]
    assert list(zip(m0.tolist(), shift.tolist())) == expect
    meta = graph_meta(after)
    assert meta["inputs"][0]["zero_point"] == 128 and meta["outputs"][0]["dtype"] == "uint8"
    assert str(after["main_int"].params[0].ty.dtype) == "uint8"


def test_per_tensor_option_uses_one_scale(rng):
    before, w, _ = _fused(rng)
    n_bind = len(tensor_bindings(before["main"]))
    qp = QParams(0.05, 0, "uint8")
    after = quantize([QParams(0.02, 128, "uint8")], [qp] * n_bind, per_channel=False)(before)
    _, _, call = _kernels(after)[0]
    w_q = const_array(call.args[1].fields[1])
    s = np.float32(np.abs(w).max() / 127)
    np.testing.assert_array_equal(w_q, np.clip(np.rint(w / s), -127, 127))


def test_non_tensor_binding_is_a_clear_error():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            bb.emit(relax.op.shape_of(x))
            out = bb.emit_output(relax.op.nn.relu(x))
        bb.emit_func_output(out)
    qp = QParams(0.1, 0, "uint8")
    with pytest.raises(QCompileError, match=r"layer \w+: relax.shape_of returns a non-tensor "
                                            r"value, which qcompiler cannot quantize"):
        realize(bb.get(), [qp], [qp])
    with pytest.raises(RuntimeError, match="relax.shape_of returns a non-tensor value"):
        quantize([qp], [qp])(bb.get())  # through the pass: same message, FFI error type


def test_split_tuple_items_keep_the_input_qparams():
    """A split (tuple-valued binding) is realized on the integers; its items pass the input's
    qparams through, whatever was calibrated for them."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            parts = bb.emit(relax.op.split(x, 2, axis=1))
            out = bb.emit_output(relax.TupleGetItem(parts, 1))
        bb.emit_func_output(out)
    qp, other = QParams(0.1, 0, "uint8"), QParams(0.5, 3, "uint8")
    mod = realize(bb.get(), [qp], [other])
    relax.analysis.well_formed(mod)
    meta = graph_meta(mod)
    assert [x["op"] for x in meta["layers"]] == ["split"]
    assert (meta["outputs"][0]["scale"], meta["outputs"][0]["zero_point"]) == (0.1, 0)
