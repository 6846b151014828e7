"""Realize the integer graph from the fused float graph and its calibrated qparams.

Per the numeric contract (shared/DESIGN.md), with Q = 2^(weight_bits - 1) - 1 (127, or 7):
  weights    W_q[c] = clamp(rint(W[c] / s_w[c]), -Q, Q),  s_w[c] = max|W[c]| / Q  (int8 storage;
             4-bit: two per byte, `qcompiler.numerics.nibbles`)
  bias       b_q[c] = rint(b[c] / (s_x * s_w[c]))  (int32)
  requant    y = clamp(zp_y + qms(acc + b_q[c], M0[c], n[c]), lo, hi),  M = s_x s_w[c] / s_y
  activation ReLU / Clip(a, b) -> lo = zp_y + rint(a / s_y), hi = zp_y + rint(b / s_y)
Every kernel is a `call_tir` to a PrimFunc from `qcompiler.kernels` that carries its op name
and attributes, which is what the reference interpreter executes. An op without an integer
kernel runs in float between a dequantize and a quantize and is listed as a float fallback.

The result has `main_int` (integer in, integer out) and `main` (float in: quantize ->
main_int -> dequantize -> float out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from qcompiler import kernels
from qcompiler.errors import QCompileError
from qcompiler.frontend.qdq_import import WeightTable
from qcompiler.graph_meta import LayerRecord, attach_graph_meta
from qcompiler.numerics import lut, nibbles
from qcompiler.numerics import resize as resize_tables
from qcompiler.numerics.calibrate import tensor_bindings
from qcompiler.numerics.qparams import QParams, dtype_range, symmetric_weight_scales
from qcompiler.numerics.requantize import quantize_multiplier
from qcompiler.numerics.shapes import conv2d_transpose_out_hw, pool2d_out_hw
from qcompiler.relax_access import (
    const_array,
    dtype_of,
    int_list,
    is_const,
    is_tensor_const,
    op_name,
    output_exprs,
    prim_float,
    shape_of,
)

REQUANT_FRACTION_BITS = 16  # precision of the residual-add intermediate, before the final round
RESIZE_BITS = 10  # fractional bits of each bilinear weight (per axis): 2^20 for the 4 taps
MOVES = ("relax.reshape", "relax.flatten", "relax.permute_dims", "relax.strided_slice")
TABLE_DTYPES = ("uint8", "int8", "int16")  # inputs small enough for a table (256 or 65,536)
TABLE_OPS = ("relax.sigmoid", "relax.tanh", "relax.nn.leakyrelu", "relax.nn.prelu")
# Ops whose output keeps its input's qparams, so their binding needs none of its own.
PASSTHROUGH_OPS = frozenset({"relax.reshape", "relax.flatten", "relax.nn.max_pool2d",
                             "relax.nn.relu", "relax.clip"})



class _Value:
    """A quantized tensor of main_int. A float op's result stays float until an integer op
    needs it (`expr` then emits its quantize), so consecutive float ops, e.g. the several ops
    TVM's frontend makes of one LRN, form one float island with no rounding inside."""

    def __init__(self, expr: relax.Expr | None, qp: QParams,
                 float_expr: relax.Expr | None = None, quantize=None) -> None:  # noqa: ANN001
        self._expr, self.qp, self.float_expr, self._quantize = expr, qp, float_expr, quantize

    @property
    def expr(self) -> relax.Expr:
        if self._expr is None:
            self._expr = self._quantize()
        return self._expr

    @property
    def is_quantized(self) -> bool:
        return self._expr is not None


