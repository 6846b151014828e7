"""ONNX -> Relax, after checking the whole graph up front.

Every unsupported op and attribute is reported in one error with node names, so a user fixes
their export once instead of once per node.
"""
from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import numpy_helper

from qcompiler.errors import QCompileError, UnsupportedModelError
from qcompiler.frontend.constant_gathers import gathers_as_slices
from qcompiler.frontend.layer_origin import with_onnx_nodes
from qcompiler.frontend.layout_transposes import sink_layout_transposes
from qcompiler.frontend.node_names import capture_importer, name_nodes, tag_nodes
from qcompiler.frontend.normalize import normalize_onnx, resize_align_corners_to_one
from qcompiler.frontend.static_shapes import (
    ModelInput,
    fold_shape_arithmetic,
    known_shapes,
    resolve_inputs,
    with_static_inputs,
)

# ONNX ops with an integer kernel (or folded away before quantization).
INTEGER_OPS = frozenset({
    "Conv", "BatchNormalization", "Relu", "Clip", "Add", "Concat", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Identity", "Dropout",
    "Constant", "Sum", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "PRelu",
    "Mul", "Pad", "Transpose", "Slice", "Split", "ReduceMean", "ReduceSum", "Resize",
    "ConvTranspose", "Squeeze", "Unsqueeze",
})
# Elementwise math: part of one lookup table when its only non-constant input is one tensor
# (`passes.fuse_elementwise`), else (e.g. Div of two tensors) float between a dequantize and
# a quantize.
ELEMENTWISE_OPS = frozenset({
    "Sub", "Div", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf", "Neg", "Abs", "Softplus",
    "Softsign", "Mish", "Gelu", "Elu", "Selu", "Max", "Min", "Round",
})
# ONNX ops that import and run in float between a dequantize and a quantize.
FLOAT_FALLBACK_OPS = frozenset({
    "Softmax", "LRN",
})
SUPPORTED_OPS = INTEGER_OPS | ELEMENTWISE_OPS | FLOAT_FALLBACK_OPS



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
    return normalize_onnx(name_nodes(model))


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


_A = onnx.AttributeProto
_POOL_ATTRS = {"kernel_shape": _A.INTS, "strides": _A.INTS, "pads": _A.INTS,
               "dilations": _A.INTS, "ceil_mode": _A.INT, "auto_pad": _A.STRING,
               "storage_order": _A.INT, "count_include_pad": _A.INT}
# The attribute types ONNX defines for the ops we import; anything else is a broken model.
ATTRIBUTE_TYPES: dict[str, dict[str, int]] = {
    "Pad": {"mode": _A.STRING, "pads": _A.INTS, "value": _A.FLOAT},
    "Resize": {"mode": _A.STRING, "coordinate_transformation_mode": _A.STRING,
               "nearest_mode": _A.STRING, "antialias": _A.INT,
               "keep_aspect_ratio_policy": _A.STRING},
    "Conv": {"kernel_shape": _A.INTS, "strides": _A.INTS, "pads": _A.INTS,
             "dilations": _A.INTS, "group": _A.INT, "auto_pad": _A.STRING},
    "ConvTranspose": {"kernel_shape": _A.INTS, "strides": _A.INTS, "pads": _A.INTS,
                      "dilations": _A.INTS, "group": _A.INT, "auto_pad": _A.STRING,
                      "output_padding": _A.INTS, "output_shape": _A.INTS},
    "MaxPool": _POOL_ATTRS, "AveragePool": _POOL_ATTRS,
    "Gemm": {"transA": _A.INT, "transB": _A.INT, "alpha": _A.FLOAT, "beta": _A.FLOAT},
    "BatchNormalization": {"epsilon": _A.FLOAT, "momentum": _A.FLOAT, "training_mode": _A.INT},
    "Concat": {"axis": _A.INT}, "Flatten": {"axis": _A.INT},
    "Clip": {"min": _A.FLOAT, "max": _A.FLOAT}, "Reshape": {"allowzero": _A.INT},
    "Softmax": {"axis": _A.INT}, "LeakyRelu": {"alpha": _A.FLOAT},
    "HardSigmoid": {"alpha": _A.FLOAT, "beta": _A.FLOAT},
    "Transpose": {"perm": _A.INTS}, "Dropout": {"seed": _A.INT},
    "Elu": {"alpha": _A.FLOAT}, "Selu": {"alpha": _A.FLOAT, "gamma": _A.FLOAT},
    "Gelu": {"approximate": _A.STRING},
}


