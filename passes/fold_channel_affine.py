"""Fold per-channel constant arithmetic into convolutions.

Exporters spell batch norm many ways: a BatchNormalization that is not after a convolution
(DenseNet's pre-activation), or BatchNormalization followed by an explicit `Mul(scale)` and
`Add(shift)` (the Caffe2 zoo), or a decomposed `(x - mu) / sigma * gamma + beta`. Every chain
of add / subtract / multiply / divide by constants that vary only along the channel axis of an
NCHW tensor is one affine map per channel, `y = x * a[c] + b[c]`:

- after a constant-weight conv2d (with its bias) used only by the chain, it folds into the
  weights and bias, `W'[c] = W[c] a[c]`, `b'[c] = b[c] a[c] + b[c]` (float64, stored float32),
  before weights are quantized, as batch norm folding does;
- anywhere else it becomes a depthwise 1x1 conv2d with bias, an integer kernel like any other,
  whose single weight per channel quantizes exactly (+-127 at scale |a[c]| / 127).

A lone `x * c` is left alone (it is an integer Mul of its own), a lone `x + c` too (the bias
of a producer such as conv2d_transpose, fused later), and so is a chain that starts
with a scalar constant outside a conv (an elementwise function such as HardSigmoid's
`clip(alpha x + beta)`, which has a table kernel).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from qcompiler.passes import module_pass
from tvm import relax

from qcompiler.relax_access import (
    bindings,
    channel_vector,
    const_array,
    is_const,
    is_const_nchw_conv,
    op_name,
    shape_of,
    substitute,
    use_counts,
    with_span,
)

_AFFINE_OPS = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


@dataclass
class _Affine:
    """`src * a + b` per channel, not emitted yet; `conv` is set when src is a foldable conv2d."""

    src: relax.Expr
    a: np.ndarray
    b: np.ndarray
    ops: int
    conv: relax.Call | None = None
    last: relax.Call | None = None  # the last call folded in: its span names the result


def _affine_step(call: relax.Call) -> tuple[relax.Expr, np.ndarray, np.ndarray] | None:
    """(x, a, b) for `call` = `x * a + b` with per-channel constants, else None."""
    name = op_name(call)
    if name not in _AFFINE_OPS or len(call.args) != 2:
        return None
    lhs, rhs = call.args
    if is_const(lhs) and not is_const(rhs) and name in ("relax.add", "relax.multiply"):
        lhs, rhs = rhs, lhs
    if is_const(lhs) or not is_const(rhs) or not isinstance(call.ty, relax.TensorType):
        return None
    shape = shape_of(call)
    if shape is None or shape_of(lhs) != shape or str(call.ty.dtype) != "float32":
        return None
    c = channel_vector(const_array(rhs), shape)
    if c is None:
        return None
    one, zero = np.ones_like(c), np.zeros_like(c)
    if name == "relax.add":
        return lhs, one, c
    if name == "relax.subtract":
        return lhs, one, -c
    if name == "relax.multiply":
        return lhs, c, zero
    if np.any(c == 0):
        return None
    return lhs, 1.0 / c, zero


def _scalar_constant(call: relax.Call) -> bool:
    return any(is_const(a) and const_array(a).size == 1 for a in call.args)


class _Folder:
    def __init__(self, func: relax.Function) -> None:
        self.func = func
        self.uses = use_counts(func)
        self.bb = relax.BlockBuilder()
        self.env: dict = {}  # old var -> new expr
        self.pending: dict = {}  # old var -> _Affine

    def materialize(self, var: relax.Var) -> relax.Expr:
        if var in self.pending:
            self.env[var] = self.emit_affine(self.pending.pop(var))
        return self.env[var]

    def emit_affine(self, aff: _Affine) -> relax.Expr:
        """The calls of `aff`, each named by the ONNX node of its last folded call."""
        def emit(call: relax.Call) -> relax.Expr:
            return self.bb.emit(with_span(call, aff.last))

        c = aff.a.size
        if aff.conv is not None and aff.ops == 0:
            return emit(relax.Call(aff.conv.op, [aff.src, aff.conv.args[1]], aff.conv.attrs))
        if aff.conv is not None:
            w = const_array(aff.conv.args[1]).astype(np.float64)
            w = (w * aff.a.reshape(-1, 1, 1, 1)).astype(np.float32)
            conv = emit(relax.Call(aff.conv.op, [aff.src, relax.const(w)], aff.conv.attrs))
            return emit(relax.op.add(
                conv, relax.const(aff.b.astype(np.float32).reshape(1, c, 1, 1))))
        if aff.ops == 1 and not np.any(aff.b):  # a lone Mul stays a Mul
            return emit(relax.op.multiply(
                aff.src, relax.const(aff.a.astype(np.float32).reshape(1, c, 1, 1))))
        if aff.ops == 1 and np.all(aff.a == 1):  # a lone Add: e.g. the bias of a producer
            return emit(relax.op.add(                # the fusion pass takes it into
                aff.src, relax.const(aff.b.astype(np.float32).reshape(1, c, 1, 1))))
        w = aff.a.astype(np.float32).reshape(c, 1, 1, 1)
        conv = emit(relax.op.nn.conv2d(aff.src, relax.const(w), groups=c))
        return emit(relax.op.add(
            conv, relax.const(aff.b.astype(np.float32).reshape(1, c, 1, 1))))

    def substitute(self, value: relax.Expr) -> relax.Expr:
        for v in relax.analysis.free_vars(value):
            if v in self.pending:
                self.materialize(v)
        return substitute(value, self.env)

    def binding(self, var: relax.Var, value: relax.Expr) -> None:
        if not isinstance(var, relax.DataflowVar):  # an output of the dataflow block
            self.env[var] = self.bb.emit_output(self.substitute(value))
            return
        if isinstance(value, relax.Var):
            self.env[var] = self.substitute(value)
            return
        step = _affine_step(value) if isinstance(value, relax.Call) else None
        if step is not None:
            x, a, b = step
            prev = self.pending.get(x) if isinstance(x, relax.Var) and self.uses.get(x) == 1 \
                else None
            if prev is None and _scalar_constant(value):
                # x * a + b with scalar a, b outside a conv chain is an elementwise function
                # (HardSigmoid's, an input normalization): left to its own integer kernel.
                self.env[var] = self.bb.emit(self.substitute(value))
                return
            if prev is not None:
                del self.pending[x]
                last = value if value.span is not None else prev.last  # a named call
                self.pending[var] = _Affine(prev.src, prev.a * a, prev.b * a + b,
                                            prev.ops + 1, prev.conv, last)
            else:
                src = self.materialize(x) if isinstance(x, relax.Var) and \
                    (x in self.env or x in self.pending) else x
                self.pending[var] = _Affine(src, a, b, 1, None, value)
            return
        if isinstance(value, relax.Call) and is_const_nchw_conv(value) \
                and self.uses.get(var) == 1:
            c = int(shape_of(value)[1])
            src = self.substitute(value.args[0])
            self.pending[var] = _Affine(src, np.ones(c), np.zeros(c), 0, value, value)
            return
        self.env[var] = self.bb.emit(self.substitute(value))

    def run(self, name: str) -> relax.Function:
        params = list(self.func.params)
        attrs = dict(self.func.attrs) if self.func.attrs else None
        with self.bb.function(name, params, attrs):
            with self.bb.dataflow():
                for b in bindings(self.func):
                    self.binding(b.var, b.value)
            self.bb.emit_func_output(self.substitute(self.func.body.body))
        return self.bb.get()[name]


def fold_channel_affine() -> tvm.transform.Pass:
    """The pass: every Relax function of the module rebuilt with its affine chains folded."""

    @module_pass("qcompiler.fold_channel_affine")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function) and not (func.attrs and
                                                         "Composite" in func.attrs):
                mod[gv] = _Folder(func).run(gv.name_hint)
        return relax.transform.DeadCodeElimination()(mod)

    return transform
