"""fold_exact: reshape, permute_dims, isnan and where of constants fold in numpy to exactly
what TVM's FoldConstant computes with LLVM, which then has nothing of them left to build."""
from __future__ import annotations

import numpy as np
import tvm
from qcompiler.passes.fold_constants import fold_constants
from qcompiler.passes.fold_exact import fold_exact
from tvm import relax

from qcompiler.relax_access import bindings, op_name

BUILD = "tirx.build"  # what FoldConstant calls for every PrimFunc it evaluates


def _module() -> tvm.IRModule:
    """The frontend's spellings: a bias reshape, a weight transpose, Clip's NaN guard on its
    bounds; values with NaN, -0.0 and inf; an add of constants (not exact: left to TVM)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    w[0, 0, 0, 0], w[1, 1, 1, 1], w[2, 2, 0, 1] = np.nan, -0.0, np.inf
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 2, 2), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            t = bb.emit(relax.op.permute_dims(relax.const(w), [1, 0, 3, 2]))
            r = bb.emit(relax.op.reshape(t, (1, 4, 3, 4)))
            nan = bb.emit(relax.op.isnan(r))
            lo = bb.emit(relax.op.where(nan, relax.const(np.float32(-np.inf)), r))
            s = bb.emit(relax.op.add(lo, relax.const(np.float32(1.5))))
            y = bb.emit(relax.op.add(relax.op.reshape(x, (1, 4, 1, 4)), s))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _tvm_only(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.transform.Sequential([relax.transform.FoldConstant(),
                                     relax.transform.DeadCodeElimination()])(mod)


def _builds(fold, mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    real = tvm.get_global_func(BUILD)
    count = []
    tvm.register_global_func(BUILD, lambda *a: count.append(1) or real(*a), override=True)
    try:
        return fold(mod), len(count)
    finally:
        tvm.register_global_func(BUILD, real, override=True)


def test_same_module_as_tvm_alone_with_only_the_arithmetic_built():
    mod = _module()
    want, tvm_builds = _builds(_tvm_only, mod)
    got, builds = _builds(fold_constants(), mod)
    tvm.ir.assert_structural_equal(got, want)
    assert got.script(show_meta=True) == want.script(show_meta=True)  # the constants' bits
    assert (tvm_builds, builds) == (5, 1)  # the add of constants only


def test_folds_in_dataflow_blocks_only():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    with bb.function("main", [x]):
        r = bb.emit(relax.op.reshape(relax.const(np.arange(4, dtype=np.float32)), (4,)))
        bb.emit_func_output(bb.emit(relax.op.add(x, r)))
    mod = bb.get()
    assert [op_name(b.value) for b in bindings(fold_exact()(mod)["main"])] == \
        ["relax.reshape", "relax.add"]
