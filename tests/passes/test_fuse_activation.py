"""fuse_activation: producer [+ bias] [+ ReLU/Clip] -> one composite function."""
from __future__ import annotations

import numpy as np
import tvm
from qcompiler.passes.fuse_activation import fuse_activation
from tvm import relax

from qcompiler.relax_access import bindings, op_name

X = relax.TensorType((1, 3, 6, 6), "float32")


def _module(rng, with_pool_relu=False):
    bb = relax.BlockBuilder()
    x = relax.Var("x", X)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal((1, 4, 1, 1)).astype(np.float32)
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1))
            c = bb.emit(relax.op.add(c, relax.const(b)))
            c = bb.emit(relax.op.clip(c, relax.prim_value(0.0), relax.prim_value(6.0)))
            if with_pool_relu:
                c = bb.emit(relax.op.nn.max_pool2d(c, pool_size=2, strides=2))
                c = bb.emit(relax.op.nn.relu(c))
            out = bb.emit_output(c)
        bb.emit_func_output(out)
    return bb.get()


def _composites(mod):
    return {gv.name_hint: str(f.attrs["Composite"]) for gv, f in mod.functions.items()
            if f.attrs and "Composite" in f.attrs}


def _run(mod, x):
    exe = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def test_conv_bias_clip_become_one_composite(rng):
    before = _module(rng)
    after = fuse_activation()(before)
    relax.analysis.well_formed(after)  # raises on the first violation
    comps = _composites(after)
    assert list(comps.values()) == ["qcompiler.conv2d"]
    (name,) = comps
    inner = [op_name(b.value) for b in bindings(after[name])]
    assert inner == ["relax.nn.conv2d", "relax.add", "relax.clip"]
    main_ops = [op_name(b.value) for b in bindings(after["main"])]
    assert [o for o in main_ops if o] == [name]
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(_run(after, x), _run(before, x))


def test_near_miss_relu_after_pool_stays_unfused(rng):
    after = fuse_activation()(_module(rng, with_pool_relu=True))
    main_ops = [op_name(b.value) for b in bindings(after["main"])]
    assert [o for o in main_ops if o][1:] == ["relax.nn.max_pool2d", "relax.nn.relu"]
    assert list(_composites(after).values()) == ["qcompiler.conv2d"]


def _chain_module(rng, build):  # noqa: ANN001
    """main(x) = build(bb, conv(x)) for a bias-free conv, as ONNX HardSwish/HardSigmoid import."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", X)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1))
            out = bb.emit_output(build(bb, c))
        bb.emit_func_output(out)
    return bb.get()


def _hardswish(bb, c):  # noqa: ANN001, ANN202
    s = bb.emit(relax.op.add(c, relax.const(3.0)))
    s = bb.emit(relax.op.clip(s, relax.prim_value(0.0), relax.prim_value(6.0)))
    s = bb.emit(relax.op.divide(s, relax.const(6.0)))
    return bb.emit(relax.op.multiply(c, s))


def _inner_ops(mod, name):  # noqa: ANN001, ANN202
    return [op_name(b.value) for b in bindings(mod[name])]


def test_hardswish_chain_is_one_composite_not_a_conv_bias(rng):
    """Regression: `x + 3` of a HardSwish once became the bias of a bias-free conv, making a
    composite with two outputs (the conv output was also used by the multiply)."""
    before = _chain_module(rng, _hardswish)
    after = fuse_activation()(before)
    relax.analysis.well_formed(after)
    comps = {v: k for k, v in _composites(after).items()}
    assert set(comps) == {"qcompiler.conv2d", "qcompiler.hardswish"}
    assert _inner_ops(after, comps["qcompiler.conv2d"]) == ["relax.nn.conv2d"]
    assert _inner_ops(after, comps["qcompiler.hardswish"]) == [
        "relax.add", "relax.clip", "relax.divide", "relax.multiply"]
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(_run(after, x), _run(before, x))


def test_near_miss_hardsigmoid_with_per_channel_slope_stays_unfused(rng):
    alpha = rng.standard_normal((1, 4, 1, 1)).astype(np.float32)

    def affine_clip(bb, c):  # noqa: ANN001, ANN202
        s = bb.emit(relax.op.multiply(relax.const(alpha), c))
        s = bb.emit(relax.op.add(s, relax.const(0.5)))
        return bb.emit(relax.op.clip(s, relax.prim_value(0.0), relax.prim_value(1.0)))

    after = fuse_activation()(_chain_module(rng, affine_clip))
    assert list(_composites(after).values()) == ["qcompiler.conv2d"]
    main_ops = [op_name(b.value) for b in bindings(after["main"])]
    assert [o for o in main_ops if o][1:] == ["relax.multiply", "relax.add", "relax.clip"]


def test_near_miss_bias_add_of_a_shared_conv_output_stays_unfused(rng):
    def shared(bb, c):  # noqa: ANN001, ANN202
        b = bb.emit(relax.op.add(c, relax.const(np.ones((1, 4, 1, 1), np.float32))))
        return bb.emit(relax.op.subtract(b, c))

    after = fuse_activation()(_chain_module(rng, shared))
    (name,) = _composites(after)
    assert _inner_ops(after, name) == ["relax.nn.conv2d"]
