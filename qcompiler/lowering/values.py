"""The quantized tensors the lowerings pass around (`Value`), and the bit width of `x - zp`."""
from __future__ import annotations

from collections.abc import Callable

from tvm import relax

from qcompiler.numerics.qparams import QParams, dtype_range


class Value:
    """A quantized tensor of main_int. A float op's result stays float until an integer op
    needs it (`expr` then emits its quantize), so consecutive float ops, e.g. the several ops
    TVM's frontend makes of one LRN, form one float island with no rounding inside
    (`qcompiler.lowering.float_islands`)."""

    def __init__(self, expr: relax.Expr | None, qp: QParams,
                 float_expr: relax.Expr | None = None,
                 quantize: Callable[[], relax.Expr] | None = None) -> None:
        self._expr, self.qp, self.float_expr, self._quantize = expr, qp, float_expr, quantize

    @property
    def expr(self) -> relax.Expr:
        if self._expr is None:
            self._expr = self._quantize()
        return self._expr

    @property
    def is_quantized(self) -> bool:
        return self._expr is not None


def signed_bits(dtype: str) -> int:
    """Bits of `x - zp` for a tensor of this dtype (one more than the storage type)."""
    lo, hi = dtype_range(dtype)
    return int(hi - lo).bit_length() + 1
