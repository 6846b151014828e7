"""Lowerings of the elementwise ops: activations as table gathers, and the product.

  table  y = T[c, x - qmin], T computed at compile time from the exact float function and
         both qparams (`qcompiler.numerics.lut`): sigmoid, tanh, LeakyReLU, PReLU, HardSwish,
         HardSigmoid, and any chain of elementwise ops on one tensor and constants (the
         composite of `passes.fuse_elementwise`)
  mul    y = clamp(zp_y + qms((a - zp_a)(b - zp_b), M0, n)),  M = s_a s_b / s_y
Each returns the output `Value`, or None for a form with no integer kernel (it stays float).
"""
from __future__ import annotations

import numpy as np
from tvm import relax

from qcompiler import kernels
from qcompiler.lowering.context import Context
from qcompiler.lowering.values import Value, signed_bits
from qcompiler.numerics import lut
from qcompiler.numerics.qparams import QParams
from qcompiler.numerics.requantize import RequantizeAttrs, quantize_multipliers
from qcompiler.passes.fuse_elementwise import constant_axis, prelu_axis
from qcompiler.relax_access import (
    bindings,
    const_array,
    dtype_of,
    is_tensor_const,
    op_name,
    prim_float,
    shape_of,
)

TABLE_DTYPES = ("uint8", "int8", "int16")  # inputs small enough for a table (256 or 65,536)
TABLE_OPS = ("relax.sigmoid", "relax.tanh", "relax.nn.leakyrelu", "relax.nn.prelu")


def table(ctx: Context, x: Value, fn: str, channel_params: list[dict], axis: int, qp: QParams
          ) -> relax.Expr | None:
    """An activation as a gather from its table.

    The output qparams are the calibrated ones of the op's output, as for any other op
    (rather than TFLite's fixed 1/256 for a sigmoid): a gate whose observed range is
    narrower than [0, 1] keeps more of its resolution, and the next op needs no rescale.
    """
    if x.qp.dtype not in TABLE_DTYPES:
        return None
    attrs = lut.lut_attrs(fn, channel_params, axis, x.qp, qp)
    t = lut.tables(attrs)
    shape = shape_of(x.expr)
    func = kernels.lut(shape, x.qp.dtype, t.shape, attrs)
    return ctx.call_kernel(fn, func, [x.expr, relax.const(t)], shape, qp.dtype)


def table_op(ctx: Context, call: relax.Call, qp: QParams) -> Value | None:
    """Sigmoid, tanh, LeakyReLU, and PReLU with constant slopes (one, or one per channel)."""
    out = _table_op(ctx, call, op_name(call), qp)
    return None if out is None else Value(out, qp)


def _table_op(ctx: Context, call: relax.Call, op: str, qp: QParams) -> relax.Expr | None:
    x = ctx.env[call.args[0]]
    if op != "relax.nn.prelu":
        params = {"alpha": float(call.attrs.alpha)} if op == "relax.nn.leakyrelu" else {}
        return table(ctx, x, op.split(".")[-1], [params], 0, qp)
    if not is_tensor_const(call.args[1]):
        return None
    slopes = const_array(call.args[1]).astype(np.float64).reshape(-1)
    shape = shape_of(x.expr)
    axis = int(call.attrs.axis) % len(shape)
    if slopes.size not in (1, shape[axis]):
        return None
    return table(ctx, x, "prelu", [{"alpha": float(a)} for a in slopes], axis, qp)


def table_composite(ctx: Context, call: relax.Call, parts: dict, qp: QParams
                    ) -> relax.Expr | None:
    """HardSwish `x clip(x + offset, lo, hi) / divisor`, HardSigmoid `clip(alpha x + beta,
    lo, hi)`: the constants are read from the matched chain, so any variant is exact."""
    c = chain_constants(parts["func"])
    lo, hi = c["relax.clip"]
    if parts["kind"] == "qcompiler.hardswish":
        params = {"offset": c["relax.add"], "divisor": c["relax.divide"], "lo": lo, "hi": hi}
    else:
        params = {"alpha": c["relax.multiply"], "beta": c["relax.add"], "lo": lo, "hi": hi}
    return table(ctx, ctx.env[call.args[0]], parts["kind"].split(".")[-1], [params], 0, qp)


