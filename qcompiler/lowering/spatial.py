"""Lowerings of the window and axis ops: max/average pooling, mean, resize, pad.

  max pool    max on the integers (monotonic: the qparams pass through)
  avg pool    y[i, j] = clamp(zp_y + qms(sum(x - zp_x), M0[i, j], n[i, j])),
              M[i, j] = s_x / (s_y count[i, j])
  ceil_mode   the kernels see bottom/right padding grown until the last window fits; the
              grown part never counts (with count_include_pad only the declared padding does)
  mean        the same with one count: M = s_x / (s_y count)
  resize      nearest: a gather (qparams pass through); bilinear: 2^-RESIZE_BITS weights per
              axis, one rounding, M = s_x / (s_y 2^(2 RESIZE_BITS))
  pad         the quantized fill value
Each returns the output `Value`, or None for a form with no integer kernel (it stays float).
"""
from __future__ import annotations

import numpy as np
from tvm import relax

from qcompiler import kernels
from qcompiler.lowering.context import Context
from qcompiler.lowering.values import Value, signed_bits
from qcompiler.numerics import resize as resize_tables
from qcompiler.numerics.qparams import QParams, dtype_range
from qcompiler.numerics.requantize import (
    RequantizeAttrs,
    clamp_bounds,
    quantize_multiplier,
    quantize_multipliers,
)
from qcompiler.numerics.shapes import pool2d_ceil_padding, pool2d_out_hw
from qcompiler.relax_access import int_list, op_name, shape_of

RESIZE_BITS = 10  # fractional bits of each bilinear weight (per axis): 2^20 for the 4 taps


def pool(ctx: Context, call: relax.Call, qp: QParams) -> Value | None:
    x = ctx.env[call.args[0]]
    xs = shape_of(x.expr)
    if len(xs) != 4:
        return None
    a = call.attrs
    if str(a.layout) != "NCHW" or any(d != 1 for d in int_list(a.dilation)):
        return None
    declared = {"kernel": int_list(a.pool_size), "strides": int_list(a.strides),
                "padding": int_list(a.padding)}
    geo = {**declared, "padding": pool2d_ceil_padding(xs[2:], declared)} if a.ceil_mode \
        else declared
    include_pad = bool(a.count_include_pad)
    if op_name(call) == "relax.nn.max_pool2d":
        qmin, _ = dtype_range(x.qp.dtype)
        attrs = {**geo, "dtype_min": qmin}
        func = kernels.max_pool2d(xs, x.qp.dtype, attrs)
        return Value(ctx.call_kernel("max_pool2d", func, [x.expr], shape_of(call),
                                     x.qp.dtype), x.qp)
    counts = window_counts(xs[2], xs[3], geo, declared["padding"] if include_pad else None)
    m0, shift = quantize_multipliers(x.qp.scale / (qp.scale * counts))
    rq = RequantizeAttrs.for_output(qp)
    attrs = {**geo, "zp_x": x.qp.zero_point, **rq.to_attrs(),
             "count_include_pad": include_pad}
    func = kernels.avg_pool2d(xs, x.qp.dtype, attrs)
    return Value(ctx.call_kernel("avg_pool2d", func, [x.expr, relax.const(m0),
                                                     relax.const(shift)],
                                 shape_of(call), qp.dtype), qp)


def window_counts(h: int, w: int, geo: dict, counted_padding: list | None) -> np.ndarray:
    """How many elements each average-pool output divides by: its window (`geo`) clipped to
    the input grown by `counted_padding` (count_include_pad), or to the input alone (None)."""
    kh, kw = geo["kernel"]
    sh, sw = geo["strides"]
    pt, pl, _, _ = geo["padding"]
    ct, cl, cb, cr = counted_padding or (0, 0, 0, 0)
    oh, ow = pool2d_out_hw((h, w), geo)
    ys = np.arange(oh) * sh - pt
    xs = np.arange(ow) * sw - pl
    ny = np.minimum(ys + kh, h + cb) - np.maximum(ys, -ct)
    nx = np.minimum(xs + kw, w + cr) - np.maximum(xs, -cl)
    return np.outer(ny, nx).astype(np.int64)


