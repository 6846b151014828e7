"""Static input shapes, and the shape arithmetic exporters write folded away.

PyTorch, Paddle and TensorFlow exports keep dims symbolic (`x: [N, 3, ?, ?]`) and compute
reshape targets at run time: `Shape -> Gather -> Unsqueeze -> Concat -> Reshape` behind a
flatten, `Shape -> Slice -> Cast -> Mul` behind an upsample. An integer library has one static
shape per tensor, so once the inputs' dims are fixed every such value is a constant:

1. each symbolic input dim is fixed, from the user's shapes (`--input-shape`), else from the
   calibration data's sample shape, else the batch (`--batch`, default 1) for dim 0;
2. onnx's own shape inference (with data propagation) gives every tensor's static shape;
3. `Shape`/`Size` of a tensor with a static shape become constants, and every node whose
   inputs are all constants is evaluated by onnx's reference evaluator
   (`frontend.normalize.fold_onnx_constants`); repeated until nothing changes, because a
   folded Reshape target lets inference see the shapes below it.

onnx's inference and reference evaluator do the ONNX semantics (opset differences of Slice,
Squeeze, Resize...), so nothing here re-implements an op.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from qcompiler.errors import QCompileError
from qcompiler.frontend.normalize import fold_onnx_constants


@dataclass(frozen=True)
class ModelInput:
    """A model input as the compiler builds it: `shape` is static once resolved (a `None` dim
    only in `declared_inputs`, where the model leaves it symbolic)."""

    name: str
    shape: tuple
    dtype: str
    dynamic_batch: bool = False


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _declared_dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    """The input's dims, None where the model leaves one symbolic (a name, or 0 / -1)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in vi.type.tensor_type.shape.dim]


def _dim_label(vi: onnx.ValueInfoProto, axis: int) -> str:
    d = vi.type.tensor_type.shape.dim[axis]
    return f"symbolic ({d.dim_param!r})" if d.dim_param else "unknown"


def _dtype(vi: onnx.ValueInfoProto) -> str:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
    if dtype != "float32":
        raise QCompileError(f"input {vi.name}: dtype {dtype}, expected float32")
    return dtype


def _fmt(dims: tuple | list) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _given(vi: onnx.ValueInfoProto, dims: list, shape: tuple, batch: int | None) -> tuple:
    """`--input-shape` for this input, checked against what the model fixes."""
    if len(shape) != len(dims):
        raise QCompileError(f"input {vi.name}: --input-shape {_fmt(shape)} has rank "
                            f"{len(shape)}, the model's input has rank {len(dims)} "
                            f"({_fmt(dims)})")
    for axis, (want, have) in enumerate(zip(shape, dims)):
        if have is not None and want != have and not (axis == 0 and batch is None):
            raise QCompileError(f"input {vi.name}: --input-shape gives dim {axis} = {want}, "
                                f"the model fixes it at {have} ({_fmt(dims)})")
    if batch is not None and shape[0] != batch:
        raise QCompileError(f"input {vi.name}: --input-shape gives batch {shape[0]}, "
                            f"--batch {batch}")
    return tuple(shape)


def resolve_inputs(model: onnx.ModelProto, batch: int | None = None,
                   shapes: Mapping[str, tuple] | None = None,
                   samples: Mapping[str, np.ndarray] | None = None,
                   partial: bool = False) -> list[ModelInput]:
    """The model's real inputs with every dim fixed (see the module docstring for the order).

    `samples`: calibration arrays by input name (first axis: samples), whose sample shape fixes
    the symbolic dims after dim 0. `partial`: leave a dim nothing fixes as None instead of
    failing (to read calibration data before its shape can fix the rest).
    """
    shapes = dict(shapes or {})
    vis = _real_inputs(model)
    unknown = sorted(set(shapes) - {vi.name for vi in vis})
    if unknown:
        raise QCompileError(f"--input-shape names {', '.join(map(repr, unknown))}, which "
                            f"{'is' if len(unknown) == 1 else 'are'} no input of the model "
                            f"(inputs: {', '.join(vi.name for vi in vis)})")
    out = []
    for vi in vis:
        dims = _declared_dims(vi)
        if vi.name in shapes:
            fixed = _given(vi, dims, tuple(shapes[vi.name]), batch)
            out.append(ModelInput(vi.name, fixed, _dtype(vi), False))
            continue
        sample = None if samples is None or vi.name not in samples else samples[vi.name]
        resolved: list[int | None] = []
        for axis, d in enumerate(dims):
            if axis == 0:
                resolved.append(batch or d or 1)
            elif d is not None:
                resolved.append(d)
            elif sample is not None and sample.ndim == len(dims):
                resolved.append(int(sample.shape[axis]))
            elif partial:
                resolved.append(None)
            else:
                raise QCompileError(
                    f"input {vi.name}: dimension {axis} is {_dim_label(vi, axis)} and nothing "
                    f"fixes it: give --input-shape {vi.name}:{_fmt([batch or 1, *dims[1:]])} "
                    "(with numbers for ?) or calibration data")
        out.append(ModelInput(vi.name, tuple(resolved), _dtype(vi), dims[0] is None))
    if not out:
        raise QCompileError("the model has no inputs")
    return out


def with_static_inputs(model: onnx.ModelProto, inputs: list[ModelInput]) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs declare `inputs`' static shapes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {i.name: i for i in inputs}
    for vi in out.graph.input:
        if vi.name in by_name:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in by_name[vi.name].shape:
                shape.dim.add().dim_value = int(d)
    return out


def known_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor whose shape onnx's inference knows in full."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # an inconsistent graph: the importer reports it by node name
        return {}
    found = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            found[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    for init in model.graph.initializer:
        found[init.name] = tuple(init.dims)
    return found


def fold_shape_arithmetic(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (static inputs) with every value computed only from shapes and constants
    folded into initializers."""
    # A round folds what inference sees; a folded Reshape target lets the next round see the
    # shapes below it (ShuffleNet's 16 channel shuffles take 17 rounds). Each round folds at
    # least one node, so the graph's size bounds them.
    for _ in range(len(model.graph.node) + 1):
        folded = fold_onnx_constants(model, known_shapes(model))
        if folded is model:
            break
        model = folded
    return model