@dataclass
class _Realizer:
    mod: tvm.IRModule
    in_qp: list[QParams]
    out_qp: list[QParams | None]  # None: not known (a QDQ model without Q/DQ there)
    per_channel: bool
    weight_bits: int = 8
    given: WeightTable | None = None  # weights already quantized by the model (QDQ)
    names: dict = field(default_factory=dict)  # binding -> ONNX tensor name, for errors
    means: dict | None = None  # float graph var -> E[x] per channel: bias correction is on
    layer_bits: dict = field(default_factory=dict)  # var, name or "#index" -> weight bits
    note: str = ""  # said in the summary line of the layer being realized
    bb: relax.BlockBuilder = field(default_factory=relax.BlockBuilder)
    env: dict = field(default_factory=dict)
    layers: list[LayerRecord] = field(default_factory=list)
    counter: int = 0
    current: tuple = (None, "", -1)  # (var, name, index) of the layer being realized
    bits_used: int = 0  # the weight bits `weights` chose for the current layer
    keys_used: set = field(default_factory=set)

    # ---- helpers ------------------------------------------------------------------------
    def call_kernel(self, name: str, func: tvm.tirx.PrimFunc, args: list, shape: tuple,
                    dtype: str) -> relax.Expr:
        self.counter += 1
        symbol = f"q{self.counter}_{name}"
        gv = self.bb.add_func(func.with_attr("global_symbol", symbol), symbol)
        return self.bb.emit(relax.call_tir(gv, args, relax.TensorType(shape, dtype)))

    def clamp_bounds(self, qp: QParams, lo_real: float, hi_real: float) -> tuple[int, int]:
        qmin, qmax = dtype_range(qp.dtype)
        lo = qmin if lo_real == -math.inf else qp.zero_point + int(np.rint(lo_real / qp.scale))
        hi = qmax if hi_real == math.inf else qp.zero_point + int(np.rint(hi_real / qp.scale))
        return max(qmin, min(lo, qmax)), min(qmax, max(hi, qmin))

    def requantize(self, v: _Value, qp: QParams, lo_real: float = -math.inf,
                   hi_real: float = math.inf) -> relax.Expr:
        lo, hi = self.clamp_bounds(qp, lo_real, hi_real)
        if v.qp == qp and (lo, hi) == dtype_range(qp.dtype):
            return v.expr
        m0, shift = quantize_multiplier(v.qp.scale / qp.scale)
        attrs = {"zp_x": v.qp.zero_point, "zp_y": qp.zero_point, "m0": m0, "shift": shift,
                 "lo": lo, "hi": hi, "out_dtype": qp.dtype}
        shape = shape_of(v.expr)
        return self.call_kernel("requantize", kernels.requantize(shape, v.qp.dtype, attrs),
                                [v.expr], shape, qp.dtype)

    def weights(self, w: np.ndarray, axis: int, bias: np.ndarray, s_x: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """Per-output-channel (or per-tensor) symmetric weights and their float32 scales.

        `s_w[c] = max|W[c]| / Q` (Q = 127, or 7 for 4-bit weights), widened where needed so
        that the int32 bias `b[c] / (s_x * s_w[c])` stays within 2^30: a channel of tiny (or
        denormal) weights with a real bias would otherwise saturate its bias instead of keeping
        it. Weights the model gives already quantized (QDQ) keep their integers and scales.
        """
        given = self.given.lookup(w, axis) if self.given else None
        if given is not None:
            self.bits_used = 8
            return given
        if self.given is not None:
            self.note = "weights re-quantized: they differ from the model's (BN folded in)"
        bits = self.bits_used = self.layer_weight_bits()
        w = w.astype(np.float32)
        red = tuple(i for i in range(w.ndim) if i != axis)
        absmax = np.abs(w).max(axis=red) if self.per_channel else \
            np.full(w.shape[axis], np.abs(w).max())
        s_w = symmetric_weight_scales(absmax, bits)
        bias_floor = (np.abs(bias.astype(np.float64)) / (np.float64(s_x) * 2.0**30))
        s_w = np.maximum(s_w, bias_floor.astype(np.float32) * np.float32(1 + 2**-20))
        shape = [1] * w.ndim
        shape[axis] = -1
        q = 2 ** (bits - 1) - 1
        w_q = np.clip(np.rint(w / s_w.reshape(shape)), -q, q).astype(np.int8)
        return w_q, s_w

    def layer_weight_bits(self) -> int:
        """The current layer's weight bits: by its float graph variable (mixed precision), its
        index "#i" in the summary, its name, else the global `weight_bits`."""
        var, name, index = self.current
        for key in (var, f"#{index}", name):
            if key in self.layer_bits:
                self.keys_used.add(key)
                return self.layer_bits[key]
        return self.weight_bits

    def check_layer_keys(self) -> None:
        """Every per-layer key named a layer with weights: a misspelt name is an error."""
        weighted = [r.name for r in self.layers if r.weight_bits]
        for key in self.layer_bits:
            if not isinstance(key, str) or key in self.keys_used:
                continue
            index = int(key[1:]) if key.startswith("#") else None
            found = self.layers[index] if index is not None and index < len(self.layers) else \
                next((r for r in self.layers if r.name == key), None)
            if found is not None:
                raise QCompileError(f"precision: layer {key} ({found.name}) is a {found.op}, "
                                    "which has no weights: give a conv2d or dense layer")
            raise QCompileError(f"precision: no layer {key!r} in the model (conv/dense layers: "
                                f"{', '.join(weighted) or 'none'})")

    def bias_and_multipliers(self, bias: np.ndarray, s_x: float, s_w: np.ndarray,
                             s_y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        acc_scale = np.float64(s_x) * s_w.astype(np.float64)
        b_q = np.clip(np.rint(bias.astype(np.float64) / acc_scale), -2**31, 2**31 - 1)
        mult = [quantize_multiplier(float(a / s_y)) for a in acc_scale]
        return (b_q.astype(np.int32), np.array([m for m, _ in mult], np.int32),
                np.array([s for _, s in mult], np.int32))

    def corrected_bias(self, x: relax.Expr, bias: np.ndarray, w: np.ndarray, w_q: np.ndarray,
                       s_w: np.ndarray, groups: int) -> np.ndarray:
        """`bias` less the mean error of the rounded weights, when bias correction is on and
        the calibration data gave the input's channel means (see `bias_correction`)."""
        mean = self.means.get(x) if self.means is not None else None
        if mean is None or mean.size != w.shape[1] * groups:
            return bias
        self.note = "bias corrected"
        return bias_correction(bias, w, w_q, s_w, mean, groups)

    def channel_operands(self, w_q: np.ndarray, per_channel: tuple, attrs: dict) -> list:
        """The constant operands of a conv/dense kernel: its weights, as nibbles for a 4-bit
        layer (`qcompiler.numerics.nibbles`: half the bytes; `attrs` record it for the kernel and the
        reference), then the per-channel bias, multiplier and shift."""
        if self.bits_used == 4:
            attrs.update(nibbles.storage_attrs(w_q.shape))
            w_q = nibbles.pack(w_q)
        return [relax.const(a) for a in (w_q, *per_channel)]

    @staticmethod
    def check_accumulator(layer: str, taps: int, x: QParams, w_q: np.ndarray,
                          b_q: np.ndarray) -> None:
        """Refuse a layer whose int32 accumulator could wrap: taps * |x - zp| * |w| + |b|."""
        qmin, qmax = dtype_range(x.dtype)
        x_max = max(x.zero_point - qmin, qmax - x.zero_point)
        w_max = int(np.abs(w_q.astype(np.int64)).max(initial=0))
        b_max = int(np.abs(b_q.astype(np.int64)).max(initial=0))
        bound = taps * x_max * w_max + b_max
        if bound > 2**31 - 1:
            raise QCompileError(
                f"layer {layer}: the int32 accumulator could overflow ({taps} taps x |x - zp| <= "
                f"{x_max} x |w| <= {w_max} + |bias| <= {b_max} = {bound} > 2^31 - 1); "
                "qcompiler refuses rather than wrap")

    # ---- composites ---------------------------------------------------------------------
    def composite_parts(self, func: relax.Function) -> dict:
        parts: dict = {"act": (-math.inf, math.inf)}
        for blk in func.body.blocks:
            for b in blk.bindings:
                call = b.value
                name = op_name(call)
                if name in ("relax.nn.conv2d", "relax.matmul", "relax.nn.conv2d_transpose"):
                    parts["main"] = call
                elif name == "relax.add" and is_const(call.args[1]) and "main" in parts:
                    parts["bias"] = const_array(call.args[1]).reshape(-1)
                elif name == "relax.add":
                    parts["main"] = call
                elif name == "relax.nn.relu":
                    parts["act"] = (0.0, math.inf)
                elif name == "relax.clip":
                    parts["act"] = (prim_float(call.args[1]), prim_float(call.args[2]))
        return parts

    def conv2d(self, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
        conv = parts["main"]
        a = conv.attrs
        if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW" \
                or str(a.out_layout) != "NCHW":
            return None
        x = self.env[call.args[0]]
        w = const_array(conv.args[1])
        bias = parts.get("bias", np.zeros(w.shape[0], np.float32))
        w_q, s_w = self.weights(w, 0, bias, x.qp.scale)
        bias = self.corrected_bias(call.args[0], bias, w, w_q, s_w, int(a.groups))
        b_q, m0, shift = self.bias_and_multipliers(bias, x.qp.scale, s_w, qp.scale)
        self.check_accumulator(parts["name"], int(np.prod(w_q.shape[1:])), x.qp, w_q, b_q)
        lo, hi = self.clamp_bounds(qp, *parts["act"])
        pad = int_list(a.padding)
        attrs = {"strides": int_list(a.strides), "padding": pad, "dilation": int_list(a.dilation),
                 "groups": int(a.groups), "zp_x": x.qp.zero_point, "zp_y": qp.zero_point,
                 "lo": lo, "hi": hi, "out_dtype": qp.dtype}
        args = [x.expr, *self.channel_operands(w_q, (b_q, m0, shift), attrs)]
        func = kernels.conv2d(shape_of(x.expr), x.qp.dtype, w_q.shape, attrs)
        return self.call_kernel("conv2d", func, args, shape_of(call), qp.dtype)

    def conv2d_transpose(self, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
        """ONNX weights are (Cin, Cout/groups, kh, kw): output channel g * Cout/groups + o takes
        its symmetric scale over w[g-th Cin block, o]; the int8 weights keep the ONNX layout."""
        conv = parts["main"]
        a = conv.attrs
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != \
                ("NCHW", "IOHW", "NCHW"):
            return None
        x = self.env[call.args[0]]
        w = const_array(conv.args[1])
        groups = int(a.groups)
        cin, cout_g, kh, kw = w.shape
        regroup = (groups, cin // groups, cout_g, kh, kw)
        w_oihw = w.reshape(regroup).transpose(0, 2, 1, 3, 4).reshape(-1, cin // groups, kh, kw)
        bias = parts.get("bias", np.zeros(cout_g * groups, np.float32))
        w_q, s_w = self.weights(w_oihw, 0, bias, x.qp.scale)
        w_q = w_q.reshape(groups, cout_g, cin // groups, kh, kw).transpose(0, 2, 1, 3, 4) \
            .reshape(w.shape)
        b_q, m0, shift = self.bias_and_multipliers(bias, x.qp.scale, s_w, qp.scale)
        self.check_accumulator(parts["name"], cin // groups * kh * kw, x.qp, w_q, b_q)
        lo, hi = self.clamp_bounds(qp, *parts["act"])
        attrs = {"strides": int_list(a.strides), "padding": int_list(a.padding),
                 "output_padding": int_list(a.output_padding), "dilation": int_list(a.dilation),
                 "groups": groups, "zp_x": x.qp.zero_point, "zp_y": qp.zero_point,
                 "lo": lo, "hi": hi, "out_dtype": qp.dtype}
        xs = shape_of(x.expr)
        if conv2d_transpose_out_hw(xs, w.shape, attrs) != shape_of(call)[2:]:
            return None
        args = [x.expr, *self.channel_operands(w_q, (b_q, m0, shift), attrs)]
        func = kernels.conv2d_transpose(xs, x.qp.dtype, w_q.shape, attrs)
        return self.call_kernel("conv2d_transpose", func, args, shape_of(call), qp.dtype)

    def dense(self, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
        x = self.env[call.args[0]]
        w = const_array(parts["main"].args[1])
        if len(shape_of(x.expr)) != 2 or w.ndim != 2:
            return None
        bias = parts.get("bias", np.zeros(w.shape[1], np.float32))
        if bias.size != w.shape[1]:
            return None
        w_q, s_w = self.weights(w.T, 0, bias, x.qp.scale)
        bias = self.corrected_bias(call.args[0], bias, w.T, w_q, s_w, 1)
        b_q, m0, shift = self.bias_and_multipliers(bias, x.qp.scale, s_w, qp.scale)
        self.check_accumulator(parts["name"], w_q.shape[1], x.qp, w_q, b_q)
        lo, hi = self.clamp_bounds(qp, *parts["act"])
        attrs = {"zp_x": x.qp.zero_point, "zp_y": qp.zero_point, "lo": lo, "hi": hi,
                 "out_dtype": qp.dtype}
        args = [x.expr, *self.channel_operands(w_q, (b_q, m0, shift), attrs)]
        func = kernels.dense(shape_of(x.expr), x.qp.dtype, w_q.shape, attrs)
        return self.call_kernel("dense", func, args, shape_of(call), qp.dtype)

    def add(self, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
        a, b = self.env[call.args[0]], self.env[call.args[1]]
        shape = shape_of(call)
        if shape_of(a.expr) != shape or shape_of(b.expr) != shape:
            return None
        ma, mb = a.qp.scale / qp.scale, b.qp.scale / qp.scale
        # Pick k so each |x - zp| * M * 2^k stays below 2^30 and their sum fits int32.
        in_bits = max(_signed_bits(a.qp.dtype), _signed_bits(b.qp.dtype))
        k = int(min(REQUANT_FRACTION_BITS,
                    max(0, 30 - in_bits - math.ceil(math.log2(max(ma, mb))))))
        m0_a, sh_a = quantize_multiplier(ma * 2.0**k)
        m0_b, sh_b = quantize_multiplier(mb * 2.0**k)
        lo, hi = self.clamp_bounds(qp, *parts["act"])
        attrs = {"zp_a": a.qp.zero_point, "zp_b": b.qp.zero_point, "zp_y": qp.zero_point,
                 "m0_a": m0_a, "shift_a": sh_a, "m0_b": m0_b, "shift_b": sh_b, "k": k,
                 "lo": lo, "hi": hi, "out_dtype": qp.dtype}
        func = kernels.add(shape, a.qp.dtype, b.qp.dtype, attrs)
        return self.call_kernel("add", func, [a.expr, b.expr], shape, qp.dtype)

    # ---- plain ops ----------------------------------------------------------------------
    def pool(self, call: relax.Call, name: str, qp: QParams) -> tuple[relax.Expr, QParams] | None:
        x = self.env[call.args[0]]
        xs = shape_of(x.expr)
        if len(xs) != 4:
            return None
        a = call.attrs
        if str(a.layout) != "NCHW" or a.ceil_mode or any(d != 1 for d in int_list(a.dilation)):
            return None
        geo = {"kernel": int_list(a.pool_size), "strides": int_list(a.strides),
               "padding": int_list(a.padding)}
        include_pad = bool(a.count_include_pad)
        if name == "relax.nn.max_pool2d":
            qmin, _ = dtype_range(x.qp.dtype)
            attrs = {**geo, "dtype_min": qmin}
            func = kernels.max_pool2d(xs, x.qp.dtype, attrs)
            return self.call_kernel("max_pool2d", func, [x.expr], shape_of(call),
                                    x.qp.dtype), x.qp
        counts = _window_counts(xs[2], xs[3], geo, include_pad)
        mult = [quantize_multiplier(x.qp.scale / (qp.scale * c)) for c in counts.reshape(-1)]
        m0 = np.array([m for m, _ in mult], np.int32).reshape(counts.shape)
        shift = np.array([s for _, s in mult], np.int32).reshape(counts.shape)
        lo, hi = dtype_range(qp.dtype)
        attrs = {**geo, "zp_x": x.qp.zero_point, "zp_y": qp.zero_point, "lo": lo, "hi": hi,
                 "out_dtype": qp.dtype, "count_include_pad": include_pad}
        func = kernels.avg_pool2d(xs, x.qp.dtype, attrs)
        return self.call_kernel("avg_pool2d", func, [x.expr, relax.const(m0),
                                                     relax.const(shift)],
                                shape_of(call), qp.dtype), qp

    def table(self, x: _Value, fn: str, channel_params: list[dict], axis: int, qp: QParams
              ) -> relax.Expr | None:
        """An activation as a gather from its table.

        The output qparams are the calibrated ones of the op's output, as for any other op
        (rather than TFLite's fixed 1/256 for a sigmoid): a gate whose observed range is
        narrower than [0, 1] keeps more of its resolution, and the next op needs no rescale.
        """
        if x.qp.dtype not in TABLE_DTYPES:
            return None
        attrs = lut.lut_attrs(fn, channel_params, axis, x.qp, qp)
        table = lut.tables(attrs)
        shape = shape_of(x.expr)
        func = kernels.lut(shape, x.qp.dtype, table.shape, attrs)
        return self.call_kernel(fn, func, [x.expr, relax.const(table)], shape, qp.dtype)

    def table_op(self, call: relax.Call, op: str, qp: QParams) -> relax.Expr | None:
        x = self.env[call.args[0]]
        if op != "relax.nn.prelu":
            params = {"alpha": float(call.attrs.alpha)} if op == "relax.nn.leakyrelu" else {}
            return self.table(x, op.split(".")[-1], [params], 0, qp)
        if not is_tensor_const(call.args[1]):
            return None
        slopes = const_array(call.args[1]).astype(np.float64).reshape(-1)
        shape = shape_of(x.expr)
        axis = int(call.attrs.axis) % len(shape)
        if slopes.size not in (1, shape[axis]):
            return None
        return self.table(x, "prelu", [{"alpha": float(a)} for a in slopes], axis, qp)

    def table_composite(self, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
        """HardSwish `x clip(x + offset, lo, hi) / divisor`, HardSigmoid `clip(alpha x + beta,
        lo, hi)`: the constants are read from the matched chain, so any variant is exact."""
        c = _chain_constants(parts["func"])
        lo, hi = c["relax.clip"]
        if parts["kind"] == "qcompiler.hardswish":
            params = {"offset": c["relax.add"], "divisor": c["relax.divide"], "lo": lo, "hi": hi}
        else:
            params = {"alpha": c["relax.multiply"], "beta": c["relax.add"], "lo": lo, "hi": hi}
        return self.table(self.env[call.args[0]], parts["kind"].split(".")[-1], [params], 0, qp)

    def mul_constant(self, c: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """Symmetric int8 `c_q = rint(c / s_c)`: `s_c` per channel where c varies along one axis
        only (a per-channel scale), else per tensor; both shaped to broadcast like c."""
        c = c.astype(np.float32).reshape((1,) * (rank - c.ndim) + c.shape)
        varying = [k for k, d in enumerate(c.shape) if d > 1]
        if self.per_channel and len(varying) == 1:
            red = tuple(k for k in range(rank) if k != varying[0])
            absmax = np.abs(c).max(axis=red, keepdims=True)
        else:
            absmax = np.full((1,) * rank, np.abs(c).max(initial=0.0))
        s_c = symmetric_weight_scales(absmax)
        return np.clip(np.rint(c / s_c), -127, 127).astype(np.int8), s_c

    def mul(self, call: relax.Call, qp: QParams) -> relax.Expr | None:
        """Elementwise product with broadcasting: of two tensors, or of a tensor and a constant.

        int32 is exact when `|a - zp_a| |b - zp_b| < 2^31`: 8-bit operands give at most
        255 * 255 (or 255 * 127 for an int8 constant); wider ones fall back to float.
        """
        lhs, rhs = call.args
        if is_tensor_const(lhs):
            lhs, rhs = rhs, lhs
        if lhs not in self.env:
            return None
        a, shape = self.env[lhs], shape_of(call)
        if is_tensor_const(rhs):
            b_q, s_b = self.mul_constant(const_array(rhs), len(shape))
            b_expr, zp_b, b_bits = relax.const(b_q), 0, 8
        elif rhs in self.env:
            b = self.env[rhs]
            b_expr, zp_b, b_bits = b.expr, b.qp.zero_point, _signed_bits(b.qp.dtype)
            s_b = np.full((1,) * len(shape), b.qp.scale, np.float32)
        else:
            return None
        if _signed_bits(a.qp.dtype) + b_bits - 2 > 31:
            return None
        mult = [quantize_multiplier(a.qp.scale * float(s) / qp.scale) for s in s_b.reshape(-1)]
        m0 = np.array([m for m, _ in mult], np.int32).reshape(s_b.shape)
        shift = np.array([n for _, n in mult], np.int32).reshape(s_b.shape)
        lo, hi = dtype_range(qp.dtype)
        attrs = {"zp_a": a.qp.zero_point, "zp_b": zp_b, "zp_y": qp.zero_point, "lo": lo,
                 "hi": hi, "out_dtype": qp.dtype}
        func = kernels.mul(shape, shape_of(a.expr), a.qp.dtype, shape_of(b_expr),
                           dtype_of(b_expr), s_b.shape, attrs)
        args = [a.expr, b_expr, relax.const(m0), relax.const(shift)]
        return self.call_kernel("mul", func, args, shape, qp.dtype)

    def require(self, var: relax.Var, qp: QParams | None) -> None:
        """A binding that needs its own qparams has them (a QDQ model may lack some)."""
        if qp is None:
            raise QCompileError(
                f"tensor {self.names.get(var) or var.name}: the model gives no scale and zero "
                "point for it (no QuantizeLinear/DequantizeLinear pair); give --calib to "
                "calibrate it")

    def mean(self, call: relax.Call, qp: QParams) -> _Value | None:
        """ReduceMean (and GlobalAveragePool): integer sum, one fixed-point divide by the count."""
        x = self.env[call.args[0]]
        xs = shape_of(x.expr)
        axes = range(len(xs)) if call.attrs.axis is None else int_list(call.attrs.axis)
        axes = sorted({int(ax) % len(xs) for ax in axes})
        count = int(np.prod([xs[ax] for ax in axes]))
        if count << (_signed_bits(x.qp.dtype) - 1) > 2**31 - 1:
            return None  # the int32 sum could wrap: stays float
        m0, shift = quantize_multiplier(x.qp.scale / (qp.scale * count))
        lo, hi = dtype_range(qp.dtype)
        attrs = {"axes": axes, "keepdims": bool(call.attrs.keepdims), "zp_x": x.qp.zero_point,
                 "zp_y": qp.zero_point, "m0": m0, "shift": shift, "lo": lo, "hi": hi,
                 "out_dtype": qp.dtype}
        func = kernels.reduce_mean(xs, x.qp.dtype, attrs)
        return _Value(self.call_kernel("reduce_mean", func, [x.expr], shape_of(call), qp.dtype),
                      qp)

    def resize(self, call: relax.Call, qp: QParams) -> _Value | None:
        """Nearest: a gather by compile-time index tables (qparams pass through). Bilinear:
        compile-time taps and 2^-RESIZE_BITS weights, integer sum, one requantizing round."""
        a = call.attrs
        x = self.env[call.args[0]]
        xs, ys = shape_of(x.expr), shape_of(call)
        mode, method = str(a.coordinate_transformation_mode), str(a.method)
        if str(a.layout) != "NCHW" or mode not in resize_tables.COORDINATE_MODES \
                or any(float(r) != 0.0 for r in a.roi):
            return None
        if method == "nearest_neighbor" and str(a.rounding_method) in resize_tables.NEAREST_MODES:
            rows, cols = (resize_tables.nearest_indices(xs[i], ys[i], mode, str(a.rounding_method))
                          for i in (2, 3))
            func = kernels.resize_nearest(xs, x.qp.dtype, ys[2:],
                                          {"mode": mode, "nearest": str(a.rounding_method)})
            out = self.call_kernel("resize_nearest", func, [x.expr, relax.const(rows),
                                                            relax.const(cols)], ys, x.qp.dtype)
            return _Value(out, x.qp)
        bits = RESIZE_BITS
        if method != "linear" or _signed_bits(x.qp.dtype) + 2 * bits > 31:
            return None
        rows, cols = (resize_tables.linear_taps(xs[i], ys[i], mode, bits) for i in (2, 3))
        m0, shift = quantize_multiplier(x.qp.scale / (qp.scale * 2.0**(2 * bits)))
        lo, hi = dtype_range(qp.dtype)
        attrs = {"mode": mode, "bits": bits, "zp_x": x.qp.zero_point, "zp_y": qp.zero_point,
                 "m0": m0, "shift": shift, "lo": lo, "hi": hi, "out_dtype": qp.dtype}
        func = kernels.resize_bilinear(xs, x.qp.dtype, ys[2:], attrs)
        out = self.call_kernel("resize_bilinear", func,
                               [x.expr, relax.const(rows), relax.const(cols)], ys, qp.dtype)
        return _Value(out, qp)

    def pad(self, call: relax.Call, qp: QParams) -> _Value | None:
        """nn.pad on the integers. A constant fill is the quantized constant (0.0 -> zp_x); one
        the input's qparams cannot hold is padded after requantizing to the calibrated output
        qparams, whose range includes it."""
        a = call.attrs
        x = self.env[call.args[0]]
        mode = str(a.pad_mode)
        if mode not in ("constant", "reflect", "replicate"):
            return None
        fill = 0
        if mode == "constant":
            value = float(a.pad_value)
            qmin, qmax = dtype_range(x.qp.dtype)
            if not qmin <= x.qp.zero_point + np.rint(value / x.qp.scale) <= qmax:
                x = _Value(self.requantize(x, qp), qp)
            fill = self.clamp_bounds(x.qp, value, value)[0]
        out = relax.op.nn.pad(x.expr, int_list(a.pad_width), mode, float(fill))
        return _Value(self.bb.emit(out), x.qp)

    def move(self, call: relax.Call, qp: QParams) -> _Value:
        """Reshape, flatten, permute_dims, strided_slice: the same integers rearranged, so the
        qparams pass through. (A slice's own calibrated range is narrower, but its values
        already lie on the input's grid: requantizing could only round them a second time.)"""
        x = self.env[call.args[0]]
        new = relax.Call(call.op, [x.expr, *call.args[1:]], call.attrs)
        return _Value(self.bb.emit(new), x.qp)

    def split(self, var: relax.Var, call: relax.Call) -> list[_Value]:
        """Split: each part keeps the input's qparams, like a slice."""
        x = self.env[call.args[0]]
        parts = self.bb.emit(relax.Call(call.op, [x.expr], call.attrs))
        return [_Value(self.bb.emit(relax.TupleGetItem(parts, i)), x.qp)
                for i in range(len(var.ty.fields))]

    def float_fallback(self, var: relax.Var, call: relax.Call, qp: QParams) -> _Value:
        self.require(var, qp)
        args = []
        for arg in call.args:
            if isinstance(arg, relax.Var) and isinstance(self.env.get(arg), _Value) and \
                    self.env[arg].float_expr is not None:
                args.append(self.env[arg].float_expr)  # inside a float island
            elif isinstance(arg, relax.Var) and arg in self.env:
                v = self.env[arg]
                shape = shape_of(v.expr)
                func = kernels.dequantize(shape, v.qp.dtype, v.qp.scale, v.qp.zero_point)
                args.append(self.call_kernel("dequantize", func, [v.expr], shape, "float32"))
            elif isinstance(arg, relax.Var):
                raise QCompileError(f"op {op_name(call)} at {var.name}: input "
                                    f"{arg.name} is not a tensor qcompiler can quantize")
            elif isinstance(arg, (relax.Tuple, relax.GlobalVar)):
                raise QCompileError(f"op {op_name(call)} at {var.name}: takes its tensors in a "
                                    "tuple or a TIR function, which the float fallback cannot "
                                    "dequantize")
            else:
                args.append(arg)
        f = self.bb.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
        if not isinstance(f.ty, relax.TensorType) or dtype_of(f) != "float32":
            raise QCompileError(f"op {op_name(call)} at {var.name}: float fallback needs "
                                "one float32 tensor output")
        shape = shape_of(f)
        lo, hi = dtype_range(qp.dtype)

        def quantize() -> relax.Expr:
            func = kernels.quantize(shape, qp.scale, qp.zero_point, qp.dtype, lo, hi)
            return self.call_kernel("quantize", func, [f], shape, qp.dtype)

        return _Value(None, qp, f, quantize)

    # ---- the walk -----------------------------------------------------------------------
    def binding(self, var: relax.Var, value: relax.Expr, qp: QParams | None) -> None:
        name = var.name
        if isinstance(value, relax.Var):
            self.env[var] = self.env[value]
            return
        if isinstance(value, relax.Tuple):
            self.env[var] = [self.env[f] for f in value.fields]
            return
        if isinstance(value, relax.TupleGetItem):
            self.env[var] = self.env[value.tuple_value][value.index]
            return
        if op_name(value) == "relax.split":
            self.env[var] = self.split(var, value)
            self.layers.append(LayerRecord(name, "split", "integer"))
            return
        if not isinstance(var.ty, relax.TensorType):
            raise QCompileError(f"binding {name}: {op_name(value) or 'expression'} returns a "
                                "non-tensor value, which qcompiler cannot quantize")
        if not isinstance(value, relax.Call):
            raise QCompileError(f"binding {name}: unsupported expression "
                                f"{type(value).__name__}")
        op = op_name(value)
        if op not in PASSTHROUGH_OPS:
            self.require(var, qp)
        out: relax.Expr | None = None
        if isinstance(value.op, relax.GlobalVar):
            func = self.mod[value.op]
            kind = str(func.attrs["Composite"]) if func.attrs and "Composite" in func.attrs \
                else ""
            parts = {**self.composite_parts(func), "name": f"{name} ({kind or op})",
                     "func": func, "kind": kind}
            handler = {"qcompiler.conv2d": self.conv2d, "qcompiler.dense": self.dense,
                       "qcompiler.add": self.add, "qcompiler.hardswish": self.table_composite,
                       "qcompiler.hardsigmoid": self.table_composite,
                       "qcompiler.conv2d_transpose": self.conv2d_transpose}.get(kind)
            self.current, self.bits_used = (var, name, len(self.layers)), 0
            out = handler(value, parts, qp) if handler else None
            if out is None:
                raise QCompileError(f"binding {name}: composite {kind or op} has a form "
                                    "qcompiler cannot quantize")
            self.env[var] = _Value(out, qp)
            self.layers.append(LayerRecord(name, kind.split(".")[-1], "integer", self.note,
                                           weight_bits=self.bits_used))
            self.note = ""
            return
        if op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
            res = self.pool(value, op, qp)
            if res is not None:
                self.env[var] = _Value(*res)
                self.layers.append(LayerRecord(name, op.split(".")[-1], "integer"))
                return
        if op in TABLE_OPS or op == "relax.multiply":
            out = self.table_op(value, op, qp) if op in TABLE_OPS else self.mul(value, qp)
            if out is not None:
                self.env[var] = _Value(out, qp)
                self.layers.append(LayerRecord(name, op.split(".")[-1], "integer"))
                return
        handler = {"relax.mean": self.mean, "relax.image.resize2d": self.resize,
                   "relax.nn.pad": self.pad, **{m: self.move for m in MOVES}}.get(op)
        moved = handler(value, qp) if handler else None
        if moved is not None:
            self.env[var] = moved
            self.layers.append(LayerRecord(name, op.split(".")[-1], "integer"))
            return
        if op == "relax.concat":
            ins = [self.env[f] for f in value.args[0].fields]
            parts = [self.requantize(v, qp) for v in ins]
            out = self.bb.emit(relax.op.concat(parts, axis=int(value.attrs.axis)))
            self.env[var] = _Value(out, qp)
            self.layers.append(LayerRecord(name, "concat", "integer"))
            return
        if op in ("relax.nn.relu", "relax.clip"):
            x = self.env[value.args[0]]
            lo_hi = (0.0, math.inf) if op == "relax.nn.relu" else \
                (prim_float(value.args[1]), prim_float(value.args[2]))
            self.env[var] = _Value(self.requantize(x, x.qp, *lo_hi), x.qp)
            self.layers.append(LayerRecord(name, op.split(".")[-1], "integer"))
            return
        self.env[var] = self.float_fallback(var, value, qp)
        self.layers.append(LayerRecord(name, op.replace("relax.", ""), "float",
                                       "float op between dequantize and quantize"))

    def run(self) -> tvm.IRModule:
        main = self.mod["main"]
        bound = tensor_bindings(main)
        qp_of = dict(zip(bound, self.out_qp))
        position = {v: k for k, v in enumerate(bound)}
        params = [relax.Var(p.name, relax.TensorType(shape_of(p), q.dtype))
                  for p, q in zip(main.params, self.in_qp)]
        for p, ip, q in zip(main.params, params, self.in_qp):
            self.env[p] = _Value(ip, q)
        located: list = []
        with self.bb.function("main_int", params):
            with self.bb.dataflow():
                for blk in main.body.blocks:
                    for b in blk.bindings:
                        n_layers = len(self.layers)
                        self.binding(b.var, b.value, qp_of.get(b.var))
                        if len(self.layers) > n_layers and b.var in qp_of:
                            located.append((self.layers[-1], position[b.var], b.var))
                outs = output_exprs(main)
                out_vals = [self.env[o] for o in outs]
                for r, index, var in located:  # after the outputs' quantize are emitted
                    self._locate(r, index, var)
                ret = out_vals[0].expr if len(out_vals) == 1 else \
                    relax.Tuple([v.expr for v in out_vals])
                gv_out = self.bb.emit_output(ret)
            self.bb.emit_func_output(gv_out)
        self.check_layer_keys()
        self._float_wrapper(main, params, outs, out_vals)
        mod = self.bb.get()
        return attach_graph_meta(
            mod, [{"name": p.name, "shape": list(shape_of(p)), **q.to_json()}
                  for p, q in zip(main.params, self.in_qp)],
            [{"name": o.name, "shape": list(shape_of(v.expr)), **v.qp.to_json()}
             for o, v in zip(outs, out_vals)], self.layers)

    def _locate(self, record: LayerRecord, index: int, var: relax.Var) -> None:
        """Where a layer's value lives in both graphs, for per-layer error reports."""
        v = self.env[var]
        record.index = index
        record.tensor = v.expr.name if v.is_quantized and isinstance(v.expr, relax.Var) else ""
        record.scale, record.zero_point = v.qp.scale, v.qp.zero_point

    def _float_wrapper(self, main: relax.Function, int_params: list, outs: list,
                       out_vals: list[_Value]) -> None:
        gv_int = self.bb.get().get_global_var("main_int")
        params = [relax.Var(p.name, p.ty) for p in main.params]
        with self.bb.function("main", params):
            with self.bb.dataflow():
                qs = []
                for p, ip, q in zip(params, int_params, self.in_qp):
                    lo, hi = dtype_range(q.dtype)
                    func = kernels.quantize(shape_of(p), q.scale, q.zero_point, q.dtype, lo, hi)
                    qs.append(self.call_kernel("quantize", func, [p], shape_of(p), q.dtype))
                r = self.bb.emit(relax.Call(gv_int, qs))
                fs = []
                for i, v in enumerate(out_vals):
                    item = r if len(out_vals) == 1 else self.bb.emit(relax.TupleGetItem(r, i))
                    shape = shape_of(v.expr)
                    func = kernels.dequantize(shape, v.qp.dtype, v.qp.scale, v.qp.zero_point)
                    fs.append(self.call_kernel("dequantize", func, [item], shape, "float32"))
                ret = fs[0] if len(fs) == 1 else relax.Tuple(fs)
                gv_out = self.bb.emit_output(ret)
            self.bb.emit_func_output(gv_out)


def bias_correction(bias: np.ndarray, w: np.ndarray, w_q: np.ndarray, s_w: np.ndarray,
                    mean: np.ndarray, groups: int) -> np.ndarray:
    """Empirical bias correction (Nagel et al. 2019, section 4.2), float32 like the bias:

        b'[o] = b[o] - sum_{j,kh,kw} (s_w[o] W_q[o,j,kh,kw] - W[o,j,kh,kw]) E[x[g(o)*J + j]]

    i.e. the expected output error `(W_q - W) E[x]` of the quantized weights, taking E[x] over a
    conv's window as the channel mean at every tap (zero padding at the borders makes it an
    approximation there). `w` is (O, J[, kh, kw]) with J = input channels / groups.
    """
    w = w.astype(np.float64).reshape(w.shape[0], w.shape[1], -1)
    deq = w_q.astype(np.float64).reshape(w.shape) * s_w.astype(np.float64).reshape(-1, 1, 1)
    per_input = (deq - w).sum(axis=2)  # (O, J): the error summed over the taps
    group_of = np.arange(w.shape[0]) // (w.shape[0] // groups)
    x_mean = mean.astype(np.float64).reshape(groups, w.shape[1])[group_of]  # (O, J)
    err = (per_input * x_mean).sum(axis=1)
    return (bias.astype(np.float64) - err).astype(np.float32)


def _signed_bits(dtype: str) -> int:
    """Bits of `x - zp` for a tensor of this dtype (one more than the storage type)."""
    lo, hi = dtype_range(dtype)
    return int(hi - lo).bit_length() + 1


def _chain_constants(func: relax.Function) -> dict:
    """The scalar constant of each op in a composite's chain; `relax.clip` -> (lo, hi)."""
    found: dict = {}
    for blk in func.body.blocks:
        for b in blk.bindings:
            name = op_name(b.value)
            if name == "relax.clip":
                found[name] = (prim_float(b.value.args[1]), prim_float(b.value.args[2]))
            for arg in b.value.args:
                if is_tensor_const(arg):
                    found[name] = float(const_array(arg).reshape(-1)[0])
    return found


def _window_counts(h: int, w: int, geo: dict, include_pad: bool) -> np.ndarray:
    """How many input elements each average-pool output divides by."""
    kh, kw = geo["kernel"]
    sh, sw = geo["strides"]
    pt, pl, pb, pr = geo["padding"]
    oh, ow = pool2d_out_hw((h, w), geo)
    if include_pad:
        return np.full((oh, ow), kh * kw, np.int64)
    ys = np.arange(oh) * sh - pt
    xs = np.arange(ow) * sw - pl
    ny = np.minimum(ys + kh, h) - np.maximum(ys, 0)
    nx = np.minimum(xs + kw, w) - np.maximum(xs, 0)
    return np.outer(ny, nx).astype(np.int64)


def realize(mod: tvm.IRModule, in_qparams: list[QParams],
            binding_qparams: list[QParams | None], per_channel: bool = True,
            weight_bits: int = 8, given: WeightTable | None = None,
            names: list[str | None] | None = None,
            means: tuple[list, list] | None = None,
            layer_bits: dict | None = None) -> tvm.IRModule:
    """The rewrite itself, callable directly so a QCompileError keeps its type (an exception
    raised inside a pass reaches Python through TVM's FFI as a RuntimeError).

    `given` holds weights the model quantized itself; `names` (per tensor binding) name the
    ONNX tensors in errors; `means` (per graph input, per tensor binding: `channel_means`)
    turns bias correction on; `layer_bits` (float graph var, layer name or "#index" -> 4 | 8)
    overrides `weight_bits` per layer."""
    bound = tensor_bindings(mod["main"])
    mean_of = None if means is None else \
        dict(zip([*mod["main"].params, *bound], [*means[0], *means[1]]))
    return _Realizer(mod, in_qparams, binding_qparams, per_channel, weight_bits, given,
                     dict(zip(bound, names or [])), mean_of, dict(layer_bits or {})).run()


def quantize(in_qparams: list[QParams], binding_qparams: list[QParams],
             per_channel: bool = True) -> tvm.transform.Pass:
    """The realize pass: fused float graph + calibrated qparams -> integer graph."""

    @tvm.transform.module_pass(opt_level=0, name="qcompiler.quantize")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        return realize(mod, in_qparams, binding_qparams, per_channel)

    return transform

