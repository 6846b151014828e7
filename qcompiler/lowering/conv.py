"""Lowerings of the matched composites with weights or two inputs: conv2d, conv2d_transpose,
dense (each with its bias and fused ReLU/Clip) and the residual add (and the add of a
constant that varies element by element).

  conv/dense  y = clamp(zp_y + qms(acc + b_q[c], M0[c], n[c]), lo, hi),  M = s_x s_w[c] / s_y
  activation  ReLU / Clip(a, b) -> lo = zp_y + rint(a / s_y), hi = zp_y + rint(b / s_y)
  add         both inputs rescaled to the output scale at 2^-k precision, one rounding
Each returns the kernel's call, or None for a form it does not lower (the pass then refuses).
"""
from __future__ import annotations

import math

import numpy as np
from tvm import relax

from qcompiler import kernels
from qcompiler.lowering.context import Context
from qcompiler.lowering.values import Value, signed_bits
from qcompiler.lowering.weights import bias_and_multipliers, check_accumulator
from qcompiler.numerics import transpose_phases
from qcompiler.numerics.qparams import QParams, compute_qparams
from qcompiler.numerics.requantize import RequantizeAttrs, quantize_multiplier
from qcompiler.numerics.shapes import conv2d_transpose_out_hw
from qcompiler.relax_access import (
    bindings,
    const_array,
    int_list,
    is_const,
    is_tensor_const,
    op_name,
    prim_float,
    shape_of,
)

REQUANT_FRACTION_BITS = 16  # precision of the residual-add intermediate, before the final round


def composite_parts(func: relax.Function) -> dict:
    """A composite's main op ("main"), its constant bias ("bias") and its activation's real
    range ("act")."""
    parts: dict = {"act": (-math.inf, math.inf)}
    for b in bindings(func):
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


