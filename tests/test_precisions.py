"""Weight and activation precisions: 4/8-bit weights x 8/16-bit activations, bit-exact on x86.

4-bit weights are symmetric in [-7, 7] per channel (stored two per byte); 16-bit activations are
int16 with zero point 0. Accumulation stays int32, so the compile-time bound
`taps * |x - zp| * |w| + |b| < 2^31` decides which layers 16-bit activations can take.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import compile_and_compare, make_model
from onnx import helper
from support.qdq import kernel_weights

from qcompiler.config import CompileConfig
from qcompiler.errors import QCompileError


def conv_gemm(rng: np.random.Generator, cin: int = 4) -> tuple:
    """conv 3x3 (+bias, ReLU) -> flatten -> gemm, and calibration data."""
    inits = {"w": rng.standard_normal((6, cin, 3, 3)) * 0.3, "b": rng.standard_normal(6),
             "wg": rng.standard_normal((5, 6 * 6 * 6)) * 0.1, "bg": rng.standard_normal(5)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    model = make_model(nodes, {"x": ("N", cin, 6, 6)}, {"y": None}, inits)
    return model, {"x": rng.standard_normal((8, cin, 6, 6)).astype(np.float32)}


@pytest.mark.parametrize("weight_bits,activation_bits", [(4, 8), (8, 8), (8, 16), (4, 16)])
def test_precision_combinations(weight_bits, activation_bits, tmp_path, rng):
    model, calib = conv_gemm(rng)
    compiled, lib = compile_and_compare(model, tmp_path, calib, weight_bits=weight_bits,
                                        activation_bits=activation_bits)
    dtype = "int16" if activation_bits == 16 else "uint8"
    for spec in lib.inputs + lib.outputs:
        assert spec["dtype"] == dtype
        assert activation_bits == 8 or spec["zero_point"] == 0
    q = 2 ** (weight_bits - 1) - 1
    for w in kernel_weights(compiled):
        per_channel_max = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        np.testing.assert_array_equal(per_channel_max, q)  # every channel reaches +-Q
    assert [x["status"] for x in lib.meta["layers"]] == ["integer"] * 3


def test_int16_accumulator_bound_refuses(tmp_path, rng):
    """576 taps x 32768 x 127 > 2^31: refused with 8-bit weights, fine with 4-bit ones."""
    model, calib = conv_gemm(rng, cin=64)
    with pytest.raises(QCompileError, match=r"^layer Conv_0 \(Conv\): the int32 "
                                            r"accumulator could overflow \(576 taps x \|x - zp\| "
                                            r"<= 32768 x \|w\| <= 127"):
        compile_and_compare(model, tmp_path, calib, activation_bits=16)
    compile_and_compare(model, tmp_path, calib, n_checks=1, weight_bits=4, activation_bits=16)


@pytest.mark.parametrize("field,value,message", [
    ("weight_bits", 5, "weight_bits must be one of 4, 8, got 5"),
    ("activation_bits", 32, "activation_bits must be one of 8, 16, got 32")])
def test_config_rejects_bits(field, value, message):
    with pytest.raises(QCompileError, match=f"^{message}$"):
        CompileConfig(**{field: value})


def test_int16_qparams_are_symmetric():
    from qcompiler.numerics.qparams import compute_qparams

    qp = compute_qparams(-1.0, 3.0, "int16")
    assert qp.zero_point == 0 and qp.scale == np.float32(3.0 / 32767)
    assert compute_qparams(0.0, 0.0, "int16").zero_point == 0
