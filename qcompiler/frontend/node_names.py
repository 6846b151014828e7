"""ONNX node names on the Relax graph, so a user reads the names Netron shows them.

Every node gets a name (`name_nodes`: ONNX allows none; an unnamed node becomes
`<OpType>_<index>`, its position in the file, as ONNX Runtime names them). At import, each
Relax binding's call carries, in its span's source name, the node it was converted from
(`tag_nodes`); the float passes keep the span of the call a rewrite replaces
(`relax_access.with_span`), and `frontend.layer_origin` reads it back per layer.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import onnx
import tvm
from tvm import relax

from qcompiler.relax_access import bindings, is_const, with_span


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every node named (a copy if one had no name): `Conv_12` for the unnamed
    Conv at index 12, with a suffix should a node already bear that name."""
    if all(n.name for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {n.name for n in out.graph.node}
    for k, node in enumerate(out.graph.node):
        if not node.name:
            name, extra = f"{node.op_type}_{k}", 0
            while name in taken:
                extra += 1
                name = f"{node.op_type}_{k}_{extra}"
            node.name = name
            taken.add(name)
    return out


def node_of(expr: relax.Expr) -> str | None:
    """The ONNX node a call was converted from (its span's source name), if known."""
    span = getattr(expr, "span", None)
    return None if span is None else str(span.source_name.name)


@contextlib.contextmanager
def capture_importer() -> Iterator[list]:
    """Keep TVM's ONNX importer of the next import (it maps each ONNX tensor to its Relax
    expression) in the yielded list."""
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    found: list = []
    original = fe.ONNXGraphImporter._construct_nodes

    def construct(self, graph):  # noqa: ANN001, ANN202 - the frontend's own signature
        found.append(self)
        return original(self, graph)

    fe.ONNXGraphImporter._construct_nodes = construct
    try:
        yield found
    finally:
        fe.ONNXGraphImporter._construct_nodes = original


def tag_nodes(mod: tvm.IRModule, model: onnx.ModelProto, tensors: dict) -> tvm.IRModule:
    """`mod` whose calls in `main` carry their ONNX node's name in their span. `tensors`
    (the importer's ONNX tensor -> Relax expression) finds each node's output binding; the
    bindings emitted before it while converting that node (weight reshapes, a Clip's bounds)
    belong to the same node. Vars and values are unchanged, only spans are added."""
    producer = {}
    for node in model.graph.node:
        for t in node.output:
            if t in tensors:
                producer.setdefault(tensors[t], node.name)
    main = mod["main"]
    found = list(bindings(main))
    owners: list[str | None] = [None] * len(found)
    owner = None
    for k in range(len(found) - 1, -1, -1):  # a binding belongs to the next node output
        b = found[k]
        owner = producer.get(b.var) or producer.get(b.value) or owner
        owners[k] = owner
    return _rebind(mod, {b.var: with_span(b.value, o) for b, o in zip(found, owners)
                         if isinstance(b.value, relax.Call) and o is not None})


def _rebind(mod: tvm.IRModule, values: dict) -> tvm.IRModule:
    """`mod` with the bindings of `main` to the vars of `values` bound to those values (the
    same vars: a call with another span)."""
    main, bb = mod["main"], relax.BlockBuilder()
    blocks = []
    for block in main.body.blocks:
        new = [relax.VarBinding(b.var, bb.normalize(values[b.var])) if b.var in values else b
               for b in block.bindings]
        kind = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) else \
            relax.BindingBlock
        blocks.append(kind(new))
    out = tvm.IRModule(dict(mod.functions_items()), mod.attrs, mod.global_infos)
    out["main"] = relax.Function(main.params, relax.SeqExpr(blocks, main.body.body),
                                 main.ret_ty, main.is_pure, main.attrs, main.span)
    return relax.transform.Normalize()(out)  # the new body's types


def _key(value: relax.Expr, env: dict) -> tuple | None:
    """A call or projection by its op and its var operands (through `env`)."""
    if isinstance(value, relax.TupleGetItem):
        return ("item", env.get(value.tuple_value), value.index)
    if not isinstance(value, relax.Call):
        return None
    return (str(value.op), tuple(env.get(a) for a in value.args if isinstance(a, relax.Var)))


def _constants(value: relax.Expr) -> list:
    return [a for a in getattr(value, "args", []) if is_const(a)]


class _Calls:
    """The bindings of a function, found by op and operands: of equal candidates (two
    branches on one input), the one whose constants are the same objects (fusion moves them
    into its function; a function shared by equal groups holds the first group's)."""

    def __init__(self, func: relax.Function) -> None:
        self.found: dict = {}
        env = {p: p for p in func.params}
        for b in bindings(func):
            env[b.var] = b.var
            self.found.setdefault(_key(b.value, env), []).append((b.var, _constants(b.value)))

    def lookup(self, value: relax.Expr, env: dict) -> relax.Var | None:
        if not (candidates := self.found.get(_key(value, env))):
            return None
        mine = _constants(value)
        return next((v for v, cs in candidates if len(cs) == len(mine) and
                     all(a.same_as(b) for a, b in zip(cs, mine))), candidates[0][0])


def spans_after_fusion(before: relax.Function, mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` whose calls of composites in `main` carry the span of the call they replaced in
    `before`: fusion shares one function between equal groups (two residual adds), so the
    spans inside a composite name only one of its uses. Each call of `main` is found in
    `before` by its op and operands; a composite's by replaying its body."""
    calls = _Calls(before)
    span = {b.var: getattr(b.value, "span", None) for b in bindings(before)}
    main = mod["main"]
    env = {p: p for p in main.params}
    replaced = {}
    for b in bindings(main):
        value = b.value
        if isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
            func = mod[value.op]
            inner = dict(zip(func.params, (env.get(a) for a in value.args)))
            named = None  # the last call of the group with a span
            for ib in bindings(func):
                inner[ib.var] = calls.lookup(ib.value, inner)
                named = inner[ib.var] if span.get(inner[ib.var]) is not None else named
            env[b.var] = inner.get(func.body.body)
            if named is not None:
                replaced[b.var] = relax.Call(value.op, value.args, value.attrs,
                                             value.ty_args, span[named])
        else:
            env[b.var] = env.get(value) if isinstance(value, relax.Var) else \
                calls.lookup(value, env)
    return _rebind(mod, replaced)
