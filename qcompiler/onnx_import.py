"""ONNX -> Relax, after checking the whole graph up front.

Every unsupported op and attribute is reported in one error with node names, so a user fixes
their export once instead of once per node.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper

from qcompiler.errors import QCompileError, UnsupportedModelError

# ONNX ops with an integer kernel (or folded away before quantization).
INTEGER_OPS = frozenset({
    "Conv", "BatchNormalization", "Relu", "Clip", "Add", "Concat", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Identity", "Dropout",
    "Constant",
})
# ONNX ops that import and run in float between a dequantize and a quantize.
FLOAT_FALLBACK_OPS = frozenset({
    "Sigmoid", "Tanh", "Softmax", "LeakyRelu", "HardSigmoid", "HardSwish", "Mul", "Sub",
    "Div", "Exp", "Transpose", "Squeeze", "Unsqueeze",
})
SUPPORTED_OPS = INTEGER_OPS | FLOAT_FALLBACK_OPS


@dataclass(frozen=True)
class ModelInput:
    name: str
    shape: tuple[int, ...]
    dtype: str
    dynamic_batch: bool = False


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and validate an ONNX file; every failure is a one-line QCompileError naming it."""
    path = Path(path)
    if not path.exists():
        raise QCompileError(f"{path}: no such file")
    if path.is_dir():
        raise QCompileError(f"{path}: is a directory, expected an .onnx file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise QCompileError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise QCompileError(f"{path}: not an ONNX model (the graph has no nodes)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QCompileError(f"{path}: fails onnx.checker: {first}") from None
    return model


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _attribute_problems(node: onnx.NodeProto, initializers: set[str]) -> list[str]:
    """Attributes we cannot honour exactly, as 'node (op): attr=value' strings."""
    where = f"{node.name or node.output[0]} ({node.op_type})"
    bad: list[str] = []
    if node.op_type == "Conv":
        if len(_attr(node, "kernel_shape", [0, 0]) or [0, 0]) != 2:
            bad.append(f"{where}: only 2-D convolution is supported")
        if len(node.input) < 2 or node.input[1] not in initializers:
            bad.append(f"{where}: weights must be a constant initializer")
    if node.op_type in ("MaxPool", "AveragePool"):
        if _attr(node, "ceil_mode", 0):
            bad.append(f"{where}: ceil_mode=1")
        if any(d != 1 for d in (_attr(node, "dilations", []) or [])):
            bad.append(f"{where}: dilations={list(_attr(node, 'dilations'))}")
        if len(_attr(node, "kernel_shape", [0, 0])) != 2:
            bad.append(f"{where}: only 2-D pooling is supported")
        if node.op_type == "MaxPool" and len(node.output) > 1:
            bad.append(f"{where}: the Indices output")
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0):
            bad.append(f"{where}: transA=1")
        if len(node.input) < 2 or node.input[1] not in initializers:
            bad.append(f"{where}: B must be a constant initializer")
    if node.op_type == "BatchNormalization" and _attr(node, "training_mode", 0):
        bad.append(f"{where}: training_mode=1")
    return bad


def check_supported(model: onnx.ModelProto) -> None:
    """Raise one UnsupportedModelError listing every unsupported op and attribute."""
    initializers = {i.name for i in model.graph.initializer}
    initializers |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    ops: dict[str, list[str]] = {}
    attrs: list[str] = []
    for i, node in enumerate(model.graph.node):
        name = node.name or (node.output[0] if node.output else f"#{i}")
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            ops.setdefault(node.op_type, []).append(name)
        else:
            attrs += _attribute_problems(node, initializers)
    parts = [f"op {op} at node(s) {', '.join(names)}" for op, names in sorted(ops.items())]
    parts += [f"attribute {a}" for a in attrs]
    if parts:
        raise UnsupportedModelError("unsupported: " + "; ".join(parts))


def graph_inputs(model: onnx.ModelProto, batch: int | None) -> list[ModelInput]:
    """Real inputs (not initializers) with the batch dimension fixed.

    A symbolic or zero first dimension becomes `batch` (default 1); any other symbolic
    dimension cannot be fixed and is an error naming the input.
    """
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = []
        first = tt.shape.dim[0] if len(tt.shape.dim) else None
        dynamic = first is not None and not (first.HasField("dim_value") and first.dim_value > 0)
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value if not (axis == 0 and batch) else batch)
            elif axis == 0:
                dims.append(batch or 1)
            else:
                raise QCompileError(
                    f"input {vi.name}: dimension {axis} is symbolic ({d.dim_param!r}); "
                    "only the batch dimension can be dynamic")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        if dtype != "float32":
            raise QCompileError(f"input {vi.name}: dtype {dtype}, expected float32")
        out.append(ModelInput(vi.name, tuple(dims), dtype, dynamic))
    if not out:
        raise QCompileError("the model has no inputs")
    return out


def import_onnx(model: onnx.ModelProto, inputs: list[ModelInput]):  # -> tvm.IRModule
    """ONNX -> Relax with TVM's frontend; weights become constants."""
    from tvm.relax.frontend.onnx import from_onnx

    check_supported(model)
    try:
        return from_onnx(model, shape_dict={i.name: list(i.shape) for i in inputs},
                         dtype_dict={i.name: i.dtype for i in inputs},
                         keep_params_in_input=False, sanitize_input_names=False)
    except Exception as exc:  # the frontend raises bare TVM errors on shape problems
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise QCompileError(f"ONNX import failed: {first}") from None


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Size of the float weights, for the float -> int8 size comparison."""
    total = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            total += sum(numpy_helper.to_array(a.t).nbytes for a in node.attribute
                         if a.name == "value")
    return total