def elementwise(ctx: Context, call: relax.Call, parts: dict, qp: QParams) -> relax.Expr | None:
    """A chain f(x) of elementwise ops as one table: its steps, with each constant read per
    table row (one row, or one per channel of the axis its constants vary along).
    `parts["label"]` names the chain in the summary, e.g. "elementwise(add,clip,multiply)"."""
    func, x = parts["func"], ctx.env[call.args[0]]
    shape = shape_of(x.expr)
    calls = [b.value for b in bindings(func)]
    found = [_step_axis(c, shape) for c in calls]
    axes = {a for a in found if a is not None}
    if False in axes or len(axes) > 1:
        return None
    axis = axes.pop() if axes else None
    rows = 1 if axis is None else shape[axis]
    parts["label"] = "elementwise({})".format(",".join(op_name(c).split(".")[-1]
                                                      for c in calls))
    return table(ctx, x, "elementwise", [{"steps": _steps(func, shape, r)}
                                         for r in range(rows)], axis or 0, qp)


def _step_axis(call: relax.Call, shape: tuple) -> int | None | bool:
    axes = {prelu_axis(call, shape) if op_name(call) == "relax.nn.prelu"
            else constant_axis(const_array(a), shape)
            for a in call.args if is_tensor_const(a)} - {None}
    return False if len(axes) > 1 else axes.pop() if axes else None


def _steps(func: relax.Function, shape: tuple, row: int) -> list[dict]:
    """The chain for table row `row`: values as "%k", constants as their float for the row."""
    ref = {func.params[0]: "%0"}
    steps = []
    for b in bindings(func):
        call, name = b.value, op_name(b.value)
        step: dict = {"op": name.split(".")[-1], "args": []}
        args = call.args[:1] if name == "relax.clip" or name == "relax.nn.leakyrelu" \
            else call.args
        for a in args:
            if is_tensor_const(a):
                c = const_array(a).astype(np.float64)
                if name == "relax.nn.prelu" or c.size == 1:
                    v = c.reshape(-1)[row if c.size > 1 else 0]
                else:
                    full = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
                    v = full.reshape(-1)[row]  # varies along `axis` only
                step["args"].append(float(v))
            else:
                step["args"].append(ref[a])
        if name == "relax.clip":
            step["lo"], step["hi"] = prim_float(call.args[1]), prim_float(call.args[2])
        if name == "relax.nn.leakyrelu":
            step["alpha"] = float(call.attrs.alpha)
        ref[b.var] = f"%{len(steps) + 1}"
        steps.append(step)
    return steps


def chain_constants(func: relax.Function) -> dict:
    """The scalar constant of each op in a composite's chain; `relax.clip` -> (lo, hi)."""
    found: dict = {}
    for b in bindings(func):
        name = op_name(b.value)
        if name == "relax.clip":
            found[name] = (prim_float(b.value.args[1]), prim_float(b.value.args[2]))
        for arg in b.value.args:
            if is_tensor_const(arg):
                found[name] = float(const_array(arg).reshape(-1)[0])
    return found


def mul(ctx: Context, call: relax.Call, qp: QParams) -> Value | None:
    """Elementwise product with broadcasting: of two tensors, or of a tensor and a constant.

    int32 is exact when `|a - zp_a| |b - zp_b| < 2^31`: 8-bit operands give at most
    255 * 255 (or 255 * 127 for an int8 constant); wider ones fall back to float.
    """
    lhs, rhs = call.args
    if is_tensor_const(lhs):
        lhs, rhs = rhs, lhs
    if lhs not in ctx.env:
        return None
    a, shape = ctx.env[lhs], shape_of(call)
    if is_tensor_const(rhs):
        b_q, s_b = ctx.weights.constant(const_array(rhs), len(shape))
        b_expr, zp_b, b_bits = relax.const(b_q), 0, 8
    elif rhs in ctx.env:
        b = ctx.env[rhs]
        b_expr, zp_b, b_bits = b.expr, b.qp.zero_point, signed_bits(b.qp.dtype)
        s_b = np.full((1,) * len(shape), b.qp.scale, np.float32)
    else:
        return None
    if signed_bits(a.qp.dtype) + b_bits - 2 > 31:
        return None
    m0, shift = quantize_multipliers(a.qp.scale * s_b.astype(np.float64) / qp.scale)
    rq = RequantizeAttrs.for_output(qp)
    attrs = {"zp_a": a.qp.zero_point, "zp_b": zp_b, **rq.to_attrs()}
    func = kernels.mul(shape, shape_of(a.expr), a.qp.dtype, shape_of(b_expr),
                       dtype_of(b_expr), s_b.shape, attrs)
    args = [a.expr, b_expr, relax.const(m0), relax.const(shift)]
    return Value(ctx.call_kernel("mul", func, args, shape, qp.dtype), qp)
