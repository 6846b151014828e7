"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", section 4.1).

Per-channel weight ranges that differ by orders of magnitude waste most of a per-tensor (or
4-bit) grid. For two convolutions joined by a positive-homogeneous chain,

    conv2d(x, W1) [+ b1] -> relu [-> max_pool2d ...] -> conv2d(., W2)   (W2 with groups 1)

relu(z / s) = relu(z) / s for s > 0 (and max pooling commutes with it), so with
r1[i] = max|W1[i, ...]|, r2[i] = max|W2[:, i, ...]| and s[i] = sqrt(r1[i] r2[i]) / r2[i]:

    W1'[i] = W1[i] / s[i],   b1'[i] = b1[i] / s[i],   W2'[:, i] = W2[:, i] s[i]

computes the same function and makes both ranges sqrt(r1[i] r2[i]). conv1 may be grouped or
depthwise (the MobileNet depthwise -> pointwise case). A conv in two pairs (a chain of three)
is rescaled by both; sweeps repeat until the scales settle, as in the paper.

Runs on the float graph before `fuse_activation`. Left alone: a Clip(0, 6) between the convs
(ReLU6 is not positive-homogeneous: its bound would become per channel, 6 / s[i], which the
fused kernel's scalar clamp cannot express), an intermediate used twice (a residual), a
grouped conv2, and a layout other than NCHW / OIHW.
"""
from __future__ import annotations

import math

import numpy as np
import tvm
from qcompiler.passes import module_pass
from tvm import relax

from qcompiler.relax_access import (
    bound_values,
    const_array,
    is_const,
    is_const_nchw_conv,
    op_name,
    prim_float,
)

MAX_SWEEPS = 100
TOLERANCE = 1e-6  # stop when every scale of a sweep is within this of 1


def _positive_homogeneous(value: relax.Expr) -> bool:
    """relu, clip(0, +inf), max_pool2d: f(x / s) = f(x) / s per channel for s > 0."""
    name = op_name(value)
    if name == "relax.clip":
        return prim_float(value.args[1]) == 0.0 and prim_float(value.args[2]) == math.inf
    if name == "relax.nn.max_pool2d":
        return str(value.attrs.layout) == "NCHW"
    return name == "relax.nn.relu"


def _is_relu(value: relax.Expr) -> bool:
    return op_name(value) != "relax.nn.max_pool2d" and _positive_homogeneous(value)


def _channel_bias(value: relax.Expr, prev: relax.Var, channels: int) -> bool:
    """`prev + b` with a constant b of shape (1, C, 1, 1) or (C,)-like, one value a channel."""
    if op_name(value) != "relax.add" or not value.args[0].same_as(prev) \
            or not is_const(value.args[1]):
        return False
    b = const_array(value.args[1])
    return b.size == channels and b.ndim in (1, 4) and (b.ndim == 1 or b.shape[1] == channels)


def find_pairs(func: relax.Function) -> list[tuple[relax.Var, relax.Var | None, relax.Var]]:
    """(conv1 var, its bias-add var or None, conv2 var) for every equalizable pair."""
    bound = bound_values(func)
    uses: dict = {}
    for value in [*bound.values(), func.body.body]:
        for v in relax.analysis.free_vars(value):
            uses.setdefault(v, []).append(value)
    pairs = []
    for var, value in bound.items():
        if not is_const_nchw_conv(value):
            continue
        channels = const_array(value.args[1]).shape[0]
        cur, bias, relu = var, None, False
        while len(uses.get(cur, [])) == 1 and cur not in relax.analysis.free_vars(func.body.body):
            user = uses[cur][0]
            nxt = next((v for v, val in bound.items() if val.same_as(user)), None)
            if nxt is None:
                break
            if bias is None and not relu and _channel_bias(user, cur, channels):
                bias = nxt
            elif _positive_homogeneous(user) and user.args[0].same_as(cur):
                relu = relu or _is_relu(user)
            elif relu and is_const_nchw_conv(user) and user.args[0].same_as(cur) \
                    and int(user.attrs.groups) == 1:
                pairs.append((var, bias, nxt))
                break
            else:
                break
            cur = nxt
    return pairs


def equalize(weights: dict, biases: dict, pairs: list) -> int:
    """Rescale `weights` (var -> float64 OIHW) and `biases` in place; returns sweeps run."""
    for sweep in range(1, MAX_SWEEPS + 1):
        worst = 0.0
        for c1, add, c2 in pairs:
            w1, w2 = weights[c1], weights[c2]
            r1 = np.abs(w1).max(axis=(1, 2, 3))
            r2 = np.abs(w2).max(axis=(0, 2, 3))
            ok = (r1 > 0) & (r2 > 0)
            s = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)
            weights[c1] = w1 / s.reshape(-1, 1, 1, 1)
            weights[c2] = w2 * s.reshape(1, -1, 1, 1)
            if add is not None:
                biases[add] = biases[add] / s.reshape(biases[add].shape)
            worst = max(worst, float(np.abs(np.log(s)).max(initial=0.0)))
        if worst < TOLERANCE:
            return sweep
    return MAX_SWEEPS


def _rewrite(func: relax.Function) -> relax.Function:
    pairs = find_pairs(func)
    if not pairs:
        return func
    bound = bound_values(func)
    weights = {v: const_array(bound[v].args[1]).astype(np.float64)
               for c1, _, c2 in pairs for v in (c1, c2)}
    biases = {a: const_array(bound[a].args[1]).astype(np.float64)
              for _, a, _ in pairs if a is not None}
    equalize(weights, biases, pairs)
    new = {**weights, **biases}
    blocks = []
    for blk in func.body.blocks:
        bindings = []
        for b in blk.bindings:
            value = b.value
            if b.var in new:
                args = [value.args[0], relax.const(new[b.var].astype(np.float32))]
                value = relax.Call(value.op, args, value.attrs, value.ty_args,
                                   value.span)  # the span: its ONNX node (layer names)
            bindings.append(relax.VarBinding(b.var, value))
        blocks.append(relax.DataflowBlock(bindings) if isinstance(blk, relax.DataflowBlock)
                      else relax.BindingBlock(bindings))
    return relax.Function(func.params, relax.SeqExpr(blocks, func.body.body), func.ret_ty,
                          func.is_pure, func.attrs)


def equalize_cross_layer() -> tvm.transform.Pass:
    """The pass: every Relax function's equalizable conv pairs rescaled (float function kept)."""

    @module_pass("qcompiler.equalize_cross_layer")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        funcs = {gv: _rewrite(f) if isinstance(f, relax.Function) else f
                 for gv, f in mod.functions.items()}  # a new module: the input stays as it was
        new = tvm.IRModule(funcs, attrs=mod.attrs)
        return relax.transform.Normalize()(new)  # types for the rebuilt conv calls

    return transform
