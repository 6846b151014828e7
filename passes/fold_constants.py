"""Evaluate every subgraph whose inputs are all constants (bias reshapes, weight transposes,
the frontend's NaN guards on Clip bounds), so later patterns see plain constants.

TVM does this well but builds every call it folds with LLVM; `fold_exact` folds the
calls numpy computes exactly first. The pass exists here so the pipeline names it and tests
pin it.
"""
from __future__ import annotations

import tvm
from qcompiler.passes.fold_exact import fold_exact
from tvm import relax


def fold_constants() -> tvm.transform.Pass:
    return tvm.transform.Sequential(
        [fold_exact(), relax.transform.FoldConstant(), relax.transform.DeadCodeElimination()],
        name="qcompiler.fold_constants")
