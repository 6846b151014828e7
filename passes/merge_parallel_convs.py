"""Merge convolutions of one input whose outputs are summed into one convolution.

Re-parameterizable blocks (RepVGG, MobileOne, ACNet, PP-LCNetV3's rep layers) train several
branches on one tensor (kxk convs, a 1x1 conv, an identity batch norm) and add them up. A
model exported without its `rep()` computes every branch, and quantized it rounds every
branch. A convolution is linear in its kernel, so the sum is one convolution whose kernel is
the sum of the branch kernels, each zero-padded to the common size at the offset where its
taps read the same inputs, and whose bias is the sum of the biases: the network the
re-parameterized export would be, rounded once. It runs after batch norm folding and
`fold_channel_affine`, when each branch is `conv2d(x, W)` with an optional per-channel bias
(an identity batch norm is by then a depthwise 1x1 conv).

Two branches merge when both read the same tensor with equal strides and dilation, each is
used only by the add, their taps line up (padding differences a multiple of the dilation),
the merged kernel costs no more multiply-accumulates than the two did (different `groups`
meet at their greatest common divisor: the identity's depthwise 1x1 becomes the diagonal of
a full conv, while a depthwise kxk beside a full 1x1 stays two convs), and its int8 weights
round no worse than NOISE_GROWTH times the two kernels' rounding noise (the median over
output channels). The last is the known cost of quantizing a merged RepVGG kernel: an
identity tap near 1.0 beside a full 3x3's taps near 0.05 sets the channel's step and the 3x3
taps lose 4 bits (on a torch-exported RepVGG/MobileOne stack: 32.7 dB merging every sum,
39.0 dB merging none, 36.3 dB with the bound at 1.1x the all-merged latency). The add tree of
three or more branches merges pair by pair, in binding order. Float models only: a QDQ
model's branches keep the int8 weights it gives them (`pipeline.float_cleanup`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

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

NOISE_GROWTH = 8.0  # 9 dB more weight-rounding noise than the branches' at most


@dataclass(frozen=True)
class _Branch:
    """`conv2d(x, w) + b` of the original function; `source` names the merged layer."""

    x: relax.Expr
    w: np.ndarray  # float64, OIHW (I = input channels per group)
    b: np.ndarray  # float64, one per output channel
    groups: int
    strides: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    shape: tuple[int, ...]  # of the output
    out_dtype: object
    source: relax.Call

    def macs(self) -> int:
        return int(np.prod(self.w.shape))


def _conv_branch(call: relax.Call) -> _Branch | None:
    if not is_const_nchw_conv(call) or str(call.ty.dtype) != "float32":
        return None
    a = call.attrs
    w = const_array(call.args[1]).astype(np.float64)
    return _Branch(call.args[0], w, np.zeros(w.shape[0]), int(a.groups),
                   tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation),
                   tuple(int(p) for p in a.padding), shape_of(call), a.out_dtype, call)


def _regroup(w: np.ndarray, groups: int, g: int) -> np.ndarray:
    """Weights of a `groups`-group conv as the same conv with `g` groups (g divides groups):
    each new group's input block holds groups/g old blocks, zero off the diagonal."""
    m = groups // g
    if m == 1:
        return w
    out_ch, per_group = w.shape[:2]
    block = (np.arange(out_ch) // (out_ch // groups)) % m  # old group's place in the new one
    out = np.zeros((out_ch, per_group * m, *w.shape[2:]))
    for k in range(m):
        out[block == k, k * per_group:(k + 1) * per_group] = w[block == k]
    return out


def _axis_layout(p: _Branch, q: _Branch, axis: int, extent: int
                 ) -> tuple[int, int, int, int, int] | None:
    """(kernel size, pad before, pad after, offset of p's taps, offset of q's) along one
    spatial axis of the merged conv, or None when the taps do not line up."""
    d, s, out = p.dilation[axis], p.strides[axis], p.shape[2 + axis]
    before = max(p.padding[axis], q.padding[axis])
    offsets = []
    for br in (p, q):
        shift = before - br.padding[axis]
        if shift % d:
            return None
        offsets.append(shift // d)
    k = max(o + br.w.shape[2 + axis] for o, br in zip(offsets, (p, q), strict=True))
    span = (k - 1) * d + 1
    after = max(0, (out - 1) * s + span - before - extent)
    if (extent + before + after - span) // s + 1 != out:
        return None
    return k, before, after, offsets[0], offsets[1]


def _rounding_noise(w: np.ndarray) -> np.ndarray:
    """Per output channel, the power int8 rounding adds to the channel's output (for unit
    inputs): taps x step^2 / 12, the step of symmetric per-channel weights max|w| / 127."""
    flat = np.abs(w).reshape(w.shape[0], -1)
    return flat.shape[1] * (flat.max(1) / 127) ** 2 / 12


def _merge(p: _Branch, q: _Branch, in_shape: tuple[int, ...]) -> _Branch | None:
    if p.strides != q.strides or p.dilation != q.dilation or p.shape != q.shape \
            or p.w.shape[1] * p.groups != q.w.shape[1] * q.groups or len(in_shape) != 4:
        return None
    layouts = [_axis_layout(p, q, axis, in_shape[2 + axis]) for axis in (0, 1)]
    if None in layouts:
        return None
    (kh, top, bottom, ph, qh), (kw, left, right, pw, qw) = layouts
    g = math.gcd(p.groups, q.groups)
    w = np.zeros((p.w.shape[0], in_shape[1] // g, kh, kw))
    if w.size > p.macs() + q.macs():  # a depthwise kxk beside a full 1x1: two convs are less
        return None
    for br, oh, ow in ((p, ph, pw), (q, qh, qw)):
        w[:, :, oh:oh + br.w.shape[2], ow:ow + br.w.shape[3]] += _regroup(br.w, br.groups, g)
    branches = np.maximum(_rounding_noise(p.w) + _rounding_noise(q.w), np.finfo(float).tiny)
    if np.median(_rounding_noise(w) / branches) > NOISE_GROWTH:
        return None  # e.g. RepVGG's identity beside a full 3x3: its 1.0 tap coarsens the rest
    source = p.source if p.w.shape[2] * p.w.shape[3] >= q.w.shape[2] * q.w.shape[3] \
        else q.source
    return replace(p, w=w, b=p.b + q.b, groups=g, padding=(top, left, bottom, right),
                   source=source)


class _Merger:
    def __init__(self, func: relax.Function) -> None:
        self.func = func
        self.uses = use_counts(func)
        self.bb = relax.BlockBuilder()
        self.env: dict = {}
        self.branch: dict = {}  # var of the original function -> _Branch it computes
        self.merged = 0

    def single_use_branch(self, expr: relax.Expr) -> _Branch | None:
        if isinstance(expr, relax.Var) and self.uses.get(expr) == 1:
            return self.branch.get(expr)
        return None

    def classify(self, value: relax.Expr) -> tuple[_Branch | None, bool]:
        """(the branch `value` computes, whether it is a new merge to emit)."""
        if not isinstance(value, relax.Call):
            return None, False
        if op_name(value) == "relax.nn.conv2d":
            return _conv_branch(value), False
        if op_name(value) != "relax.add" or len(value.args) != 2:
            return None, False
        lhs, rhs = value.args
        if is_const(lhs):
            lhs, rhs = rhs, lhs
        p = self.single_use_branch(lhs)
        if p is None or shape_of(value) != p.shape:
            return None, False
        if is_const(rhs):
            c = channel_vector(const_array(rhs), p.shape)
            return (None if c is None else replace(p, b=p.b + c)), False
        q = self.single_use_branch(rhs)
        if q is None or not p.x.same_as(q.x):
            return None, False
        merged = _merge(p, q, shape_of(p.x))
        return merged, merged is not None

    def emit_merged(self, br: _Branch) -> relax.Expr:
        conv = relax.op.nn.conv2d(
            substitute(br.x, self.env), relax.const(br.w.astype(np.float32)), br.strides,
            br.padding, br.dilation, br.groups, out_dtype=br.out_dtype)
        y = self.bb.emit(with_span(conv, br.source))
        bias = relax.const(br.b.astype(np.float32).reshape(1, -1, 1, 1))
        return self.bb.emit(with_span(relax.op.add(y, bias), br.source))

    def run(self, name: str) -> relax.Function:
        attrs = dict(self.func.attrs) if self.func.attrs else None
        with self.bb.function(name, list(self.func.params), attrs):
            with self.bb.dataflow():
                for b in bindings(self.func):
                    br, is_merge = self.classify(b.value)
                    if br is not None:
                        self.branch[b.var] = br
                    if is_merge:
                        self.merged += 1
                        y = self.emit_merged(br)
                        self.env[b.var] = y if isinstance(b.var, relax.DataflowVar) \
                            else self.bb.emit_output(y)
                        continue
                    value = substitute(b.value, self.env)
                    self.env[b.var] = self.bb.emit(value) \
                        if isinstance(b.var, relax.DataflowVar) else self.bb.emit_output(value)
            self.bb.emit_func_output(substitute(self.func.body.body, self.env))
        return self.bb.get()[name]


def merge_parallel_convs() -> tvm.transform.Pass:
    """The pass: summed parallel convs of one input merged in every Relax function; the
    branches left unread go with dead-code elimination."""

    @module_pass("qcompiler.merge_parallel_convs")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        changed = False
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function) and not (func.attrs and
                                                         "Composite" in func.attrs):
                merger = _Merger(func)
                new = merger.run(gv.name_hint)
                if merger.merged:
                    mod[gv] = new
                    changed = True
        return relax.transform.DeadCodeElimination()(mod) if changed else mod

    return transform
