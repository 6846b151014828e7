"""fold_channel_affine: per-channel const chains into the conv before them, else a depthwise."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import relax_main, run_relax
from qcompiler.passes.fold_channel_affine import fold_channel_affine
from tvm import relax

from qcompiler.relax_access import bindings, const_array, op_name

X = relax.TensorType((1, 3, 6, 6), "float32")


def _ops(mod):
    return [op_name(b.value) for b in bindings(mod["main"])
            if not isinstance(b.value, relax.Var)]  # not the output alias


def _build(body):
    return relax_main(body, X)


def _run(mod, x):
    return run_relax(mod, x)


def _c(v):
    return relax.const(np.asarray(v, np.float32))


def _conv_chain(w, bias, scale, shift):
    def body(bb, x):
        y = bb.emit(relax.op.nn.conv2d(x, _c(w), padding=1))
        y = bb.emit(relax.op.add(y, _c(bias)))
        y = bb.emit(relax.op.multiply(y, _c(scale)))
        return bb.emit(relax.op.add(y, _c(shift)))
    return body


def test_folds_mul_add_after_conv_into_weights_and_bias(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias, scale, shift = (rng.standard_normal((1, 4, 1, 1)).astype(np.float32)
                          for _ in range(3))
    before = _build(_conv_chain(w, bias, scale, shift))
    after = fold_channel_affine()(before)
    relax.analysis.well_formed(after)
    assert _ops(after) == ["relax.nn.conv2d", "relax.add"]
    conv = after["main"].body.blocks[0].bindings[0].value
    want = (w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    np.testing.assert_array_equal(const_array(conv.args[1]), want)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(after, x), _run(before, x), rtol=1e-5, atol=1e-5)


def test_decomposed_batch_norm_without_conv_becomes_depthwise(rng):
    mu, sigma, gamma, beta = (rng.uniform(0.5, 2, (3, 1, 1)) for _ in range(4))

    def body(bb, x):
        y = bb.emit(relax.op.subtract(x, _c(mu)))
        y = bb.emit(relax.op.divide(y, _c(sigma)))
        y = bb.emit(relax.op.multiply(y, _c(gamma)))
        y = bb.emit(relax.op.add(y, _c(beta)))
        return bb.emit(relax.op.nn.relu(y))

    before = _build(body)
    after = fold_channel_affine()(before)
    assert _ops(after) == ["relax.nn.conv2d", "relax.add", "relax.nn.relu"]
    conv = after["main"].body.blocks[0].bindings[0].value
    assert int(conv.attrs.groups) == 3 and const_array(conv.args[1]).shape == (3, 1, 1, 1)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(after, x), _run(before, x), rtol=1e-5, atol=1e-5)


def test_conv_with_a_second_user_is_not_folded(rng):
    w = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)

    def body(bb, x):
        c = bb.emit(relax.op.nn.conv2d(x, _c(w), padding=1))
        y = bb.emit(relax.op.multiply(c, _c(rng.standard_normal((1, 3, 1, 1)))))
        y = bb.emit(relax.op.add(y, _c(rng.standard_normal((1, 3, 1, 1)))))
        return bb.emit(relax.op.add(y, c))

    before = _build(body)
    after = fold_channel_affine()(before)
    convs = [b.value for b in after["main"].body.blocks[0].bindings
             if op_name(b.value) == "relax.nn.conv2d"]
    np.testing.assert_array_equal(const_array(convs[0].args[1]), w)  # original weights kept
    assert int(convs[1].attrs.groups) == 3  # the chain became a depthwise conv
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(after, x), _run(before, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("const_shape", [(1, 1, 6, 1), (6,), (3, 6, 6)])
def test_constants_varying_off_the_channel_axis_are_left_alone(const_shape, rng):
    c = rng.standard_normal(const_shape)
    before = _build(lambda bb, x: bb.emit(relax.op.add(bb.emit(relax.op.multiply(x, _c(c))),
                                                       _c(c))))
    after = fold_channel_affine()(before)
    assert _ops(after) == ["relax.multiply", "relax.add"]


def test_lone_multiply_stays_a_multiply(rng):
    before = _build(lambda bb, x: bb.emit(relax.op.multiply(x, _c(rng.standard_normal(
        (1, 3, 1, 1))))))
    assert _ops(fold_channel_affine()(before)) == ["relax.multiply"]
