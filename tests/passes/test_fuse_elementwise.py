"""fuse_elementwise: a chain of elementwise float ops on one tensor -> one composite function,
and its lookup table (`qcompiler.numerics.lut`, fn "elementwise") against the float chain."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from qcompiler.passes.fuse_elementwise import COMPOSITE, fuse_elementwise
from tvm import relax

from qcompiler.relax_access import bindings, op_name

SHAPE = (1, 4, 6, 6)


def _const(v) -> relax.Constant:  # noqa: ANN001
    return relax.const(np.asarray(v, np.float32))


def _clip(v, lo: float, hi: float) -> relax.Expr:  # noqa: ANN001
    return relax.op.clip(v, relax.prim_value(lo), relax.prim_value(hi))


def _module(build, n_inputs: int = 1, shape: tuple = SHAPE) -> tvm.IRModule:  # noqa: ANN001
    """main(x[, y]) = build(bb, x[, y]); `build` returns one value or a tuple of outputs."""
    bb = relax.BlockBuilder()
    params = [relax.Var(n, relax.TensorType(shape, "float32")) for n in "xy"[:n_inputs]]
    with bb.function("main", params):
        with bb.dataflow():
            out = build(bb, *params)
            out = bb.emit_output(relax.Tuple(list(out)) if isinstance(out, tuple) else out)
        bb.emit_func_output(out)
    return bb.get()


def hardswish_written_out(bb, x):  # noqa: ANN001, ANN201 - x * Clip(x + 3, 0, 6) / 6
    s = bb.emit(_clip(bb.emit(relax.op.add(x, _const(3.0))), 0.0, 6.0))
    return bb.emit(relax.op.divide(bb.emit(relax.op.multiply(x, s)), _const(6.0)))


def silu(bb, x):  # noqa: ANN001, ANN201
    return bb.emit(relax.op.multiply(x, bb.emit(relax.op.sigmoid(x))))


def mish(bb, x):  # noqa: ANN001, ANN201 - as TVM's ONNX frontend imports Mish (opset 18)
    e = bb.emit(relax.op.add(_const(1.0), bb.emit(relax.op.exp(x))))
    return bb.emit(relax.op.multiply(x, bb.emit(relax.op.tanh(bb.emit(relax.op.log(e))))))


def gelu_erf(bb, x):  # noqa: ANN001, ANN201 - x * 0.5 * (1 + erf(x / sqrt 2)), as exported
    e = bb.emit(relax.op.erf(bb.emit(relax.op.divide(x, _const(math.sqrt(2.0))))))
    h = bb.emit(relax.op.multiply(x, _const(0.5)))
    return bb.emit(relax.op.multiply(h, bb.emit(relax.op.add(e, _const(1.0)))))


def per_channel(bb, x):  # noqa: ANN001, ANN201 - exp(x * a[c]) + b[c]
    a = np.linspace(-1.0, 1.0, SHAPE[1], dtype=np.float32).reshape(1, -1, 1, 1)
    e = bb.emit(relax.op.exp(bb.emit(relax.op.multiply(x, _const(a)))))
    return bb.emit(relax.op.add(e, _const(np.arange(SHAPE[1]).reshape(-1, 1, 1))))


MATCHES = [
    (hardswish_written_out, ["relax.add", "relax.clip", "relax.multiply", "relax.divide"]),
    (silu, ["relax.sigmoid", "relax.multiply"]),
    (mish, ["relax.exp", "relax.add", "relax.log", "relax.tanh", "relax.multiply"]),
    (gelu_erf, ["relax.divide", "relax.erf", "relax.multiply", "relax.add",
                "relax.multiply"]),
    (per_channel, ["relax.multiply", "relax.exp", "relax.add"]),
]


def _composites(mod: tvm.IRModule) -> dict:
    return {gv.name_hint: f for gv, f in mod.functions.items()
            if f.attrs and "Composite" in f.attrs}


def _ops(func: relax.Function) -> list[str]:
    return [op_name(b.value) for b in bindings(func)
            if op_name(b.value)]


def _run(mod: tvm.IRModule, *xs: np.ndarray) -> list[np.ndarray]:
    exe = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    out = relax.VirtualMachine(exe, tvm.cpu())["main"](*map(tvm.runtime.tensor, xs))
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


@pytest.mark.parametrize("build,inner", MATCHES, ids=[m[0].__name__ for m in MATCHES])
def test_chain_becomes_one_composite(build, inner, rng):
    before = _module(build)
    after = fuse_elementwise()(before)
    relax.analysis.well_formed(after)
    ((name, func),) = _composites(after).items()
    assert str(func.attrs["Composite"]) == COMPOSITE
    assert _ops(func) == inner
    assert _ops(after["main"]) == [name]  # main: one call, nothing else
    x = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    np.testing.assert_array_equal(_run(after, x)[0], _run(before, x)[0])


def test_near_miss_intermediate_used_elsewhere_stays_unchanged():
    """sigmoid(x) is also an output: fusing x * sigmoid(x) would compute it twice. What is
    left is a lone sigmoid (its own table kernel) and a product of two tensors."""
    def shared(bb, x):  # noqa: ANN001, ANN202
        s = bb.emit(relax.op.sigmoid(x))
        return bb.emit(relax.op.multiply(x, s)), s

    before = _module(shared)
    after = fuse_elementwise()(before)
    assert not _composites(after)
    tvm.ir.assert_structural_equal(after, before)


def test_chain_cut_where_an_intermediate_escapes():
    """x + 3 is also an output: it ends its own group (one table), the product of x and
    clip(x + 3) is a two-tensor multiply, the division starts a new group."""
    def shared(bb, x):  # noqa: ANN001, ANN202
        a = bb.emit(relax.op.add(x, _const(3.0)))
        m = bb.emit(relax.op.multiply(x, bb.emit(_clip(a, 0.0, 6.0))))
        return bb.emit(relax.op.divide(m, _const(6.0))), a

    after = fuse_elementwise()(_module(shared))
    relax.analysis.well_formed(after)
    assert sorted(_ops(f) for f in _composites(after).values()) == [["relax.add"],
                                                                     ["relax.divide"]]
    main = [o for o in _ops(after["main"]) if not o.startswith("fused_elementwise")]
    assert main == ["relax.clip", "relax.multiply"]


def test_near_miss_two_tensor_product_stays_unchanged():
    """An SE gate `x * sigmoid(y)`: two different tensors; the lone sigmoid keeps its kernel."""
    before = _module(lambda bb, x, y: bb.emit(relax.op.multiply(x, bb.emit(
        relax.op.sigmoid(y)))), n_inputs=2)
    tvm.ir.assert_structural_equal(fuse_elementwise()(before), before)


@pytest.mark.parametrize("build", [
    lambda bb, x: bb.emit(relax.op.nn.relu(x)),
    lambda bb, x: bb.emit(_clip(x, 0.0, 6.0)),
    lambda bb, x: bb.emit(relax.op.tanh(x)),
    lambda bb, x: bb.emit(relax.op.multiply(x, _const(np.ones((1, 4, 1, 1))))),
], ids=["relu", "clip", "tanh", "mul_channel"])
def test_near_miss_op_with_its_own_kernel_stays_unchanged(build):
    before = _module(build)
    tvm.ir.assert_structural_equal(fuse_elementwise()(before), before)


def test_per_element_constant_leaves_its_op_out():
    before = _module(lambda bb, x: bb.emit(relax.op.exp(bb.emit(relax.op.add(
        x, _const(np.ones(SHAPE[1:])))))))
    after = fuse_elementwise()(before)
    ((_, func),) = _composites(after).items()
    assert _ops(func) == ["relax.exp"]  # the add stays float: its constant varies per pixel
    assert _ops(after["main"])[0] == "relax.add"


def test_lone_add_of_a_scalar_becomes_a_table():
    """No integer kernel takes `x + c` alone outside a producer: it becomes a table."""
    after = fuse_elementwise()(_module(lambda bb, x: bb.emit(relax.op.add(x, _const(0.5)))))
    ((_, func),) = _composites(after).items()
    assert _ops(func) == ["relax.add"]


# ---- the table of a chain -----------------------------------------------------------------

def _steps(build) -> list[list[dict]]:  # noqa: ANN001
    from qcompiler.lowering.tables import _steps as steps

    after = fuse_elementwise()(_module(build))
    ((_, func),) = _composites(after).items()
    return [steps(func, SHAPE, row) for row in range(SHAPE[1])]


def _attrs(params: list[dict], fn: str = "elementwise", axis: int = 1) -> dict:
    from qcompiler.numerics import lut
    from qcompiler.numerics.qparams import QParams

    return lut.lut_attrs(fn, params, axis, QParams(0.05, 128, "uint8"),
                         QParams(0.04, 10, "uint8"))


def test_written_out_hardswish_table_equals_the_hardswish_table():
    """Bit-compatible with the HardSwish table: same f, same float64 order of operations."""
    from qcompiler.numerics import lut

    (steps, *_) = _steps(hardswish_written_out)
    hs = {"offset": 3.0, "divisor": 6.0, "lo": 0.0, "hi": 6.0}
    np.testing.assert_array_equal(lut.tables(_attrs([{"steps": steps}])),
                                  lut.tables(_attrs([hs], "hardswish")))


@pytest.mark.parametrize("build", [b for b, _ in MATCHES], ids=[m[0].__name__ for m in MATCHES])
def test_table_within_half_lsb_of_the_float_chain(build):
    """Each entry is the float32 chain (TVM, independent of the table's float64 interpreter)
    at the dequantized input, rounded once: within 1/2 LSB (+ float32 noise) inside the
    output range."""
    from qcompiler.numerics import lut

    rows = _steps(build)
    per_row = len({str(r) for r in rows}) > 1
    attrs = _attrs([{"steps": r} for r in rows] if per_row else [{"steps": rows[0]}])
    table = lut.tables(attrs).astype(np.float64)
    q = np.arange(256, dtype=np.float64)
    real = (0.05 * (q - 128)).astype(np.float32)
    x = np.broadcast_to(real, (1, SHAPE[1], 1, 256)).reshape(1, SHAPE[1], 16, 16)
    mod = _module(build, shape=x.shape)
    want = _run(mod, np.ascontiguousarray(x))[0].reshape(SHAPE[1], 256).astype(np.float64)
    got = 0.04 * (table - 10)
    got = np.broadcast_to(got, want.shape)
    inside = (want >= 0.04 * (0 - 10)) & (want <= 0.04 * (255 - 10))
    assert inside.mean() > 0.3
    assert np.abs(got - want)[inside].max() <= 0.5 * 0.04 * (1 + 1e-4) + 1e-5


def test_nan_maps_to_the_output_zero_point():
    """log of a negative input is NaN in float; its table entry is zp_y (real 0)."""
    from qcompiler.numerics import lut

    t = lut.tables(_attrs([{"steps": [{"op": "log", "args": ["%0"]}]}]))
    assert (t[0, :128] == 10).all() and t[0, 200] == 10 + np.rint(math.log(0.05 * 72) / 0.04)


def test_residual_add_composite_of_one_chain_is_inlined(rng):
    """Softplus as TVM imports it, `max(x, 0) + log(1 + exp(-|x|))`: fuse_activation takes the
    add of two tensors for a residual add; both derive from x, so the chain takes it back."""
    from qcompiler.passes.fuse_activation import fuse_activation

    def softplus(bb, x):  # noqa: ANN001, ANN202
        m = bb.emit(relax.op.maximum(x, _const(0.0)))
        e = bb.emit(relax.op.exp(bb.emit(relax.op.negative(bb.emit(relax.op.abs(x))))))
        return bb.emit(relax.op.add(m, bb.emit(relax.op.log(bb.emit(relax.op.add(
            e, _const(1.0)))))))

    before = _module(softplus)
    after = fuse_elementwise()(fuse_activation()(before))
    relax.analysis.well_formed(after)
    ((name, func),) = [(n, f) for n, f in _composites(after).items()
                       if str(f.attrs["Composite"]) == COMPOSITE]
    assert _ops(func) == ["relax.maximum", "relax.abs", "relax.negative", "relax.exp",
                          "relax.add", "relax.log", "relax.add"]
    assert _ops(after["main"]) == [name]
    x = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    np.testing.assert_allclose(_run(after, x)[0], _run(before, x)[0], rtol=1e-6, atol=1e-6)


def test_every_op_the_pass_takes_has_a_table_step():
    from qcompiler.passes.fuse_elementwise import OPS

    from qcompiler.numerics.lut import STEPS

    assert {op.split(".")[-1] for op in OPS} <= set(STEPS)
