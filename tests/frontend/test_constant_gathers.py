"""gathers_as_slices: a Gather of constant indices forming a progression becomes Slice (and
Squeeze for a scalar index) with the same values; other index sets stay Gathers."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from qcompiler.frontend.constant_gathers import gathers_as_slices


def _gather(indices: np.ndarray, axis: int, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["y"], name="pick", axis=axis)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(indices.astype(np.int64), "i")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("indices,axis,ops", [
    (np.array(0), 0, ["Slice", "Squeeze"]),      # images[0]
    (np.array(-1), 1, ["Slice", "Squeeze"]),     # the last channel
    (np.array([1, 2, 3]), 1, ["Slice"]),         # a range
    (np.array([5, 3, 1]), -1, ["Slice"]),        # a descending step
    (np.array([4]), 2, ["Slice"]),
])
@pytest.mark.parametrize("opset", [11, 17])
def test_progressions_become_slices_with_the_same_values(indices, axis, ops, opset):
    before = _gather(indices, axis, opset)
    after = gathers_as_slices(before, {"x": (2, 5, 6)})
    onnx.shape_inference.infer_shapes(after, strict_mode=True)  # (types and ranks agree)
    assert [n.op_type for n in after.graph.node] == ops
    x = np.arange(60, dtype=np.float32).reshape(2, 5, 6)
    want = ReferenceEvaluator(before).run(None, {"x": x})[0]
    got = ReferenceEvaluator(after).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("indices", [np.array([0, 2, 3]), np.array([[0, 1]]), np.array([1, 1])])
def test_other_index_sets_stay_gathers(indices):
    model = _gather(indices, 1)
    assert gathers_as_slices(model, {"x": (2, 5, 6)}) is model
