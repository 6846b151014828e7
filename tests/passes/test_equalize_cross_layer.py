"""equalize_cross_layer: conv -> ReLU -> conv pairs rescaled, the float function unchanged."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import relax_main, run_relax
from qcompiler.passes.equalize_cross_layer import equalize_cross_layer, find_pairs
from tvm import relax

from qcompiler.relax_access import bindings, const_array, op_name

X = relax.TensorType((2, 4, 8, 8), "float32")


def _c(v):
    return relax.const(np.asarray(v, np.float32))


def _build(body):
    return relax_main(body, X)


def _run(mod, x):
    return run_relax(mod, x)


def _convs(mod):
    return [const_array(b.value.args[1]) for b in bindings(mod["main"])
            if op_name(b.value) == "relax.nn.conv2d"]


def _ops(mod):
    return [op_name(b.value) for b in bindings(mod["main"])]


def _skewed(rng, shape, axis):
    """Weights whose ranges along `axis` span three orders of magnitude."""
    w = rng.standard_normal(shape)
    scale = np.logspace(-1.5, 1.5, shape[axis])
    return (w * scale.reshape([-1 if i == axis else 1 for i in range(len(shape))]))


def _chain(w1, b1, w2, act="relu", pool=False, groups1=1):
    def body(bb, x):
        y = bb.emit(relax.op.nn.conv2d(x, _c(w1), padding=1, groups=groups1))
        y = bb.emit(relax.op.add(y, _c(b1.reshape(1, -1, 1, 1))))
        if act == "relu":
            y = bb.emit(relax.op.nn.relu(y))
        else:
            y = bb.emit(relax.op.clip(y, 0.0, 6.0))
        if pool:
            y = bb.emit(relax.op.nn.max_pool2d(y, (2, 2), (2, 2)))
        return bb.emit(relax.op.nn.conv2d(y, _c(w2)))
    return body


def _range_ratio(r):
    return float(r.max() / r.min())


@pytest.mark.parametrize("depthwise,pool", [(False, False), (True, False), (False, True)],
                         ids=["conv-conv", "depthwise-pointwise", "conv-pool-conv"])
def test_pair_is_equalized_and_function_kept(depthwise, pool, rng):
    c = 4
    w1 = _skewed(rng, (c, 1 if depthwise else c, 3, 3), 0)
    b1 = rng.standard_normal(c)
    w2 = rng.standard_normal((6, c, 1, 1))
    before = _build(_chain(w1, b1, w2, pool=pool, groups1=c if depthwise else 1))
    after = equalize_cross_layer()(before)
    relax.analysis.well_formed(after)
    assert _ops(after) == _ops(before)
    (v1, v2), (n1, n2) = _convs(before), _convs(after)
    s = np.abs(v1).max(axis=(1, 2, 3)) / np.abs(n1).max(axis=(1, 2, 3))  # the applied scales
    np.testing.assert_allclose(n2, v2 * s.reshape(1, -1, 1, 1), rtol=1e-5)
    bias = [const_array(b.value.args[1]) for b in after["main"].body.blocks[0].bindings
            if op_name(b.value) == "relax.add"][0]
    np.testing.assert_allclose(bias.reshape(-1), b1 / s, rtol=1e-5)
    r1, r2 = np.abs(n1).max(axis=(1, 2, 3)), np.abs(n2).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-5)  # per channel: the two ranges now equal
    assert _range_ratio(r1) < _range_ratio(np.abs(v1).max(axis=(1, 2, 3))) / 10
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    want = _run(before, x)
    np.testing.assert_allclose(_run(after, x), want, rtol=1e-4,  # float32 rounding of W', b'
                               atol=1e-4 * np.abs(want).max())


def test_chain_of_three_converges(rng):
    c = 4
    ws = [_skewed(rng, (c, c, 3, 3), 0), _skewed(rng, (c, c, 1, 1), 1), rng.standard_normal(
        (c, c, 1, 1))]

    def body(bb, x):
        y = x
        for i, w in enumerate(ws):
            y = bb.emit(relax.op.nn.conv2d(y, _c(w), padding=1 if i == 0 else 0))
            if i < 2:
                y = bb.emit(relax.op.nn.relu(y))
        return y

    before = _build(body)
    assert len(find_pairs(before["main"])) == 2
    after = equalize_cross_layer()(before)
    n = _convs(after)
    for a, b in ((n[0], n[1]), (n[1], n[2])):  # every pair equalized at the fixed point
        np.testing.assert_allclose(np.abs(a).max(axis=(1, 2, 3)), np.abs(b).max(axis=(0, 2, 3)),
                                   rtol=1e-4)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    want = _run(before, x)
    np.testing.assert_allclose(_run(after, x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_relu6_between_is_left_alone(rng):
    """Clip(0, 6) is not positive-homogeneous: its bound would have to become 6 / s[i]."""
    c = 4
    before = _build(_chain(_skewed(rng, (c, c, 3, 3), 0), rng.standard_normal(c),
                           rng.standard_normal((6, c, 1, 1)), act="clip6"))
    assert find_pairs(before["main"]) == []
    after = equalize_cross_layer()(before)
    for a, b in zip(_convs(after), _convs(before)):
        np.testing.assert_array_equal(a, b)


def test_intermediate_with_a_second_use_is_left_alone(rng):
    c = 4
    w1, w2 = _skewed(rng, (c, c, 3, 3), 0), rng.standard_normal((c, c, 3, 3))

    def body(bb, x):
        r = bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(x, _c(w1), padding=1))))
        y = bb.emit(relax.op.nn.conv2d(r, _c(w2), padding=1))
        return bb.emit(relax.op.add(y, r))  # a residual: r is read outside the pair

    before = _build(body)
    assert find_pairs(before["main"]) == []
    after = equalize_cross_layer()(before)
    np.testing.assert_array_equal(_convs(after)[0], w1.astype(np.float32))


def test_grouped_second_conv_is_left_alone(rng):
    """conv -> relu -> depthwise: scaling its input channel i would scale its output i too."""
    c = 4

    def body(bb, x):
        y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(
            x, _c(_skewed(rng, (c, c, 3, 3), 0)), padding=1))))
        return bb.emit(relax.op.nn.conv2d(y, _c(rng.standard_normal((c, 1, 3, 3))), groups=c))

    assert find_pairs(_build(body)["main"]) == []
