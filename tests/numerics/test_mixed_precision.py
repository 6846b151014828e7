"""Per-layer weight bits (`layer_weight_bits`, `--precision FILE.json`) and `--mixed-precision`.

The reference executes whatever integers the weights hold, so a mix of [-7, 7] and [-127, 127]
layers must stay bit-exact; the mixed-precision choice must keep a deliberately sensitive
layer at 8 bits.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import compile_and_compare, make_model, save_calib, save_model
from onnx import helper
from support.qdq import kernel_weights

from qcompiler.cli import main
from qcompiler.config import CompileConfig
from qcompiler.errors import QCompileError


def three_convs(rng: np.random.Generator, outlier: float = 1.0) -> tuple:
    """conv 4->8 -> ReLU -> conv 8->8 -> ReLU -> conv 8->4, 3x3 each, and calibration data.

    `outlier` scales one weight of the middle conv's channel 0, whose output the last conv
    ignores: with per-tensor 4-bit weights it rounds every other weight of that conv to 0."""
    w2 = rng.standard_normal((8, 8, 3, 3)) * 0.3
    w2[0, 0, 1, 1] = outlier
    w3 = rng.standard_normal((4, 8, 3, 3)) * 0.3
    w3[:, 0] = 0.0
    inits = {"w1": rng.standard_normal((8, 4, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
             "w2": w2, "b2": rng.standard_normal(8) * 0.1, "w3": w3,
             "b3": rng.standard_normal(4) * 0.1}
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **conv),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], **conv)]
    model = make_model(nodes, {"x": ("N", 4, 8, 8)}, {"y": None}, inits)
    return model, {"x": rng.standard_normal((16, 4, 8, 8)).astype(np.float32)}


def channel_max(w: np.ndarray) -> np.ndarray:
    return np.abs(w.reshape(w.shape[0], -1)).max(axis=1)


def test_layer_bits_reach_kernels_bit_exact(tmp_path, rng):
    """By index and by name: those layers' weights in [-7, 7], the other at +-127; bit-exact."""
    model, calib = three_convs(rng)
    compiled, lib = compile_and_compare(model, tmp_path, calib, batch=2)
    names = [x["name"] for x in lib.meta["layers"]]
    assert len(names) == 3 and [x["weight_bits"] for x in lib.meta["layers"]] == [8, 8, 8]
    (tmp_path / "mix").mkdir()
    compiled, lib = compile_and_compare(model, tmp_path / "mix", calib, batch=2,
                                        layer_weight_bits={"#0": 4, names[2]: 4})
    assert [x["weight_bits"] for x in lib.meta["layers"]] == [4, 8, 4]
    w1, w2, w3 = kernel_weights(compiled)
    np.testing.assert_array_equal(channel_max(w1), 7)
    np.testing.assert_array_equal(channel_max(w2), 127)
    np.testing.assert_array_equal(channel_max(w3), 7)


@pytest.mark.parametrize("content,message", [
    ("{", r"p\.json: cannot read precision file \(Expecting property name"),
    ('{"bits": {"lv": 4}}', r'p\.json: a precision file is \{"weight_bits": '),
    ('{"weight_bits": {"#0": 5}}', r"layer_weight_bits\['#0'\] must be one of 4, 8, got 5$"),
    ('{"weight_bits": {"#x": 4}}', r"bad layer '#x': give a layer name such as 'lv3' or an "),
    ('{"weight_bits": {"nope": 4}}', r"precision: no layer 'nope' in the model \(conv/dense "
                                     r"layers: \w+, \w+, \w+\)$"),
    ('{"weight_bits": {"#7": 4}}', r"precision: no layer '#7' in the model"),
    (None, r"missing\.json: no such precision file$")])