def conv2d(ctx: Context, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
    conv = parts["main"]
    a = conv.attrs
    if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW" \
            or str(a.out_layout) != "NCHW":
        return None
    x = ctx.env[call.args[0]]
    w = const_array(conv.args[1])
    bias = parts.get("bias", np.zeros(w.shape[0], np.float32))
    w_q, s_w = ctx.weights.quantize(w, 0, bias, x.qp.scale)
    bias = ctx.weights.corrected_bias(call.args[0], bias, w, w_q, s_w, int(a.groups))
    b_q, m0, shift = bias_and_multipliers(bias, x.qp.scale, s_w, qp.scale)
    check_accumulator(parts["name"], int(np.prod(w_q.shape[1:])), x.qp, w_q, b_q)
    rq = RequantizeAttrs.for_output(qp, *parts["act"])
    pad = int_list(a.padding)
    attrs = {"strides": int_list(a.strides), "padding": pad, "dilation": int_list(a.dilation),
             "groups": int(a.groups), "zp_x": x.qp.zero_point, **rq.to_attrs()}
    args = [x.expr, *ctx.weights.channel_operands(w_q, (b_q, m0, shift), attrs)]
    func = kernels.conv2d(shape_of(x.expr), x.qp.dtype, w_q.shape, attrs)
    return ctx.call_kernel("conv2d", func, args, shape_of(call), qp.dtype)


def conv2d_transpose(ctx: Context, call: relax.Call, parts: dict, qp: QParams
                     ) -> relax.Expr | None:
    """ONNX weights are (Cin, Cout/groups, kh, kw): output channel g * Cout/groups + o takes
    its symmetric scale over w[g-th Cin block, o]; the int8 weights keep the ONNX layout."""
    conv = parts["main"]
    a = conv.attrs
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != \
            ("NCHW", "IOHW", "NCHW"):
        return None
    x = ctx.env[call.args[0]]
    w = const_array(conv.args[1])
    groups = int(a.groups)
    cin, cout_g, kh, kw = w.shape
    regroup = (groups, cin // groups, cout_g, kh, kw)
    w_oihw = w.reshape(regroup).transpose(0, 2, 1, 3, 4).reshape(-1, cin // groups, kh, kw)
    bias = parts.get("bias", np.zeros(cout_g * groups, np.float32))
    w_q, s_w = ctx.weights.quantize(w_oihw, 0, bias, x.qp.scale)
    w_q = w_q.reshape(groups, cout_g, cin // groups, kh, kw).transpose(0, 2, 1, 3, 4) \
        .reshape(w.shape)
    b_q, m0, shift = bias_and_multipliers(bias, x.qp.scale, s_w, qp.scale)
    check_accumulator(parts["name"], cin // groups * kh * kw, x.qp, w_q, b_q)
    rq = RequantizeAttrs.for_output(qp, *parts["act"])
    attrs = {"strides": int_list(a.strides), "padding": int_list(a.padding),
             "output_padding": int_list(a.output_padding), "dilation": int_list(a.dilation),
             "groups": groups, "zp_x": x.qp.zero_point, **rq.to_attrs()}
    xs = shape_of(x.expr)
    if conv2d_transpose_out_hw(xs, w.shape, attrs) != shape_of(call)[2:]:
        return None
    phases = transpose_phases.plan(xs, w.shape, attrs)
    if phases is not None:
        return _phase_conv(ctx, x, phases, w_q, (b_q, m0, shift), attrs, qp.dtype)
    args = [x.expr, *ctx.weights.channel_operands(w_q, (b_q, m0, shift), attrs)]
    func = kernels.conv2d_transpose(xs, x.qp.dtype, w_q.shape, attrs)
    return ctx.call_kernel("conv2d_transpose", func, args, shape_of(call), qp.dtype)


def _phase_conv(ctx: Context, x: Value, p: transpose_phases.PhasePlan, w_q: np.ndarray,
                channel: tuple, attrs: dict, dtype: str) -> relax.Expr:
    """A strided transposed conv as the conv of its phases (the conv kernels, their schedules
    and layouts; no product of an inserted zero), then their interleave."""
    count = p.strides[0] * p.strides[1]
    conv_attrs = {k: v for k, v in attrs.items() if k != "output_padding"}
    conv_attrs.update(strides=[1, 1], padding=list(p.padding))
    w_p = transpose_phases.phase_weights(w_q, p)
    args = [x.expr, *ctx.weights.channel_operands(
        w_p, tuple(np.tile(a, count) for a in channel), conv_attrs)]
    n = shape_of(x.expr)[0]
    shape = (n, w_p.shape[0], p.rows, p.cols)
    func = kernels.conv2d(shape_of(x.expr), x.qp.dtype, w_p.shape, conv_attrs)
    y = ctx.call_kernel("conv2d", func, args, shape, dtype)
    if p.in_place:
        return y
    moves = {"strides": list(p.strides), "offset": list(p.offset), "out_hw": list(p.out_hw)}
    out = (n, w_p.shape[0] // count, *p.out_hw)
    return ctx.call_kernel("interleave_phases", kernels.interleave_phases(shape, dtype, moves),
                           [y], out, dtype)


def dense(ctx: Context, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
    """`x @ W (+ b)`. A 1-D W (a detector's integral `softmax(bins) @ [0, 1, ..., n]`) is one
    output column, and an N-D x (`[1, L, 4, n] @ W`) is its rows stacked: both are the 2-D
    kernel between reshapes, which move no integer."""
    x = ctx.env[call.args[0]]
    w = const_array(parts["main"].args[1])
    x_shape, out_shape = shape_of(x.expr), shape_of(call)
    if w.ndim not in (1, 2) or x_shape[-1] != w.shape[0]:
        return None
    w = w.reshape(w.shape[0], -1)
    rows = math.prod(x_shape[:-1])
    if len(x_shape) != 2:
        x = Value(ctx.bb.emit(relax.op.reshape(x.expr, (rows, x_shape[-1]))), x.qp)
    bias = parts.get("bias", np.zeros(w.shape[1], np.float32))
    if bias.size != w.shape[1]:
        return None
    w_q, s_w = ctx.weights.quantize(w.T, 0, bias, x.qp.scale)
    bias = ctx.weights.corrected_bias(call.args[0], bias, w.T, w_q, s_w, 1)
    b_q, m0, shift = bias_and_multipliers(bias, x.qp.scale, s_w, qp.scale)
    check_accumulator(parts["name"], w_q.shape[1], x.qp, w_q, b_q)
    rq = RequantizeAttrs.for_output(qp, *parts["act"])
    attrs = {"zp_x": x.qp.zero_point, **rq.to_attrs()}
    args = [x.expr, *ctx.weights.channel_operands(w_q, (b_q, m0, shift), attrs)]
    func = kernels.dense(shape_of(x.expr), x.qp.dtype, w_q.shape, attrs)
    y = ctx.call_kernel("dense", func, args, (rows, w.shape[1]), qp.dtype)
    return y if out_shape == (rows, w.shape[1]) else ctx.bb.emit(relax.op.reshape(y, out_shape))


def add(ctx: Context, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
    return _add(ctx, ctx.env[call.args[0]], ctx.env[call.args[1]], shape_of(call), qp,
                parts["act"])


def add_constant(ctx: Context, call: relax.Call, qp: QParams) -> Value | None:
    """`x + C`, `x - C` with a constant that varies element by element (a detector's grid of
    cell offsets), which no table row per channel can hold: C as an 8-bit tensor of its own
    qparams (its range), then the two-tensor add. A scalar or per-channel C is a table
    (`passes.fuse_elementwise`) and never reaches here."""
    x_arg, c_arg = call.args
    subtract = op_name(call) == "relax.subtract"
    if not subtract and is_tensor_const(x_arg):
        x_arg, c_arg = c_arg, x_arg
    shape = shape_of(call)
    if x_arg not in ctx.env or not is_tensor_const(c_arg) \
            or shape_of(ctx.env[x_arg].expr) != shape:
        return None
    c = const_array(c_arg).astype(np.float64) * (-1.0 if subtract else 1.0)
    c = np.broadcast_to(c.reshape((1,) * (len(shape) - c.ndim) + c.shape), shape)
    c_qp = compute_qparams(float(c.min()), float(c.max()), "uint8")
    c_q = np.clip(np.rint(c / c_qp.scale) + c_qp.zero_point, 0, 255).astype(np.uint8)
    b = Value(relax.const(np.ascontiguousarray(c_q)), c_qp)
    y = _add(ctx, ctx.env[x_arg], b, shape, qp, (-math.inf, math.inf))
    return None if y is None else Value(y, qp)


def _add(ctx: Context, a: Value, b: Value, shape: tuple, qp: QParams, act: tuple
         ) -> relax.Expr | None:
    if shape_of(a.expr) != shape or shape_of(b.expr) != shape:
        return None
    ma, mb = a.qp.scale / qp.scale, b.qp.scale / qp.scale
    # Pick k so each |x - zp| * M * 2^k stays below 2^30 and their sum fits int32.
    in_bits = max(signed_bits(a.qp.dtype), signed_bits(b.qp.dtype))
    k = int(min(REQUANT_FRACTION_BITS,
                max(0, 30 - in_bits - math.ceil(math.log2(max(ma, mb))))))
    m0_a, sh_a = quantize_multiplier(ma * 2.0**k)
    m0_b, sh_b = quantize_multiplier(mb * 2.0**k)
    rq = RequantizeAttrs.for_output(qp, *act)
    attrs = {"zp_a": a.qp.zero_point, "zp_b": b.qp.zero_point,
             **rq.to_attrs(m0_a=m0_a, shift_a=sh_a, m0_b=m0_b, shift_b=sh_b, k=k)}
    func = kernels.add(shape, a.qp.dtype, b.qp.dtype, attrs)
    return ctx.call_kernel("add", func, [a.expr, b.expr], shape, qp.dtype)
