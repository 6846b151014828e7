"""Lowerings of the ops that rearrange or select integers: reshape, flatten, permute_dims,
strided_slice, split and concat, and a standalone ReLU/Clip (a clamp of the integers).

The qparams pass through all but concat, which requantizes each input to the output's, and
the clamp, which requantizes to its own bounds only where they cut the range.
"""
from __future__ import annotations

import math

from tvm import relax

from qcompiler.lowering.context import Context
from qcompiler.lowering.values import Value
from qcompiler.numerics.qparams import QParams
from qcompiler.relax_access import op_name, prim_float

MOVES = ("relax.reshape", "relax.flatten", "relax.squeeze", "relax.expand_dims",
         "relax.permute_dims", "relax.strided_slice")


def move(ctx: Context, call: relax.Call, qp: QParams) -> Value:
    """Reshape, flatten, squeeze, expand_dims, permute_dims, strided_slice: the same integers
    rearranged, so the qparams pass through. (A slice's own calibrated range is narrower, but its values
    already lie on the input's grid: requantizing could only round them a second time.)"""
    x = ctx.env[call.args[0]]
    new = relax.Call(call.op, [x.expr, *call.args[1:]], call.attrs)
    return Value(ctx.bb.emit(new), x.qp)


def split(ctx: Context, var: relax.Var, call: relax.Call) -> list[Value]:
    """Split: each part keeps the input's qparams, like a slice."""
    x = ctx.env[call.args[0]]
    parts = ctx.bb.emit(relax.Call(call.op, [x.expr], call.attrs))
    return [Value(ctx.bb.emit(relax.TupleGetItem(parts, i)), x.qp)
            for i in range(len(var.ty.fields))]


def concat(ctx: Context, call: relax.Call, qp: QParams) -> Value:
    """Concat: every input requantized to the output's qparams, then joined."""
    ins = [ctx.env[f] for f in call.args[0].fields]
    parts = [ctx.requantize(v, qp) for v in ins]
    return Value(ctx.bb.emit(relax.op.concat(parts, axis=int(call.attrs.axis))), qp)


def clamp(ctx: Context, call: relax.Call, qp: QParams) -> Value:
    """ReLU, Clip: the input's qparams, clamped to the real bounds."""
    x = ctx.env[call.args[0]]
    lo_hi = (0.0, math.inf) if op_name(call) == "relax.nn.relu" else \
        (prim_float(call.args[1]), prim_float(call.args[2]))
    return Value(ctx.requantize(x, x.qp, *lo_hi), x.qp)