def reduce(ctx: Context, call: relax.Call, qp: QParams) -> Value | None:
    """ReduceMean (and GlobalAveragePool), ReduceSum: integer sum, one fixed-point multiply
    (for a mean, the divide by the count folded into it)."""
    x = ctx.env[call.args[0]]
    xs = shape_of(x.expr)
    axes = range(len(xs)) if call.attrs.axis is None else int_list(call.attrs.axis)
    axes = sorted({int(ax) % len(xs) for ax in axes})
    count = int(np.prod([xs[ax] for ax in axes]))
    if count << (signed_bits(x.qp.dtype) - 1) > 2**31 - 1:
        return None  # the int32 sum could wrap: stays float
    divisor = count if op_name(call) == "relax.mean" else 1
    m0, shift = quantize_multiplier(x.qp.scale / (qp.scale * divisor))
    rq = RequantizeAttrs.for_output(qp, m0=m0, shift=shift)
    attrs = {"axes": axes, "keepdims": bool(call.attrs.keepdims), "zp_x": x.qp.zero_point,
             **rq.to_attrs()}
    func = kernels.reduce_mean(xs, x.qp.dtype, attrs)
    return Value(ctx.call_kernel("reduce_mean", func, [x.expr], shape_of(call), qp.dtype), qp)


def resize(ctx: Context, call: relax.Call, qp: QParams) -> Value | None:
    """Nearest: a gather by compile-time index tables (qparams pass through). Bilinear:
    compile-time taps and 2^-RESIZE_BITS weights, integer sum, one requantizing round."""
    a = call.attrs
    x = ctx.env[call.args[0]]
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
        out = ctx.call_kernel("resize_nearest", func, [x.expr, relax.const(rows),
                                                       relax.const(cols)], ys, x.qp.dtype)
        return Value(out, x.qp)
    bits = RESIZE_BITS
    if method != "linear" or signed_bits(x.qp.dtype) + 2 * bits > 31:
        return None
    rows, cols = (resize_tables.linear_taps(xs[i], ys[i], mode, bits) for i in (2, 3))
    m0, shift = quantize_multiplier(x.qp.scale / (qp.scale * 2.0**(2 * bits)))
    rq = RequantizeAttrs.for_output(qp, m0=m0, shift=shift)
    attrs = {"mode": mode, "bits": bits, "zp_x": x.qp.zero_point, **rq.to_attrs()}
    func = kernels.resize_bilinear(xs, x.qp.dtype, ys[2:], attrs)
    out = ctx.call_kernel("resize_bilinear", func,
                          [x.expr, relax.const(rows), relax.const(cols)], ys, qp.dtype)
    return Value(out, qp)


def pad(ctx: Context, call: relax.Call, qp: QParams) -> Value | None:
    """nn.pad on the integers. A constant fill is the quantized constant (0.0 -> zp_x); one
    the input's qparams cannot hold is padded after requantizing to the calibrated output
    qparams, whose range includes it."""
    a = call.attrs
    x = ctx.env[call.args[0]]
    mode = str(a.pad_mode)
    if mode not in ("constant", "reflect", "replicate"):
        return None
    fill = 0
    if mode == "constant":
        value = float(a.pad_value)
        qmin, qmax = dtype_range(x.qp.dtype)
        if not qmin <= x.qp.zero_point + np.rint(value / x.qp.scale) <= qmax:
            x = Value(ctx.requantize(x, qp), qp)
        fill = clamp_bounds(x.qp, value, value)[0]
    out = relax.op.nn.pad(x.expr, int_list(a.pad_width), mode, float(fill))
    return Value(ctx.bb.emit(out), x.qp)
