"""Realize the integer graph from the fused float graph and its calibrated qparams.

Every float binding becomes integer kernels by the lowering its op (or matched composite) has
in `COMPOSITES` / `OPS` below (`qcompiler.lowering`: the formulas are in each module's
docstring, the numeric contract in shared/DESIGN.md):
  weights    W_q[c] = clamp(rint(W[c] / s_w[c]), -Q, Q),  s_w[c] = max|W[c]| / Q
  bias       b_q[c] = rint(b[c] / (s_x * s_w[c]))  (int32)
  requant    y = clamp(zp_y + qms(acc + b_q[c], M0[c], n[c]), lo, hi),  M = s_x s_w[c] / s_y
  activation ReLU / Clip(a, b) -> lo = zp_y + rint(a / s_y), hi = zp_y + rint(b / s_y)
Every kernel is a `call_tir` to a PrimFunc from `qcompiler.kernels` that carries its op name
and attributes, which is what the reference interpreter executes. An op without an integer
kernel (no lowering, or one that declines its form) runs in float between a dequantize and a
quantize and is listed as a float fallback (`qcompiler.lowering.float_islands`).

The result has `main_int` (integer in, integer out) and `main` (float in: quantize ->
main_int -> dequantize -> float out).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import tvm
from qcompiler.passes import module_pass
from tvm import relax

from qcompiler import kernels
from qcompiler.errors import QCompileError
from qcompiler.frontend.layer_origin import layer_origins
from qcompiler.frontend.qdq_import import WeightTable
from qcompiler.graph_meta import LayerRecord, attach_graph_meta
from qcompiler.lowering import conv, moves, spatial, tables
from qcompiler.lowering.context import Context
from qcompiler.lowering.float_islands import float_fallback
from qcompiler.lowering.values import Value
from qcompiler.lowering.weights import WeightQuantizer
from qcompiler.numerics.calibrate import tensor_bindings
from qcompiler.numerics.qparams import QParams, dtype_range
from qcompiler.relax_access import bindings, op_name, output_exprs, shape_of

# Matched composites (`passes.fuse_activation`): (ctx, call, parts, qp) -> the kernel's call,
# or None for a form the pass refuses.
COMPOSITES: dict[str, Callable] = {
    "qcompiler.conv2d": conv.conv2d, "qcompiler.conv2d_transpose": conv.conv2d_transpose,
    "qcompiler.dense": conv.dense, "qcompiler.add": conv.add,
    "qcompiler.hardswish": tables.table_composite,
    "qcompiler.hardsigmoid": tables.table_composite,
    "qcompiler.elementwise": tables.elementwise,  # `passes.fuse_elementwise`: one table
}
# Plain ops: (ctx, call, qp) -> the output Value, or None: the op stays float.
OPS: dict[str, Callable] = {
    "relax.nn.max_pool2d": spatial.pool, "relax.nn.avg_pool2d": spatial.pool,
    "relax.mean": spatial.reduce, "relax.sum": spatial.reduce,
    "relax.image.resize2d": spatial.resize,
    "relax.nn.pad": spatial.pad,
    **{op: tables.table_op for op in tables.TABLE_OPS}, "relax.multiply": tables.mul,
    **{op: moves.move for op in moves.MOVES}, "relax.concat": moves.concat,
    "relax.nn.relu": moves.clamp, "relax.clip": moves.clamp,
    "relax.add": conv.add_constant, "relax.subtract": conv.add_constant,
}
# Ops whose output keeps its input's qparams, so their binding needs none of its own.
PASSTHROUGH_OPS = frozenset({"relax.reshape", "relax.flatten", "relax.squeeze",
                             "relax.expand_dims", "relax.nn.max_pool2d", "relax.nn.relu",
                             "relax.clip"})


@dataclass
class _Realizer:
    mod: tvm.IRModule
    in_qp: list[QParams]
    out_qp: list[QParams | None]  # None: not known (a QDQ model without Q/DQ there)
    ctx: Context
    layers: list[LayerRecord] = field(default_factory=list)

    def record(self, var: relax.Var, op: str, status: str, detail: str = "",
               weight_bits: int = 0) -> None:
        """The summary line of the layer bound to `var`, named by its ONNX nodes."""
        origin = self.ctx.origins.get(var)
        self.layers.append(LayerRecord(var.name, op, status, detail, weight_bits=weight_bits)
                           if origin is None else
                           LayerRecord(origin.name, op, status, detail, weight_bits=weight_bits,
                                       onnx_op=origin.op_type, fused=list(origin.fused)))

    # ---- the walk -----------------------------------------------------------------------
    def binding(self, var: relax.Var, value: relax.Expr, qp: QParams | None) -> None:
        name, env = self.ctx.label(var), self.ctx.env
        if isinstance(value, relax.Var):
            env[var] = env[value]
            return
        if isinstance(value, relax.Tuple):
            env[var] = [env[f] for f in value.fields]
            return
        if isinstance(value, relax.TupleGetItem):
            env[var] = env[value.tuple_value][value.index]
            return
        if op_name(value) == "relax.split":
            env[var] = moves.split(self.ctx, var, value)
            self.record(var, "split", "integer")
            return
        if not isinstance(var.ty, relax.TensorType):
            raise QCompileError(f"layer {name}: {op_name(value) or 'expression'} returns a "
                                "non-tensor value, which qcompiler cannot quantize")
        if not isinstance(value, relax.Call):
            raise QCompileError(f"layer {name}: unsupported expression "
                                f"{type(value).__name__}")
        op = op_name(value)
        if op not in PASSTHROUGH_OPS:
            self.ctx.require(var, qp)
        if isinstance(value.op, relax.GlobalVar):
            self.composite(var, value, op, qp)
            return
        lower = OPS.get(op)
        out = lower(self.ctx, value, qp) if lower else None
        if out is not None:
            env[var] = out
            self.record(var, op.split(".")[-1], "integer")
            return
        env[var] = float_fallback(self.ctx, var, value, qp)
        self.record(var, op.replace("relax.", ""), "float",
                    "float op between dequantize and quantize")

    def composite(self, var: relax.Var, value: relax.Call, op: str, qp: QParams) -> None:
        name, weights = self.ctx.label(var), self.ctx.weights
        origin = self.ctx.origins.get(var)
        func = self.mod[value.op]
        kind = str(func.attrs["Composite"]) if func.attrs and "Composite" in func.attrs else ""
        parts = {**conv.composite_parts(func),  # named by its ONNX node, else its kind
                 "name": name if origin else f"{name} ({kind or op})",
                 "func": func, "kind": kind}
        lower = COMPOSITES.get(kind)
        weights.start_layer(var, origin.name if origin else var.name, len(self.layers))
        out = lower(self.ctx, value, parts, qp) if lower else None
        if out is None:
            raise QCompileError(f"layer {name}: composite {kind or op} has a form "
                                "qcompiler cannot quantize")
        self.ctx.env[var] = Value(out, qp)
        label = parts.get("label") or kind.split(".")[-1]  # a lowering may name its chain
        self.record(var, label, "integer", weights.note, weights.bits_used)
        weights.note = ""

    def run(self) -> tvm.IRModule:
        main, bb, env = self.mod["main"], self.ctx.bb, self.ctx.env
        bound = tensor_bindings(main)
        qp_of = dict(zip(bound, self.out_qp))
        position = {v: k for k, v in enumerate(bound)}
        params = [relax.Var(p.name, relax.TensorType(shape_of(p), q.dtype))
                  for p, q in zip(main.params, self.in_qp)]
        for p, ip, q in zip(main.params, params, self.in_qp):
            env[p] = Value(ip, q)
        located: list = []
        with bb.function("main_int", params):
            with bb.dataflow():
                for b in bindings(main):
                    n_layers = len(self.layers)
                    self.binding(b.var, b.value, qp_of.get(b.var))
                    if len(self.layers) > n_layers and b.var in qp_of:
                        located.append((self.layers[-1], position[b.var], b.var))
                outs = output_exprs(main)
                out_vals = [env[o] for o in outs]
                for r, index, var in located:  # after the outputs' quantize are emitted
                    self._locate(r, index, var)
                ret = out_vals[0].expr if len(out_vals) == 1 else \
                    relax.Tuple([v.expr for v in out_vals])
                gv_out = bb.emit_output(ret)
            bb.emit_func_output(gv_out)
        self.ctx.weights.check_layer_keys(self.layers)
        self._float_wrapper(main, params, outs, out_vals)
        mod = bb.get()
        return attach_graph_meta(
            mod, [{"name": p.name, "shape": list(shape_of(p)), **q.to_json()}
                  for p, q in zip(main.params, self.in_qp)],
            [{"name": o.name, "shape": list(shape_of(v.expr)), **v.qp.to_json()}
             for o, v in zip(outs, out_vals)], self.layers)

    def _locate(self, record: LayerRecord, index: int, var: relax.Var) -> None:
        """Where a layer's value lives in both graphs, for per-layer error reports."""
        v = self.ctx.env[var]
        record.index = index
        record.tensor = v.expr.name if v.is_quantized and isinstance(v.expr, relax.Var) else ""
        record.scale, record.zero_point = v.qp.scale, v.qp.zero_point

    def _float_wrapper(self, main: relax.Function, int_params: list, outs: list,
                       out_vals: list[Value]) -> None:
        bb, call_kernel = self.ctx.bb, self.ctx.call_kernel
        gv_int = bb.get().get_global_var("main_int")
        params = [relax.Var(p.name, p.ty) for p in main.params]
        with bb.function("main", params):
            with bb.dataflow():
                qs = []
                for p, ip, q in zip(params, int_params, self.in_qp):
                    lo, hi = dtype_range(q.dtype)
                    func = kernels.quantize(shape_of(p), q.scale, q.zero_point, q.dtype, lo, hi)
                    qs.append(call_kernel("quantize", func, [p], shape_of(p), q.dtype))
                r = bb.emit(relax.Call(gv_int, qs))
                fs = []
                for i, v in enumerate(out_vals):
                    item = r if len(out_vals) == 1 else bb.emit(relax.TupleGetItem(r, i))
                    shape = shape_of(v.expr)
                    func = kernels.dequantize(shape, v.qp.dtype, v.qp.scale, v.qp.zero_point)
                    fs.append(call_kernel("dequantize", func, [item], shape, "float32"))
                ret = fs[0] if len(fs) == 1 else relax.Tuple(fs)
                gv_out = bb.emit_output(ret)
            bb.emit_func_output(gv_out)


