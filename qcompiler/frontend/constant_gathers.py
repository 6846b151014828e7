"""A Gather of constant indices from a network tensor is a Slice (and, for one scalar index,
a Squeeze of that axis).

Exporters index tensors with Gather: torchvision's detection transform takes the batch's
first image (`images[0]` -> `Gather(x, 0)`), heads take a channel or a range of rows. With
constant indices that form an arithmetic progression the op moves a strided window, which
Slice says and the integer kernels take (data movement, no arithmetic); any other index set
stays a Gather, which the importer reports by node name.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qcompiler.frontend.normalize import with_nodes

INT64_MAX = np.iinfo(np.int64).max


def _progression(indices: np.ndarray, size: int | None) -> tuple[int, int, int] | None:
    """(start, end, step) of the Slice reading `indices` (1-D, in range), or None."""
    if size is not None:
        indices = np.where(indices < 0, indices + size, indices)
    if indices.size == 0 or (indices < 0).any():
        return None
    if indices.size == 1:
        return int(indices[0]), int(indices[0]) + 1, 1
    steps = np.diff(indices)
    if not (steps == steps[0]).all() or steps[0] == 0:
        return None
    step, last = int(steps[0]), int(indices[-1])
    end = last + 1 if step > 0 else (last - 1 if last > 0 else -INT64_MAX)
    return int(indices[0]), end, step


def gathers_as_slices(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
                      ) -> onnx.ModelProto:
    """`model` with every Gather of constant, progression-shaped indices from a non-constant
    tensor written as Slice (+ Squeeze); `model` itself if there is none. `shapes`: static
    tensor shapes (to read negative indices)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    consts = {i.name: i for i in model.graph.initializer}
    nodes, added, changed = [], [], False
    for node in model.graph.node:
        data = node.input[0] if node.input else ""
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") \
                or data in consts or len(node.input) < 2 or node.input[1] not in consts:
            nodes.append(node)
            continue
        indices = numpy_helper.to_array(consts[node.input[1]])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        rank = len(shapes[data]) if data in shapes else None
        if axis < 0 and rank is not None:
            axis += rank
        size = shapes[data][axis] if rank is not None and 0 <= axis < rank else None
        window = _progression(indices.reshape(-1), size) if indices.ndim <= 1 else None
        if window is None or axis < 0:
            nodes.append(node)
            continue
        name = node.name or node.output[0]
        vectors = {"starts": window[0], "ends": window[1], "axes": axis, "steps": window[2]}
        for key, value in vectors.items():
            added.append(numpy_helper.from_array(np.array([value], np.int64),
                                                 f"{name}__{key}"))
        sliced = node.output[0] if indices.ndim == 1 else f"{name}__sliced"
        nodes.append(helper.make_node("Slice", [data] + [f"{name}__{k}" for k in vectors],
                                      [sliced], name=name))
        if indices.ndim == 0:
            if opset >= 13:
                nodes.append(helper.make_node("Squeeze", [sliced, f"{name}__axes"],
                                              [node.output[0]], name=f"{name}__squeeze"))
            else:
                nodes.append(helper.make_node("Squeeze", [sliced], [node.output[0]],
                                              name=f"{name}__squeeze", axes=[axis]))
        changed = True
    if not changed:
        return model
    out = with_nodes(model, nodes)
    out.graph.initializer.extend(added)
    return out
