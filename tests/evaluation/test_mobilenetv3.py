"""The bundled MobileNetV3-style net (tools/train_mobilenetv3.py): depthwise convs, hard-swish
and squeeze-excite gates compile to integer kernels, bit-exact, and int8 stays near float."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from qcompiler.api import compile_to_dir
from qcompiler.evaluation.datasets import load_fashion_mnist
from qcompiler.evaluation.metrics import float_predictions, int8_predictions
from qcompiler.reference import Reference

MODEL = ROOT / "tests" / "fixtures" / "mobilenetv3" / "mobilenetv3.onnx"
CALIB = MODEL.with_name("mobilenetv3_calib.npz")


def test_fixture_is_small_and_calibration_fits():
    assert MODEL.stat().st_size < 400_000  # bundled in the repository
    with np.load(CALIB) as z:
        assert z["image"].shape == (256, 1, 28, 28) and z["image"].dtype == np.float32


@pytest.mark.slow
def test_mobilenetv3_bit_exact_and_int8_within_a_point_of_float(tmp_path):
    lib, compiled = compile_to_dir(MODEL, CALIB, tmp_path / "out", batch=100)
    layers = lib.meta["layers"]
    assert all(x["status"] == "integer" for x in layers), \
        [(x["op"], x["status"]) for x in layers if x["status"] != "integer"]
    ops = [x["op"] for x in layers]
    assert ops.count("conv2d") >= 15 and {"hardswish", "mean", "multiply", "add", "dense"} <= set(ops), \
        sorted(set(ops))
    images, labels = load_fashion_mnist("t10k")
    x, y = images[:300], labels[:300]
    pred, bad, total = int8_predictions(lib, Reference(compiled.quantized, compiled.tvm_target),
                                        x)
    assert total == 300 * 10 and bad == 0
    top1_float = (float_predictions(str(MODEL), x, "image") == y).mean()
    assert abs((pred == y).mean() - top1_float) <= 0.01  # 3 of 300 images
