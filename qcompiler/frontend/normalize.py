"""Rewrite ONNX spellings into the plain forms the rest of the compiler handles.

- Nodes whose inputs are all constant are evaluated once, at load time. Exporters (Caffe2's
  model zoo among them, e.g. the ONNX wheel's `light_*` models) spell weights as
  `ConstantOfShape(shape)`, or a bias as `Unsqueeze(initializer)`. Those nodes are not part of
  the network's computation: folding them into initializers lets every later stage see plain
  constant weights (and lets `check_supported` judge the network, not its weight encoding).
  Given the static shapes of the tensors, `Shape` and `Size` fold too, and with them the
  shape arithmetic of real exports (`frontend.static_shapes`).
- `Sum(a, b, ...)` becomes a chain of `Add`s (TVM's frontend stacks and reduces it, in float),
  so residual sums are integer adds; an inference `Dropout` whose mask is unused, and a
  `Split` into one part, are `Identity` (the frontend's dropout returns a tuple, its split
  of one part a tensor).
- A graph input that no node reads is dropped; a Pad of zeros read only by a Conv becomes
  the Conv's padding (TensorFlow's 'SAME' on strided convs).
- A `Resize` whose `roi` or `scales` is an empty tensor (paddle2onnx and tf2onnx write
  `scales = []` beside computed `sizes`) names no input there: an empty tensor and an omitted
  input mean the same in ONNX, and TVM's frontend takes only the omitted form.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Every default-domain node whose inputs are all constants is evaluated (exports compute
# shape vectors, anchor grids and resize scales with any op: ReduceMax of a shape, Ceil, Sqrt,
# Pow...), except: quantize / dequantize, whose constants the QDQ importer reads as weights
# and scales; random ops, whose value is not the model's; control flow, whose subgraphs a
# one-node evaluation cannot see.
NOT_FOLDED = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "If", "Loop", "Scan",
})
# Ops whose value is their input's shape: folded where that shape is static.
SHAPE_OPS = frozenset({"Shape", "Size"})


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
    """`model` with constants folded, Sum as Adds, Dropout as Identity, empty Resize
    inputs omitted, unread inputs dropped and zero Pads folded into their Conv (a copy if
    changed)."""
    model = _rewrite_spellings(fold_onnx_constants(resize_at_opset_11(model)))
    return fold_pad_into_conv(_without_unused_inputs(model))


def resize_at_opset_11(model: onnx.ModelProto) -> onnx.ModelProto:
    """Upsample (opsets 7-9) and opset 10's Resize, as older exporters (paddle2onnx's and
    tf2onnx's defaults of their day) write an FPN's upsampling, become opset 11's Resize by
    onnx's own version converter, which the importer takes; files without them are kept.
    Both old ops read output `i` at input `i / scale` (nearest: its floor), which opset 11
    spells `asymmetric` (and `floor`); the converter leaves opset 11's defaults
    (`half_pixel`), so those attributes are set here (and its roi, unread, emptied)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 11)
    if opset >= 11 or not any(n.op_type in ("Upsample", "Resize") for n in model.graph.node):
        return model
    from onnx import version_converter

    try:
        out = version_converter.convert_version(model, 11)
    except Exception:  # noqa: BLE001 - the importer then names the op it cannot take
        return model
    for node in out.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: a for a in node.attribute}
        mode = helper.get_attribute_value(attrs["mode"]) if "mode" in attrs else b"nearest"
        for name, value in (("coordinate_transformation_mode", b"asymmetric"),
                            ("nearest_mode", b"floor" if mode == b"nearest" else None)):
            if name in attrs:
                node.attribute.remove(attrs[name])
            if value is not None:
                node.attribute.append(helper.make_attribute(name, value))
        node.input[1] = "roi__unread"  # the converter's, which only tf_crop_and_resize reads
    out.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), "roi__unread"))
    return out


def _zero_spatial_pads(node: onnx.NodeProto, values: dict) -> list[int] | None:
    """The [top, left, bottom, right] of a Pad that adds zeros to H and W only (else None):
    pads as an attribute (opset < 11) or a constant input, no value or a zero one."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("mode", b"constant") != b"constant" or len(node.input) > 3 and node.input[3]:
        return None
    if "pads" in attrs:
        pads, value = list(attrs["pads"]), attrs.get("value", 0.0)
    elif len(node.input) > 1 and node.input[1] in values:
        pads = values[node.input[1]].tolist()
        const = node.input[2] if len(node.input) > 2 else ""
        if const and const not in values:
            return None
        value = float(values[const].reshape(-1)[0]) if const and values[const].size else 0.0
    else:
        return None
    if len(pads) != 8 or value != 0.0 or min(pads) < 0 or any(pads[k] for k in (0, 1, 4, 5)):
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


def fold_pad_into_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """A Pad of zeros whose only reader is a Conv becomes that Conv's padding. TensorFlow's
    'SAME' on a strided conv pads one side more (tf2onnx writes an explicit Pad): folded, the
    padded copy of the activation is never made, and the conv keeps the blocked layout."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    folded: dict[str, list[int]] = {}  # conv output -> extra pads
    padded: dict[str, str] = {}  # pad output -> pad input
    for node in model.graph.node:
        users = readers.get(node.output[0], []) if node.op_type == "Pad" else []
        conv = users[0] if len(users) == 1 else None
        if conv is None or conv.op_type != "Conv" or conv.input[0] != node.output[0] \
                or node.output[0] in outputs:
            continue
        auto_pad = next((a.s for a in conv.attribute if a.name == "auto_pad"), b"NOTSET")
        extra = _zero_spatial_pads(node, values)
        if extra is not None and auto_pad == b"NOTSET":
            folded[conv.output[0]] = extra
            padded[node.output[0]] = node.input[0]
    if not folded:
        return model
    nodes = []
    for node in model.graph.node:
        if node.op_type == "Pad" and node.output[0] in padded:
            continue
        if node.op_type == "Conv" and node.output and node.output[0] in folded:
            node = _copy(node)
            node.input[0] = padded[node.input[0]]
            pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0] * 4)
            for a in [a for a in node.attribute if a.name == "pads"]:
                node.attribute.remove(a)
            node.attribute.append(helper.make_attribute(
                "pads", [p + e for p, e in zip(pads, folded[node.output[0]])]))
        nodes.append(node)
    return with_nodes(model, nodes)


