"""Keep a QDQ model's roundings inside chains of elementwise math.

The compiler makes a chain of elementwise ops on one tensor one lookup table
(`passes.fuse_elementwise`), skipping its intermediate tensors. In a QDQ model such a tensor
may be quantized, and its rounding and saturation are part of what the model computes: ONNX
Runtime drops a ReLU before a QuantizeLinear of zero point 0, since the quantization clamps
at 0 (`c + 3`, quantized, *is* `relu(c + 3)` there). So where a quantized tensor `t` is made by
a one-tensor elementwise op and read by another, its quantize-dequantize stays in the float
graph as the elementwise ops

    t' = s * clip(round(t / s), qmin - zp, qmax - zp)        (ONNX QuantizeLinear, then
                                                             DequantizeLinear: half to even)

which join the chain's table: the table then computes what the QDQ model does.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qcompiler.frontend.onnx_import import ELEMENTWISE_OPS
from qcompiler.numerics.qparams import QParams, dtype_range

# The ONNX ops `passes.fuse_elementwise` chains: elementwise math, and the elementwise ops
# with an integer kernel of their own when alone.
CHAIN_OPS = ELEMENTWISE_OPS | {"Add", "Mul", "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid",
                               "Tanh", "HardSigmoid", "HardSwish"}


def _chain_roots(model: onnx.ModelProto) -> dict[str, str]:
    """The tensor each value's elementwise chain starts from: a value made by a chain op
    whose non-constant inputs share one root has that root; any other value is its own
    (absent here); a constant maps to "" (no tensor)."""
    constants = {i.name for i in model.graph.initializer} | \
        {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    roots = {c: "" for c in constants}
    for n in model.graph.node:  # (in graph order: producers first)
        found = {roots.get(i, i) for i in n.input if i} - {""}
        if n.op_type in CHAIN_OPS and len(found) == 1:
            roots.update({o: found.pop() for o in n.output})
    return roots


def _inside_chain(t: str, roots: dict[str, str], readers: dict) -> bool:
    """`t` is made from its chain's root by chain ops, and a chain op reads it with no other
    tensor but ones of the same root (so one table would skip it)."""
    root = roots.get(t, t)
    return root != t and any(
        r.op_type in CHAIN_OPS and {roots.get(i, i) for i in r.input if i} - {""} == {root}
        for r in readers.get(t, ()))


def _rounding(t: str, out: str, qp: QParams) -> tuple[list[onnx.NodeProto], list]:
    """Nodes computing `out` = t quantized to `qp` and dequantized, and their constants."""
    lo, hi = dtype_range(qp.dtype)
    consts = {f"{out}__scale": qp.scale, f"{out}__lo": lo - qp.zero_point,
              f"{out}__hi": hi - qp.zero_point}
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()]
    nodes = [helper.make_node("Div", [t, f"{out}__scale"], [f"{out}__q"]),
             helper.make_node("Round", [f"{out}__q"], [f"{out}__r"]),
             helper.make_node("Clip", [f"{out}__r", f"{out}__lo", f"{out}__hi"], [f"{out}__c"]),
             helper.make_node("Mul", [f"{out}__c", f"{out}__scale"], [out])]
    return nodes, inits


def keep_chain_roundings(model: onnx.ModelProto, activations: dict[str, QParams]
                         ) -> onnx.ModelProto:
    """`model` with the quantize-dequantize of each quantized tensor inside an elementwise
    chain written out as float ops; `activations` gains the rounded tensors (same qparams)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    roots = _chain_roots(model)
    outputs = {o.name for o in model.graph.output}
    inside = [t for t in activations if t not in outputs and _inside_chain(t, roots, readers)]
    if not inside:
        return model
    nodes: list[onnx.NodeProto] = []
    inits: list = []
    rounded = {t: f"{t}__rounded" for t in inside}
    for n in model.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        for j, name in enumerate(copy.input):
            copy.input[j] = rounded.get(name, name)
        nodes.append(copy)
        for t in (o for o in n.output if o in rounded):
            more, consts = _rounding(t, rounded[t], activations[t])
            nodes += more
            inits += consts
            activations[rounded[t]] = activations[t]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    return out
