"""canonicalize_clip: the frontend's maximum/minimum call_tirs -> one R.clip."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import make_model
from onnx import helper
from qcompiler.passes.canonicalize_clip import canonicalize_clip
from qcompiler.passes.fold_constants import fold_constants
from tvm import relax

from qcompiler.frontend.onnx_import import graph_inputs, import_onnx
from qcompiler.relax_access import bindings, op_name, prim_float


def _ops(mod):
    ops = [op_name(b.value) for b in bindings(mod["main"])]
    return [o for o in ops if o]  # '' is the output alias binding


def _imported(nodes, inits):
    model = make_model(nodes, {"x": (1, 2, 3, 3)}, {"y": None}, inits)
    return fold_constants()(import_onnx(model, graph_inputs(model, None)))


def _run(mod, x):
    exe = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-1.5, 0.25)])
def test_clip_becomes_one_clip(lo, hi):
    before = _imported([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                       {"lo": np.array(lo), "hi": np.array(hi)})
    assert _ops(before).count("relax.call_tir") == 2
    after = canonicalize_clip()(before)
    relax.analysis.well_formed(after)  # raises on the first violation
    assert _ops(after) == ["relax.clip"]
    clip = after["main"].body.blocks[0].bindings[0].value
    assert (prim_float(clip.args[1]), prim_float(clip.args[2])) == (lo, hi)
    x = np.linspace(-8, 8, 18, dtype=np.float32).reshape(1, 2, 3, 3)
    np.testing.assert_array_equal(_run(after, x), _run(before, x))


def test_near_miss_maximum_with_a_tensor_is_left_alone():
    # An elementwise max against a non-scalar constant is not a clip bound.
    from tvm import topi

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 3, 3), "float32"))
    m = relax.const(np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit_te(topi.maximum, x, m))
        bb.emit_func_output(out)
    before = bb.get()
    after = canonicalize_clip()(before)
    tvm.ir.assert_structural_equal(after, before)
    assert "relax.clip" not in _ops(after)
