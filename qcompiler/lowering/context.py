"""What every lowering reads and writes while the quantize pass walks the float graph: the
builder of `main_int`, the quantized value of each float graph variable, and the weights'
quantizer; and the two things every lowering does with them (emit a kernel, requantize)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import tvm
from tvm import relax

from qcompiler import kernels
from qcompiler.errors import QCompileError
from qcompiler.lowering.values import Value
from qcompiler.lowering.weights import WeightQuantizer
from qcompiler.numerics.qparams import QParams, dtype_range
from qcompiler.numerics.requantize import RequantizeAttrs, clamp_bounds, quantize_multiplier
from qcompiler.relax_access import shape_of


@dataclass
class Context:
    weights: WeightQuantizer
    names: dict = field(default_factory=dict)  # binding -> ONNX tensor name, for errors
    origins: dict = field(default_factory=dict)  # binding -> its ONNX nodes (LayerOrigin)
    bb: relax.BlockBuilder = field(default_factory=relax.BlockBuilder)
    env: dict = field(default_factory=dict)  # float graph var -> Value (a list for a tuple)
    counter: int = 0  # kernels emitted so far: each one's symbol is q<counter>_<name>

    def call_kernel(self, name: str, func: tvm.tirx.PrimFunc, args: list, shape: tuple,
                    dtype: str) -> relax.Expr:
        self.counter += 1
        symbol = f"q{self.counter}_{name}"
        gv = self.bb.add_func(func.with_attr("global_symbol", symbol), symbol)
        return self.bb.emit(relax.call_tir(gv, args, relax.TensorType(shape, dtype)))

    def label(self, var: relax.Var) -> str:
        """The layer of `var` as messages name it: its ONNX node and op type, else `var`."""
        origin = self.origins.get(var)
        return origin.label if origin is not None else var.name

    def requantize(self, v: Value, qp: QParams, lo_real: float = -math.inf,
                   hi_real: float = math.inf) -> relax.Expr:
        """`v` in the qparams `qp`, clamped to [lo_real, hi_real]: a `requantize` kernel, or
        `v` itself when that changes nothing."""
        lo, hi = clamp_bounds(qp, lo_real, hi_real)
        if v.qp == qp and (lo, hi) == dtype_range(qp.dtype):
            return v.expr
        m0, shift = quantize_multiplier(v.qp.scale / qp.scale)
        rq = RequantizeAttrs(qp.zero_point, lo, hi, qp.dtype, m0, shift)
        attrs = {"zp_x": v.qp.zero_point, **rq.to_attrs()}
        shape = shape_of(v.expr)
        return self.call_kernel("requantize", kernels.requantize(shape, v.qp.dtype, attrs),
                                [v.expr], shape, qp.dtype)

    def require(self, var: relax.Var, qp: QParams | None) -> None:
        """A binding that needs its own qparams has them (a QDQ model may lack some)."""
        if qp is None:
            raise QCompileError(
                f"tensor {self.names.get(var) or self.label(var)}: the model gives no scale and "
                "zero point for it (no QuantizeLinear/DequantizeLinear pair); give --calib to "
                "calibrate it")