def _rewrite_spellings(model: onnx.ModelProto) -> onnx.ModelProto:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    empty = {i.name for i in model.graph.initializer if 0 in i.dims}
    nodes, changed = [], False
    for node in model.graph.node:
        plain = node.domain in ("", "ai.onnx")
        if plain and node.op_type == "Resize" and empty & set(node.input[1:3]):
            node = _copy(node)
            for k in (1, 2):
                if k < len(node.input) and node.input[k] in empty:
                    node.input[k] = ""
            changed = True
        if plain and node.op_type == "Sum" and len(node.input) >= 2:
            acc = node.input[0]
            for k, term in enumerate(node.input[1:], start=1):
                out = node.output[0] if k == len(node.input) - 1 else f"{node.output[0]}__sum{k}"
                nodes.append(helper.make_node("Add", [acc, term], [out],
                                              name=f"{node.name or node.output[0]}__add{k}"))
                acc = out
            changed = True
        elif plain and node.op_type == "Split" and len(node.output) == 1:
            # (torchvision's detectors split the batch into its one image)
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                          name=node.name))
            changed = True
        elif plain and node.op_type == "Dropout" and not used & set(node.output[1:]):
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                          name=node.name))
            changed = True
        else:
            nodes.append(node)
    return with_nodes(model, nodes) if changed else model


def _without_unused_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A graph input no node reads (tf2onnx lists a Keras layer's folded-away constants as
    inputs) is no input of the network: the library does not ask for it."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    if all(i.name in used for i in model.graph.input):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [i for i in out.graph.input if i.name in used]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    return out


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    new = onnx.NodeProto()
    new.CopyFrom(node)
    return new


def with_nodes(model: onnx.ModelProto, nodes: list) -> onnx.ModelProto:
    """A copy of `model` whose graph has `nodes` instead of its own."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _shape_value(node: onnx.NodeProto, shape: tuple[int, ...]) -> list[np.ndarray]:
    """`Shape` (with opset 15's start/end) or `Size` of a tensor of static `shape`."""
    if node.op_type == "Size":
        return [np.array(int(np.prod(shape)), np.int64)]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return [np.array(shape[slice(start, end)], np.int64)]


def fold_onnx_constants(model: onnx.ModelProto,
                        shapes: dict[str, tuple[int, ...]] | None = None) -> onnx.ModelProto:
    """A copy of `model` with every foldable all-constant node replaced by initializers
    (`model` itself if nothing folds). `shapes`: static tensor shapes, which make `Shape` and
    `Size` of those tensors constants."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    shapes = shapes or {}
    graph_outputs = {o.name for o in model.graph.output}
    kept, folded = [], []
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        plain = node.domain in ("", "ai.onnx") and not graph_outputs & set(node.output)
        of_shape = plain and node.op_type in SHAPE_OPS and inputs[0] in shapes
        foldable = of_shape or (plain and node.op_type not in NOT_FOLDED
                                and all(i in values for i in inputs))
        if not foldable:
            kept.append(node)
            continue
        try:
            results = _shape_value(node, shapes[inputs[0]]) if of_shape else \
                _evaluate(node, values, opset)
        except Exception:  # leave it to the importer, which reports it by node name
            kept.append(node)
            continue
        for name, value in zip(node.output, results):
            values[name] = value
            folded.append(numpy_helper.from_array(value, name))
    if not folded:
        return model
    out = with_nodes(model, kept)
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


def resize_align_corners_to_one(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
                                ) -> onnx.ModelProto:
    """A Resize under `align_corners` to an output side of 1 divides by zero in TVM (`(in - 1)
    / (out - 1)`); ONNX reads such a side at coordinate 0. Where every resized side is 1 or
    keeps its size, `asymmetric` maps each output exactly as ONNX's `align_corners` does (0,
    and the identity): the node is rewritten so. Any other is a one-line error naming it."""
    from qcompiler.errors import UnsupportedModelError

    nodes, changed = [], False
    for node in model.graph.node:
        mode = next((a for a in node.attribute
                     if a.name == "coordinate_transformation_mode"), None)
        x, y = shapes.get(node.input[0]) if node.input else None, \
            shapes.get(node.output[0])
        if node.op_type != "Resize" or mode is None or mode.s != b"align_corners" \
                or x is None or y is None or 1 not in y[2:]:
            nodes.append(node)
            continue
        if any(o != 1 and o != i for i, o in zip(x[2:], y[2:])):
            raise UnsupportedModelError(
                f"unsupported: attribute {node.name or node.output[0]} (Resize): "
                f"align_corners from {list(x[2:])} to {list(y[2:])} (a side of 1 beside a "
                "resized one)")
        new = _copy(node)
        next(a for a in new.attribute if a.name == "coordinate_transformation_mode").s = \
            b"asymmetric"
        nodes.append(new)
        changed = True
    return with_nodes(model, nodes) if changed else model