def test_precision_file_errors(content, message, tmp_path, rng, capsys):
    model, calib = three_convs(rng)
    path = tmp_path / ("p.json" if content is not None else "missing.json")
    if content is not None:
        path.write_text(content)
    out = tmp_path / "out"
    code = main([str(save_model(model, tmp_path)), "--calib", str(save_calib(calib, tmp_path)),
                 "--precision", str(path), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("qcompile: error: ")
    assert re.search(message, err[0]), err[0]
    assert not out.exists() or not any(out.iterdir())


def test_precision_names_a_layer_without_weights(tmp_path, rng):
    """A max pool has no weights to take 4 bits: refused, not ignored."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    model = make_model(nodes, {"x": ("N", 2, 4, 4)}, {"y": None},
                       {"w": rng.standard_normal((3, 2, 1, 1))})
    calib = {"x": rng.standard_normal((4, 2, 4, 4)).astype(np.float32)}
    with pytest.raises(QCompileError, match=r"^precision: layer #1 \(\w+\) is a max_pool2d, "
                                            r"which has no weights: give a conv2d or dense"):
        compile_and_compare(model, tmp_path, calib, layer_weight_bits={"#1": 4})


@pytest.mark.parametrize("options,message", [
    ({"mixed_precision": 1.5}, r"mixed_precision must be in \[0, 1\]"),
    ({"mixed_precision": 0.5, "weight_bits": 4}, r"mixed_precision chooses 4 or 8 bits"),
    ({"mixed_precision": 0.5, "layer_weight_bits": {"#0": 4}}, r"mixed_precision chooses")])
def test_config_rejects_mixed(options, message):
    with pytest.raises(QCompileError, match=f"^{message}"):
        CompileConfig(**options)


def test_mixed_precision_keeps_the_sensitive_layer(tmp_path, rng):
    """Per-tensor weights with an outlier in the middle conv: at 4 bits that conv loses all its
    other weights, so it measures the lowest SQNR and keeps 8 bits; with half the weight
    elements allowed at 8 bits (288 + 576 + 288), the two others take 4. Bit-exact."""
    model, calib = three_convs(rng, outlier=12.0)
    compiled, lib = compile_and_compare(model, tmp_path, calib, batch=2, per_channel=False,
                                        mixed_precision=0.5)
    choice = compiled.precision
    assert [c.elements for c in choice] == [288, 576, 288]
    assert [c.bits for c in choice] == [4, 8, 4]
    assert choice[1].sqnr_db < min(choice[0].sqnr_db, choice[2].sqnr_db) - 10
    assert [x["weight_bits"] for x in lib.meta["layers"]] == [4, 8, 4]
    w1, w2, w3 = kernel_weights(compiled)
    assert np.abs(w1).max() == 7 and np.abs(w2).max() == 127 and np.abs(w3).max() == 7


def test_mixed_precision_budget_edges(tmp_path, rng):
    """Budget 1: every layer stays 8-bit; budget 0: every layer takes 4 bits."""
    from qcompiler.numerics.mixed_precision import choose_bits

    sens = [(0, _Named("a"), "conv2d", 10, 30.0), (1, _Named("b"), "conv2d", 10, 20.0)]
    assert [c.bits for c in choose_bits(sens, 1.0)] == [8, 8]
    assert [c.bits for c in choose_bits(sens, 0.5)] == [4, 8]
    assert [c.bits for c in choose_bits(sens, 0.0)] == [4, 4]


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_summary_prints_the_choice(tmp_path, rng, capsys):
    """`qcompile --mixed-precision`: per layer its index, bits and measured SQNR."""
    model, calib = three_convs(rng, outlier=12.0)
    code = main([str(save_model(model, tmp_path)), "--calib", str(save_calib(calib, tmp_path)),
                 "--per-tensor", "--mixed-precision", "0.5", "--batch", "2",
                 "-o", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "per-tensor 4/8-bit weights (2 of 3 layers 4-bit)" in out
    assert "precision:  576/1152 weights 8-bit (50%, budget 50%)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("    #")]
    assert [(r[0], r[3]) for r in rows] == [("#0", "4-bit"), ("#1", "8-bit"), ("#2", "4-bit")]
    assert float(rows[1][4]) < 5.0  # the outlier layer at 4 bits: about 0 dB
