"""The QAT models of `tools/train_qat.py` compile without calibration, bit-exact, keeping their
weight integers, and keep their accuracy on real Fashion-MNIST images.

The fixtures were written by `tools/train_qat.py --weight-bits 8 --epochs 2` and
`--weight-bits 4 --epochs 1`; the top-1 thresholds are the measured figures on the first 1,000
test images (90.7 % w8, 91.1 % w4) minus about two points, so a wrong scale, zero point or
weight would fail them.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ROOT, check_against_reference
from onnx import numpy_helper
from support.qdq import compile_qdq, kernel_weights

from qcompiler.evaluation.datasets import load_fashion_mnist
from qcompiler.evaluation.metrics import int8_predictions

FIXTURES = ROOT / "tests" / "fixtures" / "qat"
EVAL_IMAGES = 1000
# weight bits -> (fixture, minimum top-1 on the first EVAL_IMAGES test images)
CASES = {8: ("fashion_qat_w8.onnx", 0.89), 4: ("fashion_qat_w4.onnx", 0.89)}


def _given_weights(model: onnx.ModelProto) -> list[np.ndarray]:
    """The int8 weight initializers (each behind a DequantizeLinear), in graph order."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits]


@pytest.mark.parametrize("bits", sorted(CASES), ids=lambda b: f"w{b}")
def test_qat_fixture(bits, tmp_path):
    name, min_top1 = CASES[bits]
    model = onnx.load(str(FIXTURES / name))
    compiled, lib = compile_qdq(model, tmp_path)  # no calibration data
    assert [x["status"] for x in lib.meta["layers"]] == ["integer"] * len(lib.meta["layers"])
    images, labels = load_fashion_mnist("t10k")
    images, labels = images[:EVAL_IMAGES], labels[:EVAL_IMAGES]
    check_against_reference(compiled, lib, [[images[i:i + 1]] for i in range(3)])
    given = _given_weights(model)
    got = kernel_weights(compiled)
    assert len(got) == len(given) == 7
    qmax = 2 ** (bits - 1) - 1
    for g, w in zip(got, given):
        np.testing.assert_array_equal(g, w)
        assert int(np.abs(g).max()) == qmax  # every layer reaches, and stays within, +-qmax
    pred, _, _ = int8_predictions(lib, None, images)
    top1 = float((pred == labels).mean())
    assert top1 >= min_top1, f"top-1 {top1:.3f} < {min_top1}"
