"""Fuse each producer with its bias and activation into one composite function.

    conv2d(x, W) [+ b] [-> relu | clip(lo, hi)]   ->  Composite "qcompiler.conv2d"
    conv2d_transpose(x, W) [+ b] [-> relu | clip] ->  Composite "qcompiler.conv2d_transpose"
    matmul(x, W) [+ b] [-> relu | clip(lo, hi)]   ->  Composite "qcompiler.dense"
    add(x, y)          [-> relu | clip(lo, hi)]   ->  Composite "qcompiler.add"

A composite is one integer kernel after quantization: the activation becomes the saturating
clamp of its requantization, so only the composite's output is ever quantized (and calibrated).
Anything else, e.g. an activation after a pool, or an add of a constant, is left alone.
"""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

COMPOSITES = ("qcompiler.conv2d", "qcompiler.conv2d_transpose", "qcompiler.dense",
              "qcompiler.add")


def _with_activation(producer):  # noqa: ANN001, ANN202
    relu = is_op("relax.nn.relu")(producer)
    clip = is_op("relax.clip")(producer, wildcard(), wildcard())
    return [relu, clip, producer]


def _patterns() -> list[tuple]:
    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    conv_t = is_op("relax.nn.conv2d_transpose")(wildcard(), is_const())
    dense = is_op("relax.matmul")(wildcard(), is_const())
    residual = is_op("relax.add")(~is_const(), ~is_const())
    out = []
    for name, producer in (("qcompiler.conv2d", conv), ("qcompiler.conv2d_transpose", conv_t),
                           ("qcompiler.dense", dense)):
        biased = is_op("relax.add")(producer, is_const())
        out += [(name, p) for p in _with_activation(biased) + _with_activation(producer)]
    out += [("qcompiler.add", p) for p in _with_activation(residual)]
    return out


def fuse_activation() -> tvm.transform.Pass:
    return relax.transform.FuseOpsByPattern(_patterns(), bind_constants=True,
                                            annotate_codegen=False)
