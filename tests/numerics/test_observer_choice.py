"""`--observer auto`: the choice follows what the consuming layer reads."""
from __future__ import annotations

import numpy as np
import tvm
from conftest import make_model
from onnx import helper
from qcompiler.targets.x86 import x86_target

from qcompiler.frontend.onnx_import import graph_inputs
from qcompiler.numerics.calibrate import calibrate
from qcompiler.numerics.observer_choice import fake_quantize
from qcompiler.numerics.qparams import compute_qparams
from qcompiler.pipeline import float_graph


def _relu_then_conv(weights: list[float], rng):
    """(top of the ReLU output's range, its ObserverChoice) where a 1x1 conv reads channel 0
    (in [0, 1]) and channel 1 (in [0, 1] with three values at 50, in the first batch, which
    is where `auto` measures) by `weights`."""
    model = make_model([helper.make_node("Relu", ["x"], ["r"]),
                        helper.make_node("Conv", ["r", "w"], ["y"])], {"x": (4, 2, 16, 16)},
                       {"y": None}, {"w": np.array(weights, np.float32).reshape(1, 2, 1, 1)})
    x = rng.uniform(0, 1, (64, 2, 16, 16)).astype(np.float32)
    x[:3, 1, 0, 0] = 50.0  # 0.01 % of the values: percentile and entropy clip them
    data = {"x": x}
    mod = float_graph(model, graph_inputs(model, 4, {}, data))
    host = tvm.target.Target(x86_target().tvm_target)
    _, out_qp, chosen = calibrate(mod, data, "auto", "uint8", 99.99, host, False)
    assert len(chosen) == len(out_qp) == 2  # the ReLU, then the conv
    return out_qp[0].scale * (255 - out_qp[0].zero_point), chosen[0]


def test_auto_clips_an_outlier_the_consumer_ignores(rng):
    top, choice = _relu_then_conv([1.0, 0.0], rng)
    assert top < 10.0 and choice.observer != "minmax", (top, choice)


def test_auto_keeps_an_outlier_the_consumer_reads(rng):
    top, choice = _relu_then_conv([0.0, 1.0], rng)
    assert top >= 45.0 and choice.observer != "entropy" and choice.sqnr_db > 30.0, (top, choice)


def test_a_given_observer_is_reported_as_given(rng):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (2, 1, 4, 4)},
                       {"y": None})
    data = {"x": rng.standard_normal((4, 1, 4, 4)).astype(np.float32)}
    mod = float_graph(model, graph_inputs(model, 2, {}, data))
    host = tvm.target.Target(x86_target().tvm_target)
    _, _, chosen = calibrate(mod, data, "entropy", "uint8", 99.99, host, False)
    assert [(c.observer, c.sqnr_db) for c in chosen] == [("entropy", None)]


def test_fake_quantize_is_the_integer_graphs_value():
    qp = compute_qparams(-1.0, 3.0, "uint8")
    x = np.array([-2.0, -1.0, 0.0, 0.3, 3.0, 9.0], np.float32)
    want = (np.clip(np.rint(x / qp.scale) + qp.zero_point, 0, 255) - qp.zero_point) * qp.scale
    np.testing.assert_allclose(fake_quantize(x, qp), want, rtol=1e-6)
