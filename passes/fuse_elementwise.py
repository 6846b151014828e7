"""Wrap each chain of elementwise float math on one tensor into one composite function.

A group is a maximal set of elementwise ops (`OPS`) in which every operand is a constant
(a scalar, or one value per channel along a single non-batch axis) or a value computed in
the group from one root tensor x, and of whose values only the last is used outside it:

    y = f(x),  f = any composition of OPS with constants   ->  Composite "qcompiler.elementwise"

e.g. hard-swish written out `x * clip(x + 3, 0, 6) / 6`, SiLU `x * sigmoid(x)`, Mish
`x * tanh(log(1 + exp(x)))`, GELU `x * 0.5 * (1 + erf(x / sqrt2))`, `(x - m[c]) / s[c]`.
Each op keeps x's shape (a constant may not broadcast x to a larger one). The quantize pass
makes the composite one lookup table (`qcompiler.lowering.tables.elementwise`): an 8-bit x
takes 256 values, so f is evaluated at compile time on each of them.

A value that is used outside its group ends that group (the rest regroups from it), so no
value is computed twice. Left to their own integer kernels: ops on two different tensors
(an SE gate's `x * g`), and a group of one op that already has one (ReLU, Clip, Sigmoid,
Tanh, LeakyReLU, PReLU, a multiply by a constant). It runs after `fuse_activation`, so a
conv's bias and ReLU/Clip are already in the conv's composite, and HardSwish/HardSigmoid in
their own table composites; those of its composites that are elementwise (a `qcompiler.add`
of two values of one chain, as in Softplus `max(x, 0) + log(1 + exp(-|x|))`, a HardSwish
followed by more math) are inlined into the chain they are part of.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from qcompiler.passes import module_pass
from tvm import relax

from qcompiler.relax_access import (
    bindings,
    bound_values,
    const_array,
    is_tensor_const,
    op_name,
    shape_of,
    substitute,
    with_span,
)

COMPOSITE = "qcompiler.elementwise"
UNARY_OPS = frozenset({
    "relax.exp", "relax.log", "relax.sqrt", "relax.rsqrt", "relax.erf", "relax.tanh",
    "relax.sigmoid", "relax.negative", "relax.abs", "relax.floor", "relax.ceil",
    "relax.round", "relax.sign", "relax.square", "relax.sin", "relax.cos", "relax.nn.relu",
    "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.nn.silu", "relax.nn.leakyrelu",
    "relax.clip",
})
BINARY_OPS = frozenset({
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.power",
    "relax.maximum", "relax.minimum",
})
OPS = UNARY_OPS | BINARY_OPS | {"relax.nn.prelu"}
# `fuse_activation` composites that are elementwise, inlined into a chain they are part of.
_INLINED = frozenset({"qcompiler.add", "qcompiler.hardswish", "qcompiler.hardsigmoid"})
# A group of one of these ops alone keeps the integer kernel it already has.
_OWN_KERNEL = frozenset({"relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh",
                         "relax.nn.leakyrelu", "relax.nn.prelu"})


def constant_axis(c: np.ndarray, shape: tuple) -> int | None | bool:
    """None for a scalar constant, the axis along which `c` varies when it broadcasts against
    `shape` along that one non-batch axis only, else False (no table row per element)."""
    if c.size == 1:
        return None
    if c.ndim > len(shape):
        return False
    full = (1,) * (len(shape) - c.ndim) + c.shape
    varying = [k for k, d in enumerate(full) if d != 1]
    if len(varying) != 1 or varying[0] == 0 or full[varying[0]] != shape[varying[0]]:
        return False
    return varying[0]


def prelu_axis(call: relax.Call, shape: tuple) -> int | None | bool:
    slope = const_array(call.args[1])
    if slope.size == 1:
        return None
    axis = int(call.attrs.axis) % len(shape)
    return axis if axis > 0 and slope.size == shape[axis] else False


def _float32_shape(v: relax.Expr) -> tuple | None:
    """The static shape of a float32 tensor, else None."""
    ty = getattr(v, "ty", None)
    if not isinstance(ty, relax.TensorType) or str(ty.dtype) != "float32" or ty.shape is None:
        return None
    try:
        return shape_of(v)
    except (TypeError, ValueError):  # a symbolic dimension
        return None


@dataclass
class _Op:
    """An elementwise call: its tensor operands (vars) and the axis of its constants."""

    operands: list
    axis: int | None


def _elementwise(var: relax.Var, value: relax.Expr, mod: tvm.IRModule) -> _Op | None:
    if isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
        return _elementwise_composite(var, value, mod)
    if not isinstance(value, relax.Call) or op_name(value) not in OPS \
            or not isinstance(value.op, tvm.ir.Op):
        return None
    shape = _float32_shape(var)
    if shape is None:
        return None
    name = op_name(value)
    tensors = value.args[:1] if name in UNARY_OPS else value.args
    operands, axes = [], set()
    for a in tensors:
        if isinstance(a, relax.Var):
            if _float32_shape(a) != shape:
                return None
            operands.append(a)
        elif is_tensor_const(a) and str(a.ty.dtype) == "float32":
            axis = prelu_axis(value, shape) if name == "relax.nn.prelu" else \
                constant_axis(const_array(a), shape)
            if axis is False:
                return None
            axes.add(axis)
        else:
            return None
    axes.discard(None)
    if not operands or len(axes) > 1:
        return None
    return _Op(operands, axes.pop() if axes else None)


def _inlined(value: relax.Call, mod: tvm.IRModule) -> list | None:
    """The bindings of a `fuse_activation` composite made only of elementwise ops (a
    residual add, HardSwish, HardSigmoid), to inline when it is part of a chain."""
    func = mod[value.op] if value.op in mod.functions else None
    if not isinstance(func, relax.Function) or not func.attrs or \
            str(func.attrs.get("Composite", "")) not in _INLINED:
        return None
    return [(b.var, b.value) for b in bindings(func)]


def _elementwise_composite(var: relax.Var, value: relax.Call, mod: tvm.IRModule) -> _Op | None:
    body = _inlined(value, mod)
    if body is None or not all(isinstance(v, relax.Call) for _, v in body):
        return None
    inner = [_elementwise(v, e, mod) for v, e in body]
    axes = {op.axis for op in inner if op is not None} - {None}
    shape = _float32_shape(var)
    if None in inner or len(axes) > 1 or shape is None \
            or not all(isinstance(a, relax.Var) and _float32_shape(a) == shape
                       for a in value.args):
        return None
    return _Op(list(value.args), axes.pop() if axes else None)


@dataclass(eq=False)
class _Group:
    root: relax.Var
    axis: int | None
    members: list = field(default_factory=list)  # bound vars, in binding order


def _grow(bindings: list, cut: set, mod: tvm.IRModule) -> list[_Group]:
    """Groups in binding order; a value in `cut` is a root for its users, never a member."""
    position = {var: k for k, (var, _) in enumerate(bindings)}
    group_of: dict = {}
    for var, value in bindings:
        op = _elementwise(var, value, mod)
        if op is None:
            continue
        roots, joined = set(), []
        for v in op.operands:
            g = group_of.get(v)
            if g is not None and v not in cut:
                roots.add(g.root)
                if g not in joined:
                    joined.append(g)
            else:
                roots.add(v)
        axes = {g.axis for g in joined} | {op.axis}
        axes.discard(None)
        if len(roots) != 1 or len(axes) > 1:
            continue
        group = _Group(roots.pop(), axes.pop() if axes else None,
                       sorted((v for g in joined for v in g.members), key=position.get) + [var])
        for v in group.members:
            group_of[v] = group
    unique = {id(g): g for g in group_of.values()}
    return sorted(unique.values(), key=lambda g: position[g.members[-1]])


def _uses(func: relax.Function) -> dict:
    """var -> the vars bound to its users (None for the function's result)."""
    uses: dict = {}
    for b in bindings(func):
        for v in relax.analysis.free_vars(b.value):
            uses.setdefault(v, []).append(b.var)
    for v in relax.analysis.free_vars(func.body.body):
        uses.setdefault(v, []).append(None)
    return uses


def groups(func: relax.Function, mod: tvm.IRModule) -> list[_Group]:
    """The groups of `func` to wrap, each with one value used outside it (its last)."""
    bound = [(b.var, b.value) for b in bindings(func)]
    uses, cut = _uses(func), set()
    while True:
        found = _grow(bound, cut, mod)
        more = set()
        for g in found:
            inside = set(g.members)
            escaping = [v for v in g.members if any(u not in inside for u in uses.get(v, []))]
            more.update(escaping[:-1])
        if not more:
            break
        cut |= more
    values = dict(bound)
    return [g for g in found if not _own_kernel([values[v] for v in g.members])]


def _own_kernel(calls: list) -> bool:
    if len(calls) != 1 or isinstance(calls[0].op, relax.GlobalVar):  # a composite alone
        return len(calls) == 1
    name = op_name(calls[0])
    return name in _OWN_KERNEL or (name == "relax.multiply" and any(
        is_tensor_const(a) for a in calls[0].args))


def _wrap(bb: relax.BlockBuilder, gv: tvm.ir.GlobalVar, func: relax.Function) -> None:
    """`func` with each group's bindings replaced by one call of its composite (bound to the
    group's last variable, so nothing else changes)."""
    found = groups(func, bb.get())
    if not found:
        return
    values = bound_values(func)
    last = {g.members[-1]: g for g in found}
    skip = {v for g in found for v in g.members[:-1]}
    blocks = []
    for blk in func.body.blocks:
        out = []
        for b in blk.bindings:
            if b.var in last:
                g = last[b.var]
                f = _composite(values, g, bb.get())
                # equal chains share one function: the call's span names this one's last node
                last_call = list(bindings(f))[-1].value
                call = with_span(relax.Call(bb.add_func(f, _name(f)), [g.root]), last_call)
                out.append(relax.VarBinding(b.var, bb.normalize(call)))
            elif b.var not in skip:
                out.append(b)
        blocks.append(relax.DataflowBlock(out) if isinstance(blk, relax.DataflowBlock)
                      else relax.BindingBlock(out))
    body = relax.SeqExpr(blocks, func.body.body)
    bb.update_func(gv, relax.Function(func.params, body, func.ret_ty, func.is_pure,
                                      func.attrs))


def _name(func: relax.Function) -> str:
    ops = [op_name(b.value).split(".")[-1] for b in bindings(func)]
    return "fused_elementwise_" + "_".join(ops[:6])


def _composite(values: dict, group: _Group, mod: tvm.IRModule) -> relax.Function:
    """f(x): the group's bindings (a member composite's inlined), its root the parameter."""
    steps: list = []  # (var, value), or a dict of a composite's parameters -> its arguments
    for v in group.members:
        body = _inlined(values[v], mod) if isinstance(values[v].op, relax.GlobalVar) else None
        if body is None:
            steps.append((v, values[v]))
            continue
        steps.append(dict(zip(mod[values[v].op].params, values[v].args)))
        steps += body[:-1] + [(v, body[-1][1])]
    x = relax.Var("x", group.root.ty)
    inner = relax.BlockBuilder()
    env: dict = {group.root: x}
    with inner.function("f", [x], {"Composite": COMPOSITE, "Primitive": True}, private=True):
        with inner.dataflow():
            for k, step in enumerate(steps):
                if isinstance(step, dict):
                    env.update({p: env[a] for p, a in step.items()})
                    continue
                emit = inner.emit_output if k == len(steps) - 1 else inner.emit
                env[step[0]] = emit(substitute(step[1], env))
        inner.emit_func_output(env[group.members[-1]])
    return inner.get()["f"]


def fuse_elementwise() -> tvm.transform.Pass:
    """The pass: each group of every non-composite Relax function -> one composite call."""

    @module_pass("qcompiler.fuse_elementwise")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        bb = relax.BlockBuilder(mod)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function) and not (func.attrs and
                                                         "Composite" in func.attrs):
                _wrap(bb, gv, func)
        return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(bb.get()))

    return transform
