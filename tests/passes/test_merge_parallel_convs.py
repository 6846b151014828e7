"""merge_parallel_convs: summed convs of one input (unmerged rep blocks) -> one conv."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import relax_main, run_relax
from qcompiler.passes.merge_parallel_convs import merge_parallel_convs
from tvm import relax

from qcompiler.relax_access import bindings, const_array, op_name


def _ops(mod):
    return [op_name(b.value) for b in bindings(mod["main"])
            if not isinstance(b.value, relax.Var)]


def _convs(mod):
    return [b.value for b in bindings(mod["main"]) if op_name(b.value) == "relax.nn.conv2d"]


def _c(v):
    return relax.const(np.asarray(v, np.float32))


def _branch(bb, x, rng, shape, bias=True, **attrs):
    y = bb.emit(relax.op.nn.conv2d(x, _c(rng.standard_normal(shape)), **attrs))
    if bias:
        y = bb.emit(relax.op.add(y, _c(rng.standard_normal((1, shape[0], 1, 1)))))
    return y


def _sum(bb, ys):
    out = ys[0]
    for y in ys[1:]:
        out = bb.emit(relax.op.add(out, y))
    return out


def _check_same_function(before, after, x_shape, rng):
    x = rng.standard_normal(x_shape).astype(np.float32)
    np.testing.assert_allclose(run_relax(after, x), run_relax(before, x), rtol=1e-4,
                               atol=1e-4)


def test_repvgg_block_becomes_one_conv(rng):
    """3x3 + 1x1 + identity batch norm (a depthwise 1x1, as fold_channel_affine leaves it),
    summed, then ReLU: one 3x3 conv with the summed bias, the same function."""
    c = 8

    def body(bb, x):
        ys = [_branch(bb, x, rng, (c, c, 3, 3), padding=1),
              _branch(bb, x, rng, (c, c, 1, 1)),
              _branch(bb, x, rng, (c, 1, 1, 1), groups=c)]
        return bb.emit(relax.op.nn.relu(_sum(bb, ys)))

    before = relax_main(body, relax.TensorType((1, c, 10, 10), "float32"))
    after = merge_parallel_convs()(before)
    relax.analysis.well_formed(after)
    assert _ops(after) == ["relax.nn.conv2d", "relax.add", "relax.nn.relu"]
    conv = _convs(after)[0]
    assert int(conv.attrs.groups) == 1 and const_array(conv.args[1]).shape == (c, c, 3, 3)
    assert [int(p) for p in conv.attrs.padding] == [1, 1, 1, 1]
    _check_same_function(before, after, (1, c, 10, 10), rng)


@pytest.mark.parametrize("stride, size", [(1, 9), (2, 10), (2, 11)])
def test_asymmetric_kernels_and_strides_line_up(stride, size, rng):
    """ACNet's 3x3 + 1x3 + 3x1 (each centred by its own padding), strided: one 3x3."""
    def body(bb, x):
        ys = [_branch(bb, x, rng, (6, 4, 3, 3), strides=stride, padding=1),
              _branch(bb, x, rng, (6, 4, 1, 3), bias=False, strides=stride,
                      padding=(0, 1, 0, 1)),
              _branch(bb, x, rng, (6, 4, 3, 1), strides=stride, padding=(1, 0, 1, 0))]
        return _sum(bb, ys)

    before = relax_main(body, relax.TensorType((1, 4, size, size), "float32"))
    after = merge_parallel_convs()(before)
    assert len(_convs(after)) == 1
    _check_same_function(before, after, (1, 4, size, size), rng)


def test_depthwise_rep_block_stays_depthwise(rng):
    """MobileOne / PP-LCNetV3: depthwise kxk branches, a depthwise 1x1, an identity."""
    c = 6

    def body(bb, x):
        ys = [_branch(bb, x, rng, (c, 1, 3, 3), groups=c, padding=1) for _ in range(3)]
        ys += [_branch(bb, x, rng, (c, 1, 1, 1), groups=c) for _ in range(2)]
        return _sum(bb, ys)

    before = relax_main(body, relax.TensorType((1, c, 8, 8), "float32"))
    after = merge_parallel_convs()(before)
    convs = _convs(after)
    assert len(convs) == 1 and int(convs[0].attrs.groups) == c
    _check_same_function(before, after, (1, c, 8, 8), rng)


def test_branches_that_do_not_merge(rng):
    """Left as they are: a depthwise 3x3 beside a full 1x1 (the merged full 3x3 would cost
    more), a branch read twice, and convs of different inputs or strides."""
    c = 4

    def body(bb, x):
        dw = _branch(bb, x, rng, (c, 1, 3, 3), groups=c, padding=1)
        full = _branch(bb, x, rng, (c, c, 1, 1))
        a = bb.emit(relax.op.add(dw, full))
        twice = _branch(bb, x, rng, (c, c, 1, 1))
        b = bb.emit(relax.op.add(_branch(bb, x, rng, (c, c, 3, 3), padding=1), twice))
        b = bb.emit(relax.op.multiply(b, twice))
        other = bb.emit(relax.op.nn.relu(x))
        d = bb.emit(relax.op.add(_branch(bb, x, rng, (c, c, 1, 1)),
                                 _branch(bb, other, rng, (c, c, 1, 1))))
        s = bb.emit(relax.op.add(_branch(bb, x, rng, (c, c, 1, 1), strides=2),
                                 _branch(bb, x, rng, (c, c, 5, 5))))
        return bb.emit(relax.op.concat([a, b, d, relax.op.image.resize2d(s, (8, 8))], 1))

    before = relax_main(body, relax.TensorType((1, c, 8, 8), "float32"))
    after = merge_parallel_convs()(before)
    assert len(_convs(after)) == len(_convs(before)) == 8
    _check_same_function(before, after, (1, c, 8, 8), rng)


def test_identity_beside_a_full_conv_of_small_taps_stays_apart(rng):
    """A trained RepVGG's magnitudes: 3x3 taps ~0.05, the identity's ~1.0. Merged, the
    identity would set each channel's int8 step and the 3x3 taps would round ~20x coarser:
    the 3x3 and the 1x1 merge (similar taps), the identity stays its own depthwise conv."""
    c = 16

    def conv(bb, x, w, **attrs):
        return bb.emit(relax.op.nn.conv2d(x, _c(w), **attrs))

    def body(bb, x):
        ys = [conv(bb, x, rng.standard_normal((c, c, 3, 3)) * 0.05, padding=1),
              conv(bb, x, rng.standard_normal((c, c, 1, 1)) * 0.05),
              conv(bb, x, rng.uniform(0.8, 1.2, (c, 1, 1, 1)), groups=c)]
        return _sum(bb, ys)

    before = relax_main(body, relax.TensorType((1, c, 6, 6), "float32"))
    after = merge_parallel_convs()(before)
    assert sorted(int(cv.attrs.groups) for cv in _convs(after)) == [1, c]
    _check_same_function(before, after, (1, c, 6, 6), rng)