def _type_problems(node: onnx.NodeProto, where: str) -> list[str]:
    expected = ATTRIBUTE_TYPES.get(node.op_type, {})
    bad = []
    for a in node.attribute:
        want = expected.get(a.name)
        if want is not None and a.type != want:
            bad.append(f"{where}: {a.name} must be {_A.AttributeType.Name(want).lower()}, "
                       f"not {_A.AttributeType.Name(a.type).lower()}")
    return bad


def _shape_problems(node: onnx.NodeProto, where: str, weights: dict[str, tuple]) -> list[str]:
    """Values ONNX itself forbids, which TVM's frontend would otherwise accept silently."""
    bad = []
    spatial = 2
    if node.op_type in ("Conv", "MaxPool", "AveragePool"):
        ks = _attr(node, "kernel_shape")
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            wshape = weights[node.input[1]]
            spatial = max(len(wshape) - 2, 0)
            if ks is not None and list(ks) != list(wshape[2:]):
                bad.append(f"{where}: kernel_shape={list(ks)} does not match weight shape "
                           f"{list(wshape)}")
        elif ks is None or len(ks) != spatial or any(k < 1 for k in ks):
            bad.append(f"{where}: kernel_shape={None if ks is None else list(ks)}")
        for name, n, low in (("strides", spatial, 1), ("dilations", spatial, 1),
                             ("pads", 2 * spatial, 0)):
            v = _attr(node, name)
            if v is not None and (len(v) != n or any(x < low for x in v)):
                bad.append(f"{where}: {name}={list(v)}")
    if node.op_type == "Conv":
        g = _attr(node, "group", 1)
        wshape = weights.get(node.input[1]) if len(node.input) > 1 else None
        if g < 1 or (wshape and wshape[0] % g):
            bad.append(f"{where}: group={g} does not divide the {wshape and wshape[0]} "
                       "output channels")
    if node.op_type == "Gemm":
        for name in ("transA", "transB"):
            if _attr(node, name, 0) not in (0, 1):
                bad.append(f"{where}: {name}={_attr(node, name)}")
    return bad