def realize(mod: tvm.IRModule, in_qparams: list[QParams],
            binding_qparams: list[QParams | None], per_channel: bool = True,
            weight_bits: int = 8, given: WeightTable | None = None,
            names: list[str | None] | None = None,
            means: tuple[list, list] | None = None,
            layer_bits: dict | None = None, rounding: dict | None = None) -> tvm.IRModule:
    """The rewrite itself, callable directly so a QCompileError keeps its type (an exception
    raised inside a pass reaches Python through TVM's FFI as a RuntimeError).

    `given` holds weights the model quantized itself; `names` (per tensor binding) name the
    ONNX tensors in errors; `means` (per graph input, per tensor binding: `channel_means`)
    turns bias correction on; `layer_bits` (float graph var, layer name or "#index" -> 4 | 8)
    overrides `weight_bits` per layer; `rounding` (float graph var -> LearnedRounding) is
    AdaRound's choice of rounding direction per weight."""
    bound = tensor_bindings(mod["main"])
    mean_of = None if means is None else \
        dict(zip([*mod["main"].params, *bound], [*means[0], *means[1]]))
    weights = WeightQuantizer(per_channel, weight_bits, given, mean_of, dict(layer_bits or {}),
                              dict(rounding or {}))
    ctx = Context(weights, dict(zip(bound, names or [])), layer_origins(mod))
    return _Realizer(mod, in_qparams, binding_qparams, ctx).run()


def quantize(in_qparams: list[QParams], binding_qparams: list[QParams],
             per_channel: bool = True) -> tvm.transform.Pass:
    """The realize pass: fused float graph + calibrated qparams -> integer graph."""

    @module_pass("qcompiler.quantize")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        return realize(mod, in_qparams, binding_qparams, per_channel)

    return transform

