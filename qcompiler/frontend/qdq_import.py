"""QDQ (fake-quant) ONNX models: read the quantization they carry, then strip it.

A QDQ model (ONNX Runtime `quantize_static(..., QuantFormat.QDQ)`, PyTorch fake-quant export)
marks each quantized activation `x` with `DequantizeLinear(QuantizeLinear(x, s, zp), s, zp)`
and stores each weight as integers behind a `DequantizeLinear(q, s[c], 0, axis)`
(`r = s * (q - zp)`). We record the activation `(s, zp, dtype)` by tensor name and the weight
integers and scales by float value, and return the float graph without Q/DQ nodes, its weights
dequantized exactly as ONNX does (float32 `(q - zp) * s`). The pipeline then imports the float
graph as usual and uses these parameters instead of calibrated ones.

The weights of a Conv, ConvTranspose, Gemm or MatMul (their input 1) are taken as the model's
integers, so they must be int8 with zero point 0. Any other constant behind Q/DQ (ORT quantizes
the operand of a `Mul`/`Add` by a constant like an activation: uint8, any zero point, per
tensor or per axis) is just the float constant it dequantizes to, which the compiler handles
like any other constant.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qcompiler.errors import QCompileError
from qcompiler.frontend.qdq_chains import keep_chain_roundings
from qcompiler.numerics.qparams import QParams

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
ACTIVATION_DTYPES = ("uint8", "int8", "int16")
WEIGHT_DTYPE = "int8"
# The input each op takes its weight from (ONNX input index).
WEIGHT_INPUTS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


@dataclass(frozen=True)
class GivenWeight:
    """A weight exactly as the model quantized it: `W = s[c] * q` along the channel `axis`."""

    q: np.ndarray      # int8
    scale: np.ndarray  # float32, one per channel along `axis`
    axis: int


@dataclass
class WeightTable:
    """Given weights keyed by their dequantized float value (the Relax frontend drops names,
    but keeps a constant's value; a transposed 2-D weight is found too)."""

    entries: dict[tuple, GivenWeight] = field(default_factory=dict)

    @staticmethod
    def _key(w: np.ndarray) -> tuple:
        w = np.ascontiguousarray(w, np.float32)
        return w.shape, w.tobytes()

    def add(self, w: np.ndarray, given: GivenWeight) -> None:
        self.entries[self._key(w)] = given
        if w.ndim == 2:
            self.entries[self._key(w.T)] = GivenWeight(given.q.T.copy(), given.scale,
                                                       1 - given.axis)

    def lookup(self, w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
        """`(q, s_w)` with one scale per channel of `axis`, or None if `w` is not given."""
        given = self.entries.get(self._key(w))
        if given is None:
            return None
        if given.scale.size == 1:
            return given.q, np.full(w.shape[axis], given.scale.reshape(-1)[0], np.float32)
        if given.axis != axis:
            raise QCompileError(f"a weight of shape {list(w.shape)} has per-axis scales along "
                                f"axis {given.axis}; qcompiler needs them along the output "
                                f"channels (axis {axis})")
        return given.q, given.scale


@dataclass
class QDQModel:
    """The float graph of a QDQ model and the quantization it carried."""

    model: onnx.ModelProto
    activations: dict[str, QParams]  # tensor name -> (scale, zero point, dtype) as given
    weights: WeightTable


def is_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS and n.domain in ("", "ai.onnx") for n in model.graph.node)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    return consts


def _where(node: onnx.NodeProto) -> str:
    return f"{node.op_type} {node.name or node.output[0]}"


def _params(node: onnx.NodeProto, consts: dict[str, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale float32, zero point, axis) of a Q/DQ node, checked against what we support."""
    names = list(node.input) + [""] * (3 - len(node.input))
    for name, what in ((names[1], "scale"), (names[2], "zero point")):
        if name and name not in consts:
            raise QCompileError(f"{_where(node)}: the {what} {name} is not a constant")
    scale = consts[names[1]]
    if scale.dtype != np.float32:
        raise QCompileError(f"{_where(node)}: scale {names[1]} is {scale.dtype}; qcompiler "
                            "takes float32 scales")
    zp = consts[names[2]] if names[2] else np.zeros(scale.shape, np.uint8)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise QCompileError(f"{_where(node)}: scale {names[1]} must be finite and > 0")
    for a in node.attribute:
        if a.name == "block_size" and a.i:
            raise QCompileError(f"{_where(node)}: blocked quantization (block_size={a.i}) "
                                "is not supported")
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    return scale, zp, axis


def _per_axis(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast along `axis` of an ndim tensor."""
    if v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return v.reshape(shape)


def _activation(node: onnx.NodeProto, scale: np.ndarray, zp: np.ndarray) -> QParams:
    if scale.size != 1 or zp.size != 1:
        raise QCompileError(f"{_where(node)}: per-axis activation quantization is not "
                            "supported (one scale and zero point per tensor)")
    if zp.dtype.name not in ACTIVATION_DTYPES:
        raise QCompileError(f"{_where(node)}: zero point is {zp.dtype}; qcompiler takes "
                            f"{', '.join(ACTIVATION_DTYPES[:-1])} or {ACTIVATION_DTYPES[-1]} "
                            "activations")
    return QParams(float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), zp.dtype.name)


def _quantize_constant(node: onnx.NodeProto, x: np.ndarray, consts: dict) -> np.ndarray:
    """ONNX QuantizeLinear of a constant (a fake-quant weight): saturate(rint(x / s) + zp)."""
    scale, zp, axis = _params(node, consts)
    if zp.dtype.kind not in "iu":
        raise QCompileError(f"{_where(node)}: zero point is {zp.dtype}; qcompiler takes "
                            "integer quantized constants")
    lo, hi = np.iinfo(zp.dtype).min, np.iinfo(zp.dtype).max
    q = np.rint(x.astype(np.float32) / _per_axis(scale, axis, x.ndim)) \
        + _per_axis(zp, axis, x.ndim).astype(np.float32)
    return np.clip(q, lo, hi).astype(zp.dtype)


def _dequantize_constant(node: onnx.NodeProto, q: np.ndarray, consts: dict,
                         table: WeightTable, is_weight: bool) -> np.ndarray:
    """ONNX DequantizeLinear of a constant, float32 `(q - zp) * s`. Symmetric int8 tensors are
    recorded as given weights (found by value, also behind a Transpose); a weight input
    (`is_weight`) must be one."""
    scale, zp, axis = _params(node, consts)
    if q.dtype.kind not in "iu":
        raise QCompileError(f"{_where(node)}: constant {node.input[0]} is {q.dtype}; "
                            "qcompiler takes integer quantized constants")
    zp_b = _per_axis(zp, axis, q.ndim).astype(np.int64)
    w = ((q.astype(np.int64) - zp_b).astype(np.float32)
         * _per_axis(scale, axis, q.ndim)).astype(np.float32)
    if is_weight and q.dtype.name != WEIGHT_DTYPE:
        raise QCompileError(f"{_where(node)}: weight {node.input[0]} is {q.dtype}; qcompiler "
                            "takes int8 weights")
    if is_weight and np.any(zp != 0):
        raise QCompileError(f"{_where(node)}: weight {node.input[0]} has a nonzero zero "
                            "point; qcompiler takes symmetric weights (zero point 0)")
    if q.dtype.name == WEIGHT_DTYPE and q.ndim >= 2 and not np.any(zp != 0):
        table.add(w, GivenWeight(q, scale.reshape(-1).astype(np.float32),
                                 axis % q.ndim if scale.size > 1 else 0))
    return w


def _weight_names(nodes: list[onnx.NodeProto]) -> set[str]:
    """The tensors some node takes as its weight (`WEIGHT_INPUTS`)."""
    return {n.input[WEIGHT_INPUTS[n.op_type]] for n in nodes
            if n.op_type in WEIGHT_INPUTS and len(n.input) > WEIGHT_INPUTS[n.op_type]}


def strip_qdq(model: onnx.ModelProto) -> QDQModel:
    """The float graph without Q/DQ nodes, and the parameters those nodes carried."""
    graph = model.graph
    consts = _constants(model)
    nodes = list(graph.node)
    activations: dict[str, QParams] = {}
    table = WeightTable()
    alias: dict[str, str] = {}   # a DequantizeLinear output -> the float tensor it stands for
    new_consts: dict[str, np.ndarray] = {}
    q_of: dict[str, tuple[str, QParams]] = {}  # QuantizeLinear output -> (its input, params)
    removed: set[int] = set()
    weights = _weight_names(nodes)
    for i, n in enumerate(nodes):
        if n.op_type == "QuantizeLinear" and n.input[0] in consts:
            consts[n.output[0]] = _quantize_constant(n, consts[n.input[0]], consts)
            removed.add(i)
        elif n.op_type == "QuantizeLinear":
            q_of[n.output[0]] = (n.input[0], _activation(n, *_params(n, consts)[:2]))
            removed.add(i)
        elif n.op_type == "DequantizeLinear" and n.input[0] in consts:
            new_consts[n.output[0]] = _dequantize_constant(n, consts[n.input[0]], consts,
                                                           table, n.output[0] in weights)
            removed.add(i)
        elif n.op_type == "DequantizeLinear":
            if n.input[0] not in q_of:
                raise QCompileError(f"{_where(n)}: input {n.input[0]} is neither a constant "
                                    "nor a QuantizeLinear output")
            src, qp = q_of[n.input[0]]
            if _activation(n, *_params(n, consts)[:2]) != qp:
                raise QCompileError(f"{_where(n)}: scale or zero point differ from its "
                                    f"QuantizeLinear's (tensor {src})")
            activations[src] = qp
            alias[n.output[0]] = alias.get(src, src)
            removed.add(i)
    kept = [n for i, n in enumerate(nodes) if i not in removed]
    for n in kept:
        for j, name in enumerate(n.input):
            if name in q_of:
                raise QCompileError(f"{_where(n)}: takes the quantized tensor {name} directly "
                                    "(expected a DequantizeLinear between)")
            n.input[j] = alias.get(name, name)
    # A graph output that was a DequantizeLinear output keeps its name: rename its producer.
    rename = {alias[o.name]: o.name for o in graph.output if o.name in alias}
    for n in kept:
        for j, name in enumerate(n.output):
            n.output[j] = rename.get(name, name)
        for j, name in enumerate(n.input):
            n.input[j] = rename.get(name, name)
    activations = {rename.get(k, k): v for k, v in activations.items()}
    stripped = _separate_batch_norms(_rebuild(model, kept, new_consts), activations, table)
    stripped = keep_chain_roundings(stripped, activations)  # (table chains skip the tensors)
    return QDQModel(stripped, activations, table)


def _separate_batch_norms(model: onnx.ModelProto, activations: dict[str, QParams],
                          table: WeightTable) -> onnx.ModelProto:
    """A BatchNormalization whose input the model quantizes becomes a layer of its own, a
    depthwise 1x1 conv `y[c] = k[c] x[c] + beta[c] - mu[c] k[c]`, `k = gamma / sqrt(var + eps)`,
    with int8 weights `sign(k) 127` at scale `|k| / 127` (exact). Folding it into the conv
    before it (as for a float model) would skip the rounding the model does between the two
    and change that conv's weights, which the model gives as integers."""
    consts = _constants(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
             [*onnx.shape_inference.infer_shapes(model).graph.value_info, *model.graph.input]}
    nodes, new_consts = [], {}
    for n in model.graph.node:
        params = list(n.input[1:5])
        if n.op_type != "BatchNormalization" or n.input[0] not in activations \
                or ranks.get(n.input[0]) != 4 or len(n.output) != 1 \
                or not all(p in consts for p in params):
            nodes.append(n)
            continue
        gamma, beta, mu, var = (consts[p].astype(np.float64).reshape(-1) for p in params)
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        k = gamma / np.sqrt(var + eps)
        scale = (np.abs(k) / 127).astype(np.float32)
        scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        q = (np.sign(k) * (k != 0) * 127).astype(np.int8).reshape(-1, 1, 1, 1)
        w = (q.astype(np.float32) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
        table.add(w, GivenWeight(q, scale, 0))
        name = n.name or n.output[0]
        new_consts[f"{name}_k"] = w
        new_consts[f"{name}_shift"] = (beta - mu * k).astype(np.float32)
        nodes.append(helper.make_node("Conv", [n.input[0], f"{name}_k", f"{name}_shift"],
                                      list(n.output), name=n.name, group=k.size,
                                      kernel_shape=[1, 1]))
    return _rebuild(model, nodes, new_consts) if new_consts else model


def _rebuild(model: onnx.ModelProto, nodes: list, new_consts: dict[str, np.ndarray]
             ) -> onnx.ModelProto:
    """The model with these nodes, the new float constants, and only initializers in use."""
    used = {name for n in nodes for name in n.input} | {o.name for o in model.graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]
    inits = [i for i in model.graph.initializer if i.name in used]
    inits += [numpy_helper.from_array(v, k) for k, v in new_consts.items() if k in used]
    produced = {o for n in nodes for o in n.output}
    value_info = [v for v in model.graph.value_info if v.name in produced]
    graph = helper.make_graph(nodes, model.graph.name, list(model.graph.input),
                              list(model.graph.output), inits, value_info=value_info)
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out
