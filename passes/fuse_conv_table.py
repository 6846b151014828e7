"""Fuse a conv with the one-row table that takes its output (a written-out hard-swish, SiLU,
sigmoid...), on targets whose dot-product rule looks the table up in the conv's epilogue
(`DotProduct.fuses_tables`: ARM `sdot`, Hexagon `vrmpy`, x86 AVX2): one `conv2d_lut` kernel
instead of the conv and a `lut` kernel, so the activation costs no pass of its own over
memory and no tensor in the workspace.

    y = conv2d(x, w, bias, m0, shift); z = lut(y, table)   ->   z = conv2d_lut(x, w, ..., table)

The fused kernel's attributes are the conv's plus `lut` (the table's) and `conv_tensor` (the
conv's output, which `Reference.run_all` still gives for per-layer reports). Its portable form
(`kernels.conv2d`) computes the same numbers, so a rule that declines leaves it correct. On x86
with AVX-512 VNNI, `plan_layout` fuses them in the blocked layout instead.

Runs on the quantized graph, before `apply_schedules`. Fuses only where the conv's output has
no other reader, its weights and requantize operands are constants, and the first rule that
takes the conv is one that fuses tables (so no other kernel choice changes).
"""
from __future__ import annotations

import json

import tvm
from qcompiler.passes import module_pass
from qcompiler.passes.plan_layout import uses_blocked_layout
from qcompiler.schedules import rules_for
from qcompiler.schedules.dot_product import DotProduct
from qcompiler.targets.target import Target
from tvm import relax

from qcompiler import kernels
from qcompiler.numerics.weight_layout import canonical
from qcompiler.relax_access import (
    bindings,
    const_array,
    is_const,
    op_name,
    substitute,
    with_span,
)


def fuse_conv_table(target: Target) -> tvm.transform.Pass:
    """The pass (a no-op where no rule of the target fuses tables)."""
    rules = [] if uses_blocked_layout(target) else rules_for(target)

    @module_pass("qcompiler.fuse_conv_table")
    def run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not any(getattr(r, "fuses_tables", False) for r in rules):
            return mod
        fused = _fusions(mod, rules)
        return _rebuilt(mod, fused) if fused else mod

    return run


def _kernel(mod: tvm.IRModule, value: relax.Expr) -> tuple | None:
    """(op, attrs, PrimFunc, args) of a portable kernel's call, else None."""
    if not (isinstance(value, relax.Call) and op_name(value) == "relax.call_tir"):
        return None
    func = mod[value.args[0]]
    if not isinstance(func, tvm.tirx.PrimFunc) or "qcompiler.op" not in func.attrs \
            or "qcompiler.schedule" in func.attrs:
        return None
    return (str(func.attrs["qcompiler.op"]), json.loads(str(func.attrs["qcompiler.attrs"])),
            func, list(value.args[1].fields))


def _takes_table(rules: list, attrs: dict, x_dtype: str) -> bool:
    """Whether the first rule that takes this conv fuses tables."""
    rule = next((r for r in rules if r.applies("conv2d", attrs, x_dtype)), None)
    return isinstance(rule, DotProduct) and rule.fuses_tables


def _fusions(mod: tvm.IRModule, rules: list) -> dict:
    """{table's var: (conv's var, fused PrimFunc, operands)} for every fusable pair."""
    func = mod["main_int"]
    readers: dict = {}
    for value in [*(b.value for b in bindings(func)), func.body.body]:
        for v in relax.analysis.free_vars(value):
            readers[v] = readers.get(v, 0) + 1
    convs = {}
    out = {}
    for b in bindings(func):
        kernel = _kernel(mod, b.value)
        if kernel is None:
            continue
        op, attrs, prim, args = kernel
        if op == "conv2d" and isinstance(b.var, relax.DataflowVar) and readers[b.var] == 1 \
                and isinstance(args[0], relax.Var) and all(is_const(a) for a in args[1:5]) \
                and _takes_table(rules, attrs, str(prim.params[0].dtype)):
            convs[b.var] = (b.value, attrs, prim, args)
        elif op == "lut" and len(args) == 2 and args[0] in convs \
                and int(prim.params[1].shape[0]) == 1:
            conv_call, conv_attrs, conv_prim, conv_args = convs[args[0]]
            x = conv_prim.params[0]
            fused_attrs = {**conv_attrs, "lut": attrs, "conv_tensor": args[0].name}
            w_shape = canonical(const_array(conv_args[1]), conv_attrs).shape
            fused = kernels.conv2d(tuple(int(d) for d in x.shape), str(x.dtype), w_shape,
                                   fused_attrs)
            name = f"{conv_call.args[0].name_hint}_lut"
            out[b.var] = (args[0], fused.with_attr("global_symbol", name), [*conv_args, args[1]])
    return out


def _rebuilt(mod: tvm.IRModule, fused: dict) -> tvm.IRModule:
    """The module with each pair's two calls replaced by one call of the fused kernel (the
    table's variable, name and type kept); kernels no longer called are dropped."""
    bb = relax.BlockBuilder()
    gmap: dict = {}

    def global_of(gv: relax.GlobalVar) -> relax.GlobalVar:
        if gv not in gmap:
            gmap[gv] = bb.add_func(mod[gv], gv.name_hint)
        return gmap[gv]

    def emit(name: str, func: relax.Function, skip: set, replace: dict) -> relax.GlobalVar:
        env: dict = {}
        with bb.function(name, list(func.params), dict(func.attrs) if func.attrs else None):
            with bb.dataflow():
                for b in bindings(func):
                    if b.var in skip:
                        continue
                    value = replace[b.var](env) if b.var in replace else b.value
                    for gv in relax.analysis.all_global_vars(value):
                        if gv not in env and (gv in gmap or gv in mod.functions):
                            env[gv] = global_of(gv)
                    value = substitute(value, env)
                    env[b.var] = bb.emit(value, b.var.name) \
                        if isinstance(b.var, relax.DataflowVar) \
                        else bb.emit_output(value, b.var.name)
            bb.emit_func_output(substitute(func.body.body, env))
        return bb.get().get_global_var(name)

    table_calls = {b.var: b.value for b in bindings(mod["main_int"]) if b.var in fused}

    def call(var: relax.Var, prim: tvm.tirx.PrimFunc, operands: list):
        def make(env: dict) -> relax.Expr:
            gv = bb.add_func(prim, str(prim.attrs["global_symbol"]))
            return with_span(relax.call_tir(gv, [substitute(o, env) for o in operands],
                                            var.ty), table_calls[var])  # (its ONNX node)
        return make

    replace = {var: call(var, prim, operands) for var, (_, prim, operands) in fused.items()}
    skip = {conv for conv, _, _ in fused.values()}
    new_int = emit("main_int", mod["main_int"], skip, replace)
    gmap[mod.get_global_var("main_int")] = new_int
    emit("main", mod["main"], set(), {})
    out = bb.get()
    return tvm.IRModule(dict(out.functions.items()), attrs=mod.attrs)

