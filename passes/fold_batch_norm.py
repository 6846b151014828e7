"""Fold inference BatchNormalization into the convolution that feeds it.

    y = gamma * (conv(x, W) + b - mu) / sqrt(var + eps) + beta
      = conv(x, W') + b',   W'[c] = W[c] * gamma[c] / sqrt(var[c] + eps),
                            b'[c] = (b[c] - mu[c]) * gamma[c] / sqrt(var[c] + eps) + beta[c]

It must run before weights are quantized: per-channel weight scales are then taken from W',
the weights the integer kernel actually multiplies by. The arithmetic is float64, stored float32.
The same holds for conv2d_transpose, whose output channel c is a slice of W's axis 1. A batch
norm whose input is not a constant-weight conv2d or conv2d_transpose (optionally plus a
constant bias) is left alone.
"""
from __future__ import annotations

import numpy as np
import tvm
from qcompiler.passes import module_pass
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, rewrite_call, wildcard

from qcompiler.relax_access import const_array, with_span


def _pattern() -> tuple:
    conv = is_op("relax.nn.conv2d")(wildcard(), is_const()) \
        | is_op("relax.nn.conv2d_transpose")(wildcard(), is_const())
    bias = is_const()
    biased = is_op("relax.add")(conv, bias)
    stats = [is_const() for _ in range(4)]
    bn = is_op("relax.nn.batch_norm")(conv | biased, *stats)
    return is_tuple_get_item(bn, 0), conv, bias, bn


def _scale_output_channels(w: np.ndarray, k: np.ndarray, transposed_groups: int) -> np.ndarray:
    """W[c] * k[c] per output channel c: axis 0 of a conv's OIHW weights; for a transposed
    conv's (Cin, Cout/g, kh, kw) weights, channel g * Cout/g + o is w[g-th Cin block, o]."""
    if not transposed_groups:
        return w * k.reshape(-1, 1, 1, 1)
    g = transposed_groups
    blocks = w.reshape(g, w.shape[0] // g, *w.shape[1:])
    return (blocks * k.reshape(g, 1, -1, 1, 1)).reshape(w.shape)


def _rewrite(conv_p, bias_p, bn_p):  # noqa: ANN001, ANN202
    def rewriter(orig: relax.Expr, match: dict) -> relax.Expr:
        conv, bn = match[conv_p], match[bn_p]
        transposed = conv.op.name == "relax.nn.conv2d_transpose"
        if int(bn.attrs.axis) != 1 or str(conv.attrs.data_layout) != "NCHW" \
                or str(conv.attrs.kernel_layout) != ("IOHW" if transposed else "OIHW"):
            return orig
        gamma, beta, mu, var = (const_array(a).astype(np.float64) for a in bn.args[1:5])
        eps = float(bn.attrs.epsilon)
        w = const_array(conv.args[1]).astype(np.float64)
        groups = int(conv.attrs.groups)
        cout = w.shape[1] * groups if transposed else w.shape[0]
        b = const_array(match[bias_p]).astype(np.float64).reshape(-1) if bias_p in match \
            else np.zeros(cout)
        if b.size != cout:
            return orig
        k = gamma / np.sqrt(var + eps)
        w_folded = _scale_output_channels(w, k, groups if transposed else 0).astype(np.float32)
        b_folded = ((b - mu) * k + beta).astype(np.float32).reshape(1, cout, 1, 1)
        # the BN's span (its ONNX node) on the conv: the add's is lost when it is normalized
        new_conv = relax.Call(conv.op, [conv.args[0], relax.const(w_folded)], conv.attrs,
                              span=bn.span)
        return with_span(relax.op.add(new_conv, relax.const(b_folded)), bn)

    return rewriter


def fold_batch_norm() -> tvm.transform.Pass:
    @module_pass("qcompiler.fold_batch_norm")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        out, conv_p, bias_p, bn_p = _pattern()
        rewriter = _rewrite(conv_p, bias_p, bn_p)
        updates = {gv: rewrite_call(out, rewriter, f) for gv, f in mod.functions.items()
                   if isinstance(f, relax.Function)}
        for gv, f in updates.items():
            mod[gv] = f
        return relax.transform.DeadCodeElimination()(mod)

    return transform
