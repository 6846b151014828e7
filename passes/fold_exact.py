"""Fold the constant calls whose result numpy computes exactly, before TVM's FoldConstant.

TVM's FoldConstant evaluates each constant call by building its PrimFunc with LLVM, a build
per distinct shape: on a torchvision export (a bias reshape per conv, the frontend's NaN
guard on each Clip bound) that is most of the import time. Reshape and permute_dims move
values, where selects them and isnan tests them: numpy gives the same bits, so they become
constants here and FoldConstant, which still runs after, finds nothing of them to build.
Like FoldConstant, only calls in dataflow blocks are folded; a folded binding stays bound to
its constant for FoldConstant to propagate and drop.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from qcompiler.passes import module_pass
from tvm import relax

from qcompiler.relax_access import const_array, dtype_of, is_tensor_const, op_name, shape_of


def _permute(args: list[np.ndarray], call: relax.Call) -> np.ndarray:
    axes = call.attrs.axes
    return np.transpose(args[0], None if axes is None else [int(a) for a in axes])


_EXACT: dict[str, Callable[[list[np.ndarray], relax.Call], np.ndarray]] = {
    "relax.reshape": lambda args, call: args[0].reshape(shape_of(call)),
    "relax.permute_dims": _permute,
    "relax.isnan": lambda args, call: np.isnan(args[0]),
    "relax.where": lambda args, call: np.where(*args),
}
_TENSOR_ARGS = {"relax.reshape": 1}  # the rest of reshape's arguments is its target shape


def _static(call: relax.Call) -> bool:
    """A tensor result of known shape (what FoldConstant needs to fold a call too)."""
    shape = getattr(call.ty, "shape", None) if isinstance(call.ty, relax.TensorType) else None
    return shape is not None and all(isinstance(d, tvm.tirx.IntImm) for d in shape)


@relax.expr_functor.mutator
class _ExactFolder(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        fold = _EXACT.get(op_name(call))
        if fold is None or not self.builder_.current_block_is_dataflow():
            return call
        args = [self._constant(a) for a in call.args[:_TENSOR_ARGS.get(op_name(call))]]
        if any(a is None for a in args) or not _static(call):
            return call
        value = np.array(fold(args, call), dtype=dtype_of(call), order="C")
        if value.shape != shape_of(call):
            return call
        return relax.const(value, dtype_of(call))

    def _constant(self, expr: relax.Expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        return const_array(expr) if is_tensor_const(expr) else None


def fold_exact() -> tvm.transform.Pass:
    @module_pass("qcompiler.fold_exact")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        folder = _ExactFolder(mod)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                folder.builder_.update_func(gv, folder.visit_expr(func))
        return folder.builder_.get()

    return transform
