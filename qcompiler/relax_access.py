"""Reading values out of Relax expressions (TVM 0.27 spellings in one place)."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tvm
from tvm import relax


def is_const(expr: object) -> bool:
    return isinstance(expr, tvm.ir.expr.Constant)


def is_tensor_const(expr: object) -> bool:
    """A tensor constant (in 0.27 a PrimValue such as clip's bound is also a `Constant`)."""
    return isinstance(expr, tvm.ir.expr.GenericConst)


def const_array(expr: relax.Expr) -> np.ndarray:
    """The numpy value of a Relax constant."""
    return expr.value.numpy()


def prim_float(expr: object) -> float:
    """The number inside a Relax PrimValue argument (a FloatImm/IntImm in TVM 0.27)."""
    while hasattr(expr, "value"):
        expr = expr.value
    return float(expr)


def int_list(values: object) -> list[int]:
    """An attribute Array of IntImm as Python ints."""
    return [int(v) for v in values]


def shape_of(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def dtype_of(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


def op_name(call: relax.Call) -> str:
    """'relax.nn.conv2d' for an op call, the GlobalVar name for a function call, else ''."""
    op = getattr(call, "op", None)
    if isinstance(op, tvm.ir.Op):
        return str(op.name)
    if isinstance(op, relax.GlobalVar):
        return str(op.name_hint)
    return ""


def is_const_nchw_conv(expr: object) -> bool:
    """A conv2d with constant weights in the NCHW / OIHW layout: one the float passes rewrite."""
    if op_name(expr) != "relax.nn.conv2d" or not is_const(expr.args[1]):
        return False
    a = expr.attrs
    return (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) == \
        ("NCHW", "OIHW", "NCHW")


def channel_vector(c: np.ndarray, shape: tuple) -> np.ndarray | None:
    """`c` as a float64 length-C vector if it broadcasts against NCHW `shape` along the
    channel axis only (a per-channel bias or scale), else None."""
    if len(shape) != 4 or c.ndim > 4:
        return None
    full = (1,) * (4 - c.ndim) + c.shape
    if full[0] != 1 or full[2] != 1 or full[3] != 1 or full[1] not in (1, shape[1]):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (shape[1],)).copy()


def with_span(call: relax.Call, source: relax.Expr | str | None) -> relax.Call:
    """`call` with the span of `source` (or one naming it): a rewrite keeps the ONNX node of
    the call it replaces, which is how layers are named (`frontend.node_names`)."""
    if isinstance(source, str):
        source = tvm.ir.Span(tvm.ir.SourceName(source), 0, 0, 0, 0)
    elif source is not None:
        source = source.span
    return relax.Call(call.op, call.args, call.attrs, call.ty_args, source)


def substitute(expr: relax.Expr, env: dict) -> relax.Expr:
    """`expr` (A-normal form: a call, tuple or projection of vars, constants and global vars)
    with the Vars and GlobalVars of `env` replaced."""
    if isinstance(expr, (relax.Var, relax.GlobalVar)):
        return env.get(expr, expr)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([substitute(f, env) for f in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(substitute(expr.tuple_value, env), expr.index)
    if isinstance(expr, relax.Call):
        return relax.Call(substitute(expr.op, env) if isinstance(expr.op, relax.GlobalVar)
                          else expr.op, [substitute(a, env) for a in expr.args], expr.attrs,
                          expr.ty_args, expr.span)  # the span: its ONNX node (`node_names`)
    return expr


def bindings(func: relax.Function) -> Iterator[relax.Binding]:
    """Every binding of a function's body, in order, across its blocks."""
    for blk in func.body.blocks:
        yield from blk.bindings


def use_counts(func: relax.Function) -> dict[relax.Var, int]:
    """Each variable -> how many bindings (and the function's result) read it."""
    uses: dict = {}
    for b in bindings(func):
        for v in relax.analysis.free_vars(b.value):
            uses[v] = uses.get(v, 0) + 1
    for v in relax.analysis.free_vars(func.body.body):
        uses[v] = uses.get(v, 0) + 1
    return uses


def bound_values(func: relax.Function) -> dict[relax.Var, relax.Expr]:
    """Each bound variable of a function's body -> the value bound to it."""
    return {b.var: b.value for b in bindings(func)}


def reemit(bb: relax.BlockBuilder, func: relax.Function, name: str, env: dict,
           rewrite: Callable[[relax.Expr], relax.Expr] | None = None,
           keep_names: bool = False) -> None:
    """Emit `func` again into `bb` as `name`: each binding's value (through `rewrite`, if
    given) with the Vars and GlobalVars of `env` replaced, in one dataflow block; `env` gains
    the new var of every binding. `keep_names`: the new vars keep the old names (reports find
    tensors by name)."""
    with bb.function(name, list(func.params), dict(func.attrs) if func.attrs else None):
        with bb.dataflow():
            for b in bindings(func):
                value = substitute(rewrite(b.value) if rewrite else b.value, env)
                hint = b.var.name if keep_names else ""
                env[b.var] = bb.emit(value, hint) if isinstance(b.var, relax.DataflowVar) \
                    else bb.emit_output(value, hint)
        bb.emit_func_output(substitute(func.body.body, env))


def output_exprs(func: relax.Function) -> list[relax.Expr]:
    """The function's outputs: the fields of the returned tuple (also when the tuple is bound
    to a variable first, as TVM's frontend and `emit_output` do), else the one result."""
    out = func.body.body
    bound = bound_values(func)
    while isinstance(out, relax.Var) and isinstance(bound.get(out), (relax.Tuple, relax.Var)):
        out = bound[out]
    return list(out.fields) if isinstance(out, relax.Tuple) else [func.body.body]
