"""AdaRound: the im2col it learns on, the rounding it learns, and the bundled CNN at 4 bits."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from conftest import BUNDLED_CALIB, BUNDLED_MODEL, compile_and_compare
from qcompiler.targets.x86 import x86_target

from qcompiler.cli import config_options, parse_args
from qcompiler.config import ADAROUND_ITERS, CompileConfig
from qcompiler.errors import QCompileError
from qcompiler.frontend.onnx_import import graph_inputs
from qcompiler.numerics.adaround import adaround, im2col, learn_rounding, weight_scales
from qcompiler.numerics.calibrate import probe_batches, tensor_bindings
from qcompiler.numerics.mixed_precision import weighted_layers, with_weight
from qcompiler.pipeline import float_graph
from qcompiler.relax_access import const_array, op_name


def _direct_conv(x, w, stride, pad, dilation, groups):
    """A loop-over-taps NCHW/OIHW convolution, independent of im2col."""
    top, left, bottom, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, _, h, wd = xp.shape
    o, j, kh, kw = w.shape
    ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, ho, wo))
    for oc in range(o):
        g = oc // (o // groups)
        for c in range(j):
            for a in range(kh):
                for b in range(kw):
                    patch = xp[:, g * j + c, a * dilation[0]:, b * dilation[1]:]
                    y[:, oc] += w[oc, c, a, b] * patch[:, :ho * stride[0]:stride[0],
                                                       :wo * stride[1]:stride[1]]
    return y


@pytest.mark.parametrize("stride,pad,dilation,groups", [
    ((1, 1), (1, 1, 1, 1), (1, 1), 1), ((2, 1), (0, 1, 2, 0), (1, 2), 2),
    ((1, 1), (1, 1, 1, 1), (1, 1), 4)])
def test_im2col_columns_times_weight_rows_are_the_convolution(stride, pad, dilation, groups,
                                                              rng):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((8, 4 // groups, 3, 3))
    cols = im2col(x, (3, 3), list(stride), list(pad), list(dilation), groups)
    want = _direct_conv(x, w, stride, pad, dilation, groups)
    got = np.stack([cols[oc // (8 // groups)] @ w[oc].ravel() for oc in range(8)])
    np.testing.assert_allclose(got.reshape(8, 2, *want.shape[2:]).transpose(1, 0, 2, 3), want,
                               rtol=1e-10, atol=1e-10)  # float64 sums in another order


def test_learned_rounding_beats_nearest_on_correlated_inputs(rng):
    w = rng.standard_normal((8, 16)).astype(np.float32)
    x = rng.standard_normal((400, 4)) @ rng.standard_normal((4, 16))  # strongly correlated
    r = learn_rounding(w, (x.T @ x)[None], 4, True, 300)
    assert r.loss < 0.8 * r.nearest_loss
    scaled = w / weight_scales(w, 4, True)
    ints = r.integers(scaled, 4)
    assert ints.min() >= -7 and ints.max() <= 7
    assert set(np.unique(ints - np.floor(scaled))) <= {0.0, 1.0}  # only up or down
    # it applies only to what it was learned for
    assert r.integers(scaled, 8) is None and r.integers(scaled[:4], 4) is None


def test_adaround_must_be_a_count():
    with pytest.raises(QCompileError, match="adaround must be a whole number of iterations"):
        CompileConfig(adaround=-1)


def _fake_quantized(mod, rounding, per_channel=True):
    """`mod` with every conv/dense weight replaced by its dequantized integers: learned
    rounding where `rounding` has the layer, else rounding to nearest."""
    for pos, _, gv, call in weighted_layers(mod):
        w = const_array(call.args[1]).astype(np.float32)
        rows = w.T if op_name(call) == "relax.matmul" else w
        s = weight_scales(rows, 4, per_channel)
        ints = rounding[pos].integers(rows / s, 4) if pos in rounding else \
            np.clip(np.rint(rows / s), -7, 7)
        deq = (ints * s).astype(np.float32)
        mod = with_weight(mod, gv, call, deq.T if op_name(call) == "relax.matmul" else deq)
    return mod


@pytest.mark.slow
def test_bundled_cnn_at_4_bits_layer_outputs_closer_and_compiled_bit_exact(tmp_path):
    data = {"image": np.load(BUNDLED_CALIB)["image"][:64]}
    model = onnx.load(str(BUNDLED_MODEL))
    mod = float_graph(model, graph_inputs(model, 32, {}, data))
    host = tvm.target.Target(x86_target().tvm_target)
    rounding = adaround(mod, data, host, lambda pos, var: 4, True, 300, progress=False)
    assert len(rounding) == len(weighted_layers(mod)) == 7
    # each layer's output error (in the float network, every layer's weights quantized),
    # measured by running the graphs, not by AdaRound's own loss
    errors = []
    for variant in (mod, _fake_quantized(mod, {}), _fake_quantized(mod, rounding)):
        (_, outs), = list(probe_batches(variant, {"image": data["image"][:32]}, host, False))
        errors.append(outs)
    positions = [pos for pos, *_ in weighted_layers(mod)]
    nearest, learned = ([float(np.mean((e[p] - errors[0][p]) ** 2)) for p in positions]
                        for e in errors[1:])
    assert sum(a < b for a, b in zip(learned, nearest)) >= 5, (learned, nearest)
    assert learned[-1] < 0.8 * nearest[-1]  # the logits
    compiled, lib = compile_and_compare(model, tmp_path, data, weight_bits=4, adaround=300,
                                        bias_correction=True)
    notes = [x["detail"] for x in lib.meta["layers"] if x["op"] in ("conv2d", "dense")]
    assert notes and all(n.startswith("AdaRound") for n in notes), notes
    assert len(tensor_bindings(compiled.float_mod["main"])) == len(errors[0])


@pytest.mark.parametrize("argv,iters", [([], 0), (["--adaround"], ADAROUND_ITERS),
                                        (["--adaround", "50"], 50)])
def test_cli_adaround_flag(argv, iters):
    args = parse_args(["m.onnx", *argv])
    assert config_options(args)["adaround"] == iters
