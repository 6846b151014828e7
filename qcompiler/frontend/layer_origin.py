"""Which ONNX nodes each layer of the float graph came from, to name it as Netron does.

A layer's output binding carries its last ONNX node in its span (`frontend.node_names`; in a
fused composite, the composite's result). The layer came from that node and every node before
it back to the nodes of the other layers (or the graph inputs and constants): conv + BN +
ReLU, a chain of elementwise ops made one table, conv + residual Add. The first of them in
the file's order names the layer; the others are listed as fused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import onnx
import tvm
from tvm import relax

from qcompiler.frontend.node_names import node_of
from qcompiler.relax_access import bindings

ATTR = "qcompiler.onnx_nodes"  # the module attribute: [name, op_type, inputs, outputs] each


@dataclass(frozen=True)
class LayerOrigin:
    name: str  # the first ONNX node of the layer
    op_type: str
    fused: tuple[str, ...] = ()  # the others, as "name (OpType)", in the file's order

    @property
    def label(self) -> str:
        return f"{self.name} ({self.op_type})"


def with_onnx_nodes(mod: tvm.IRModule, model: onnx.ModelProto) -> tvm.IRModule:
    """`mod` carrying the imported ONNX graph's nodes (their non-constant inputs only), which
    the float passes keep, for `layer_origins`."""
    consts = {i.name for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        ins = [i for i in n.input if i and i not in consts]
        if ins:
            nodes.append([n.name, n.op_type, ins, list(n.output)])
        else:  # computes a constant (a Constant node, a Clip bound): part of no layer
            consts.update(n.output)
    return mod.with_attr(ATTR, json.dumps(nodes))


def _output_node(mod: tvm.IRModule, value: relax.Expr) -> str | None:
    """The ONNX node of a binding's value: its call's, else (a composite's call) that of the
    last call inside the composite."""
    if not isinstance(value, relax.Call):
        return None
    if node_of(value) is not None or not isinstance(value.op, relax.GlobalVar):
        return node_of(value)
    inner = [node_of(b.value) for b in bindings(mod[value.op])]
    return next((n for n in reversed(inner) if n), None)


def layer_origins(mod: tvm.IRModule) -> dict[relax.Var, LayerOrigin]:
    """The origin of each call binding of `main` whose ONNX node is known (none if `mod`
    was not imported by `frontend.onnx_import`)."""
    if mod.attrs is None or ATTR not in mod.attrs:
        return {}
    table = json.loads(str(mod.attrs[ATTR]))
    order = {n[0]: k for k, n in enumerate(table)}
    op_type = {n[0]: n[1] for n in table}
    producer = {t: n[0] for n in table for t in n[3]}
    inputs = {n[0]: n[2] for n in table}
    last = {b.var: _output_node(mod, b.value) for b in bindings(mod["main"])}
    owned = {n for n in last.values() if n is not None}
    found = {}
    for var, node in last.items():
        if node is None or node not in order:
            continue
        region, todo = {node}, [node]
        while todo:
            for t in inputs[todo.pop()]:
                p = producer.get(t)
                if p is not None and p not in owned and p not in region:
                    region.add(p)
                    todo.append(p)
        first, *rest = sorted(region, key=order.__getitem__)
        found[var] = LayerOrigin(first, op_type[first],
                                 tuple(f"{n} ({op_type[n]})" for n in rest))
    return found
