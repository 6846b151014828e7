"""The float fallback: an op with no integer kernel runs in float between a dequantize and a
quantize, and is listed as such in the compile summary.

Its result stays float (`Value.float_expr`) until an integer op needs it: the quantize is
emitted then (`Value.expr`), so consecutive float ops form one float island with no rounding
inside, and a float op's float inputs are used as they are.
"""
from __future__ import annotations

from tvm import relax

from qcompiler import kernels
from qcompiler.errors import QCompileError
from qcompiler.lowering.context import Context
from qcompiler.lowering.values import Value
from qcompiler.numerics.qparams import QParams, dtype_range
from qcompiler.relax_access import dtype_of, op_name, shape_of


def float_fallback(ctx: Context, var: relax.Var, call: relax.Call, qp: QParams) -> Value:
    ctx.require(var, qp)
    args = []
    for arg in call.args:
        if isinstance(arg, relax.Var) and isinstance(ctx.env.get(arg), Value) and \
                ctx.env[arg].float_expr is not None:
            args.append(ctx.env[arg].float_expr)  # inside a float island
        elif isinstance(arg, relax.Var) and arg in ctx.env:
            v = ctx.env[arg]
            shape = shape_of(v.expr)
            func = kernels.dequantize(shape, v.qp.dtype, v.qp.scale, v.qp.zero_point)
            args.append(ctx.call_kernel("dequantize", func, [v.expr], shape, "float32"))
        elif isinstance(arg, relax.Var):
            raise QCompileError(f"op {op_name(call)} at {ctx.label(var)}: input "
                                f"{arg.name} is not a tensor qcompiler can quantize")
        elif isinstance(arg, (relax.Tuple, relax.GlobalVar)):
            raise QCompileError(f"op {op_name(call)} at {ctx.label(var)}: takes its tensors in a "
                                "tuple or a TIR function, which the float fallback cannot "
                                "dequantize")
        else:
            args.append(arg)
    f = ctx.bb.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
    if not isinstance(f.ty, relax.TensorType) or dtype_of(f) != "float32":
        raise QCompileError(f"op {op_name(call)} at {ctx.label(var)}: float fallback needs "
                            "one float32 tensor output")
    shape = shape_of(f)
    lo, hi = dtype_range(qp.dtype)

    def quantize() -> relax.Expr:
        func = kernels.quantize(shape, qp.scale, qp.zero_point, qp.dtype, lo, hi)
        return ctx.call_kernel("quantize", func, [f], shape, qp.dtype)

    return Value(None, qp, f, quantize)
