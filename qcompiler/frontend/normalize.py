"""Rewrite ONNX spellings into the plain forms the rest of the compiler handles.

- Nodes whose inputs are all constant are evaluated once, at load time. Exporters (Caffe2's model zoo among them, e.g. the ONNX wheel's `light_*` models) spell weights
as `ConstantOfShape(shape)`, or a bias as `Unsqueeze(initializer)`. Those nodes are not part of
the network's computation: folding them into initializers lets every later stage see plain
constant weights (and lets `check_supported` judge the network, not its weight encoding).
- `Sum(a, b, ...)` becomes a chain of `Add`s (TVM's frontend stacks and reduces it, in float),
  so residual sums are integer adds; an inference `Dropout` whose mask is unused is `Identity`
  (the frontend's dropout returns a tuple).
"""
from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

# Deterministic ops that are cheap to evaluate and only ever reshape or fill constants.
FOLDABLE_OPS = frozenset({"ConstantOfShape", "Unsqueeze", "Squeeze", "Reshape", "Cast",
                          "Identity", "Transpose", "Concat"})


def _evaluate(node: onnx.NodeProto, values: dict, opset: int) -> list:
    from onnx.reference import ReferenceEvaluator

    inputs = [i for i in node.input if i]
    graph = helper.make_graph(
        [node], "fold", [],
        [helper.make_value_info(o, onnx.TypeProto()) for o in node.output],
        [numpy_helper.from_array(values[i], i) for i in inputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, {})


def normalize_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with constants folded, Sum as Adds and Dropout as Identity (a copy if changed)."""
    return _rewrite_sum_and_dropout(fold_onnx_constants(model))


def _rewrite_sum_and_dropout(model: onnx.ModelProto) -> onnx.ModelProto:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    nodes, changed = [], False
    for node in model.graph.node:
        plain = node.domain in ("", "ai.onnx")
        if plain and node.op_type == "Sum" and len(node.input) >= 2:
            acc = node.input[0]
            for k, term in enumerate(node.input[1:], start=1):
                out = node.output[0] if k == len(node.input) - 1 else f"{node.output[0]}__sum{k}"
                nodes.append(helper.make_node("Add", [acc, term], [out],
                                              name=f"{node.name or node.output[0]}__add{k}"))
                acc = out
            changed = True
        elif plain and node.op_type == "Dropout" and not used & set(node.output[1:]):
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                          name=node.name))
            changed = True
        else:
            nodes.append(node)
    return _with_nodes(model, nodes) if changed else model


def _with_nodes(model: onnx.ModelProto, nodes: list) -> onnx.ModelProto:
    """A copy of `model` whose graph has `nodes` instead of its own."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def fold_onnx_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every foldable all-constant node replaced by initializers."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    kept, folded = [], []
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        foldable = node.domain in ("", "ai.onnx") and node.op_type in FOLDABLE_OPS \
            and all(i in values for i in inputs) and not graph_outputs & set(node.output)
        if not foldable:
            kept.append(node)
            continue
        try:
            results = _evaluate(node, values, opset)
        except Exception:  # leave it to the importer, which reports it by node name
            kept.append(node)
            continue
        for name, value in zip(node.output, results):
            values[name] = value
            folded.append(numpy_helper.from_array(value, name))
    if not folded:
        return model
    out = _with_nodes(model, kept)
    out.graph.initializer.extend(folded)
    # IR version 3 requires every initializer to be a graph input; 4 lifts that, and the folded
    # constants are constants, not inputs a caller may override.
    out.ir_version = max(out.ir_version, 4)
    used = {i for n in kept for i in n.input} | graph_outputs
    dropped = {i.name for i in out.graph.initializer if i.name not in used}
    keep_inits = [i for i in out.graph.initializer if i.name not in dropped]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep_inits)
    # IR version 3 models also list every initializer as a graph input.
    keep_inputs = [i for i in out.graph.input if i.name not in dropped]
    del out.graph.input[:]
    out.graph.input.extend(keep_inputs)
    return out
