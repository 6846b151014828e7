"""Output sizes (`qcompiler.numerics.shapes`) against ONNX Runtime's kernels."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from qcompiler.numerics.shapes import pool2d_ceil_padding, pool2d_out_hw


def _ort_pool_hw(hw: tuple, kernel: list, strides: list, pads: list) -> tuple:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=kernel, strides=strides,
                            pads=pads, ceil_mode=1)
    graph = helper.make_graph([node], "pool",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, *hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # (ORT's own shape inference disagrees with its kernel)
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.zeros((1, 1, *hw), np.float32)})[0].shape[2:]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 4), st.data())
def test_ceil_mode_pool_size_is_onnxruntimes(n, k, s, data):
    """With the grown padding, the floor formula gives ONNX Runtime's ceil_mode size, also
    where a last window starting in the padding is dropped; the growth is less than a stride
    and no window lies in the padding alone."""
    k = min(k, n)
    begin, end = data.draw(st.integers(0, k - 1)), data.draw(st.integers(0, k - 1))
    geo = {"kernel": [k, 1], "strides": [s, 1], "padding": [begin, 0, end, 0]}
    grown = pool2d_ceil_padding((n, 3), geo)
    out = pool2d_out_hw((n, 3), {**geo, "padding": grown})
    assert out == _ort_pool_hw((n, 3), [k, 1], [s, 1], [begin, 0, end, 0])
    assert 0 <= grown[2] - end < s and grown[3] == 0
    assert (out[0] - 1) * s < n + begin