def _attribute_problems(node: onnx.NodeProto, initializers: set[str],
                        weights: dict[str, tuple] | None = None) -> list[str]:
    """Attributes we cannot honour exactly, as 'node (op): attr=value' strings."""
    where = f"{node.name or node.output[0]} ({node.op_type})"
    bad = _type_problems(node, where)
    if bad:
        return bad
    bad = _shape_problems(node, where, weights or {})
    if node.op_type in ("Conv", "ConvTranspose"):
        if len(node.input) < 2 or node.input[1] not in initializers:
            bad.append(f"{where}: weights must be a constant initializer")
        elif len((weights or {}).get(node.input[1], (0, 0, 0, 0))) != 4:
            bad.append(f"{where}: only 2-D convolution is supported")
    if node.op_type == "ConvTranspose" and _attr(node, "output_shape") is not None:
        bad.append(f"{where}: output_shape (give pads and output_padding instead)")
    if node.op_type == "ConvTranspose":
        strides = list(_attr(node, "strides", []) or [1, 1])
        extra = list(_attr(node, "output_padding", []) or [0] * len(strides))
        if any(o >= s for o, s in zip(extra, strides)):
            bad.append(f"{where}: output_padding={extra} not below strides={strides}")
    if node.op_type in ("MaxPool", "AveragePool"):
        auto_pad = _attr(node, "auto_pad", b"NOTSET")
        if _attr(node, "ceil_mode", 0) and auto_pad != b"NOTSET":  # ONNX leaves it undefined
            bad.append(f"{where}: ceil_mode=1 with auto_pad={auto_pad.decode()}")
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
    if node.op_type == "PRelu" and len(node.input) > 1 and node.input[1] in (weights or {}):
        slope = list((weights or {})[node.input[1]])
        if sum(d != 1 for d in slope) > 1:  # TVM lowers it to where(x < 0, ...), not a table
            bad.append(f"{where}: slope shape {slope} (qcompiler takes one slope per channel "
                       "or one for all)")
    if node.op_type == "Pad" and _attr(node, "mode", b"constant") not in \
            (b"constant", b"reflect", b"edge"):
        bad.append(f"{where}: mode={_attr(node, 'mode').decode()}")
    if node.op_type == "Resize" and _attr(node, "antialias", 0):
        bad.append(f"{where}: antialias=1")
    if node.op_type == "Resize" and _attr(node, "keep_aspect_ratio_policy", b"stretch") != \
            b"stretch":
        bad.append(f"{where}: keep_aspect_ratio_policy="
                   f"{_attr(node, 'keep_aspect_ratio_policy').decode()}")
    if node.op_type == "BatchNormalization" and _attr(node, "training_mode", 0):
        bad.append(f"{where}: training_mode=1")
    return bad


def check_supported(model: onnx.ModelProto) -> None:
    """Raise one UnsupportedModelError listing every unsupported op and attribute."""
    initializers = {i.name for i in model.graph.initializer}
    initializers |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    ops: dict[str, list[str]] = {}
    attrs: list[str] = []
    for i, node in enumerate(model.graph.node):
        name = node.name or (node.output[0] if node.output else f"#{i}")
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            ops.setdefault(node.op_type, []).append(name)
        else:
            attrs += _attribute_problems(node, initializers, weights)
    parts = [f"op {op} at node(s) {', '.join(names)}" for op, names in sorted(ops.items())]
    parts += [f"attribute {a}" for a in attrs]
    if parts:
        raise UnsupportedModelError("unsupported: " + "; ".join(parts))


def graph_inputs(model: onnx.ModelProto, batch: int | None,
                 shapes: dict[str, tuple] | None = None,
                 samples: dict | None = None) -> list[ModelInput]:
    """Real inputs (not initializers) with every dimension fixed: from `shapes`
    (`--input-shape`), else from the calibration `samples`, the batch from `batch` (default
    1); a dim nothing fixes is an error naming the input (`frontend.static_shapes`)."""
    return resolve_inputs(model, batch, shapes, samples)


