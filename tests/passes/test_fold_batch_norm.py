"""fold_batch_norm: W' = W*gamma/sqrt(var+eps), b' = (b-mu)*gamma/sqrt(var+eps)+beta."""
from __future__ import annotations

import numpy as np
import tvm
from qcompiler.passes.fold_batch_norm import fold_batch_norm
from tvm import relax

from qcompiler.relax_access import bindings, op_name

X = relax.TensorType((1, 3, 6, 6), "float32")


def _bn_consts(rng, c):
    return [rng.uniform(0.5, 2, c), rng.standard_normal(c), rng.standard_normal(c),
            rng.uniform(0.1, 2, c)]


def _before(w, stats, bias=None, conv_input=True):
    bb = relax.BlockBuilder()
    x = relax.Var("x", X)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1)) if conv_input else x
            if bias is not None:
                y = bb.emit(relax.op.add(y, relax.const(bias)))
            bn = bb.emit(relax.op.nn.batch_norm(y, *[relax.const(s.astype(np.float32))
                                                     for s in stats], axis=1, epsilon=1e-5))
            out = bb.emit_output(relax.TupleGetItem(bn, 0))
        bb.emit_func_output(out)
    return bb.get()


def _expected(w, stats, bias):
    gamma, beta, mu, var = (s.astype(np.float32).astype(np.float64) for s in stats)
    k = gamma / np.sqrt(var + np.float64(np.float32(1e-5)))
    w2 = (w.astype(np.float64) * k.reshape(-1, 1, 1, 1)).astype(np.float32)
    b2 = ((bias.reshape(-1).astype(np.float64) - mu) * k + beta).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", X)
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(w2), padding=1))
            out = bb.emit_output(relax.op.add(c, relax.const(b2.reshape(1, -1, 1, 1))))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, x):
    exe = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def test_folds_conv_bias_bn_into_conv_plus_bias(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal((1, 4, 1, 1)).astype(np.float32)
    stats = _bn_consts(rng, 4)
    before = _before(w, stats, bias)
    after = fold_batch_norm()(before)
    relax.analysis.well_formed(after)  # raises on the first violation
    tvm.ir.assert_structural_equal(after, _expected(w, stats, bias))
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(after, x), _run(before, x), rtol=1e-5, atol=1e-5)


def test_folds_conv_without_bias(rng):
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    stats = _bn_consts(rng, 5)
    after = fold_batch_norm()(_before(w, stats))
    ops = [op_name(b.value) for b in bindings(after["main"])]
    assert "relax.nn.batch_norm" not in ops and "relax.nn.conv2d" in ops
    tvm.ir.assert_structural_equal(after, _expected(w, stats, np.zeros(5, np.float32)))


def test_near_miss_bn_without_conv_is_left_alone(rng):
    before = _before(None, _bn_consts(rng, 3), conv_input=False)
    after = fold_batch_norm()(before)
    tvm.ir.assert_structural_equal(after, before)


def test_folds_grouped_conv_transpose_along_its_output_channels(rng):
    """(Cin, Cout/g, kh, kw) weights: output channel g * Cout/g + o scales w[g-th block, o]."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # groups 2 -> 6 output channels
    stats = _bn_consts(rng, 6)
    x = relax.Var("x", relax.TensorType((1, 4, 5, 5), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            t = bb.emit(relax.op.nn.conv2d_transpose(x, relax.const(w), strides=2, padding=1,
                                                     groups=2))
            bn = bb.emit(relax.op.nn.batch_norm(t, *[relax.const(s.astype(np.float32))
                                                     for s in stats], axis=1, epsilon=1e-5))
            out = bb.emit_output(relax.TupleGetItem(bn, 0))
        bb.emit_func_output(out)
    before = bb.get()
    after = fold_batch_norm()(before)
    relax.analysis.well_formed(after)
    ops = [op_name(b.value) for b in bindings(after["main"])]
    assert ops == ["relax.nn.conv2d_transpose", "relax.add"]
    xs = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(after, xs), _run(before, xs), rtol=1e-4, atol=1e-4)
