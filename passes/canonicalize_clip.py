"""Turn the ONNX frontend's Clip lowering back into one `R.clip`.

The frontend emits Clip as `call_tir(minimum, (call_tir(maximum, (x, lo)), hi))`, two opaque
PrimFuncs. Rewritten:  `maximum(x, lo) -> clip(x, lo, +inf)`, `minimum(x, hi) -> clip(x, -inf,
hi)`, and `clip(clip(x, a, b), c, d) -> clip(x, max(a, c), min(b, d))`, so that activation
fusion matches a single op. A call_tir whose PrimFunc is anything but a plain elementwise
max/min against a scalar constant is left alone.
"""
from __future__ import annotations

import math

import numpy as np
import tvm
from qcompiler.passes import module_pass
from tvm import relax, tirx

from qcompiler.relax_access import const_array, is_const, prim_float, with_span


def _elementwise_extremum(func: tirx.PrimFunc) -> str | None:
    """'max' or 'min' if `func` is `out[i] = max/min(a[i], b[()])`, else None."""
    found: list[str] = []
    stack: list[object] = [func.body]
    while stack:  # TIR has no Python post-order visitor in 0.27; walk the statement tree
        node = stack.pop()
        if isinstance(node, tirx.BufferStore):
            v = node.value
            found.append("max" if isinstance(v, tirx.Max) else
                         "min" if isinstance(v, tirx.Min) else "other")
        elif isinstance(node, tirx.SeqStmt):
            stack.extend(node.seq)
        else:
            for field in ("block", "body"):
                child = getattr(node, field, None)
                if child is not None:
                    stack.append(child)
    return found[0] if len(found) == 1 and found[0] != "other" else None


def _scalar(expr: relax.Expr) -> float | None:
    if is_const(expr) and const_array(expr).size == 1:
        return float(const_array(expr).reshape(()))
    return None


def _clip_bounds(call: relax.Call) -> tuple[float, float] | None:
    if call.op == tvm.ir.Op.get("relax.clip"):
        return prim_float(call.args[1]), prim_float(call.args[2])
    return None


@relax.expr_functor.mutator
class _ClipRewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod = mod

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op == tvm.ir.Op.get("relax.call_tir"):
            gv, args = call.args[0], call.args[1].fields
            kind = _elementwise_extremum(self.mod[gv]) if gv in self.mod.functions else None
            bound = _scalar(args[1]) if len(args) == 2 else None
            if kind is None or bound is None or not np.isfinite(bound):
                return call
            lo, hi = (bound, math.inf) if kind == "max" else (-math.inf, bound)
            call = with_span(relax.op.clip(args[0], relax.prim_value(lo), relax.prim_value(hi)),
                             call)  # the span names its ONNX node (`frontend.node_names`)
        bounds = _clip_bounds(call)
        if bounds is not None and isinstance(call.args[0], relax.Var):
            inner = self.lookup_binding(call.args[0])
            inner_bounds = _clip_bounds(inner) if isinstance(inner, relax.Call) else None
            if inner_bounds is not None:
                lo, hi = max(bounds[0], inner_bounds[0]), min(bounds[1], inner_bounds[1])
                call = with_span(relax.op.clip(inner.args[0], relax.prim_value(lo),
                                               relax.prim_value(hi)), call)
        return call


def canonicalize_clip() -> tvm.transform.Pass:
    @module_pass("qcompiler.canonicalize_clip")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        rewriter = _ClipRewriter(mod)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        out = rewriter.builder_.get()
        return relax.transform.DeadCodeElimination()(out)

    return transform