@contextlib.contextmanager
def _quiet_frontend() -> Iterator[None]:
    """Hide what TVM's frontend prints on a failed conversion (Python prints to stdout, C++
    warnings to file descriptor 2): the user gets our one-line error instead."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
            gc.collect()  # half-built BlockBuilders warn when they are destroyed
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _relax_pad_converter():  # noqa: ANN202 - a subclass of the frontend's Pad converter
    """TVM's Pad converter (opset 11+) emits a TOPI PrimFunc whose pads and value are lost in
    its body; this one emits `relax.nn.pad` (after a `strided_slice` for negative pads), which
    the quantizer can read and re-emit on the integer tensor."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    class Pad(fe.Pad):
        @classmethod
        def _impl_v2(cls, bb, inputs, attr, params):  # noqa: ANN001, ANN206
            pads = list(attr["pads"])
            return cls._relax_pad(bb, inputs[0], pads[:len(pads) // 2], pads[len(pads) // 2:],
                                  attr.get("value", 0.0), attr.get("mode", b"constant"))

        @classmethod
        def _lower_pad(cls, bb, inputs, attr, params, allowed_modes):  # noqa: ANN001, ANN206
            before, after, value = cls._parse_pads_and_axes(inputs, params)
            return cls._relax_pad(bb, inputs[0], before, after, value,
                                  attr.get("mode", b"constant"))

        @staticmethod
        def _relax_pad(bb, x, before, after, value, mode):  # noqa: ANN001, ANN205
            mode = mode.decode("utf-8")
            shape = [int(d) for d in x.ty.shape]
            if any(p < 0 for p in before + after):
                axes = list(range(len(shape)))
                begin = [max(-b, 0) for b in before]
                end = [d - max(-a, 0) for d, a in zip(shape, after)]
                x = bb.emit(relax.op.strided_slice(x, axes, begin, end))
            width = [max(p, 0) for pair in zip(before, after) for p in pair]
            relax_mode = {"edge": "replicate"}.get(mode, mode)
            return relax.op.nn.pad(x, width, relax_mode, float(value))

    return Pad


@contextlib.contextmanager
def _our_converters() -> Iterator[None]:
    """Swap our converters into TVM's frontend for one import."""
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    original = fe._get_convert_map
    pad = _relax_pad_converter()
    fe._get_convert_map = lambda: {**original(), "Pad": pad}
    try:
        yield
    finally:
        fe._get_convert_map = original


def import_onnx(model: onnx.ModelProto, inputs: list[ModelInput]):  # -> tvm.IRModule
    """ONNX -> Relax with TVM's frontend; weights become constants."""
    from tvm.relax.frontend.onnx import from_onnx

    # Static inputs make the exporter's shape arithmetic constants: fold it before judging ops.
    model = fold_shape_arithmetic(with_static_inputs(name_nodes(model), inputs))
    model = gathers_as_slices(model, known_shapes(model))
    model = sink_layout_transposes(model)
    check_supported(model)
    model = resize_align_corners_to_one(model, known_shapes(model))
    problem = None
    with _quiet_frontend(), _our_converters(), capture_importer() as importer:
        try:
            mod = from_onnx(model, shape_dict={i.name: list(i.shape) for i in inputs},
                            dtype_dict={i.name: i.dtype for i in inputs},
                            keep_params_in_input=False, sanitize_input_names=False)
            # the ONNX node names layers are reported by (`frontend.layer_origin`)
            mod = with_onnx_nodes(tag_nodes(mod, model, importer[0]._nodes), model)
        except Exception as exc:  # the frontend raises bare TVM errors on shape problems
            text = str(exc).strip()
            problem = text.splitlines()[-1] if text else type(exc).__name__
            del exc
    if problem is not None:
        raise QCompileError(f"ONNX import failed: {problem}")
    _check_nonempty(mod, model)
    return mod


def _check_nonempty(mod, model: onnx.ModelProto) -> None:  # mod: the imported tvm.IRModule
    """A tensor with a dimension of 0 (e.g. a pool window larger than its padded input,
    which ONNX's shape inference rounds to 1) is an error in the file, named by its node;
    later passes would divide by its element count."""
    import tvm
    from tvm import relax

    from qcompiler.frontend.node_names import node_of
    from qcompiler.relax_access import bindings

    op_types = {n.name: n.op_type for n in model.graph.node}
    for b in bindings(mod["main"]):
        ty = b.var.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None \
                or not str(ty.dtype).startswith("float"):  # activations (not shape values)
            continue
        dims = [int(d) if isinstance(d, tvm.tirx.IntImm) else None for d in ty.shape]
        if 0 in dims:
            node = node_of(b.value)
            where = f"node '{node}' ({op_types.get(node, '?')})" if node else "a node"
            raise QCompileError(f"{where}: its output has shape {dims}, with no elements "
                                "(a window larger than its padded input?)")


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Size of the float weights, for the float -> int8 size comparison."""
    total = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            total += sum(numpy_helper.to_array(a.t).nbytes for a in node.attribute
                         if a.name == "value")
    return total
