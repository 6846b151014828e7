"""Fuse each producer with its bias and activation into one composite function.

    conv2d(x, W) [+ b] [-> relu | clip(lo, hi)]   ->  Composite "qcompiler.conv2d"
    conv2d_transpose(x, W) [+ b] [-> relu | clip] ->  Composite "qcompiler.conv2d_transpose"
    matmul(x, W) [+ b] [-> relu | clip(lo, hi)]   ->  Composite "qcompiler.dense"
    add(x, y)          [-> relu | clip(lo, hi)]   ->  Composite "qcompiler.add"
    x * clip(x + a, lo, hi) / d                   ->  Composite "qcompiler.hardswish"
    clip(alpha * x + beta, lo, hi)                ->  Composite "qcompiler.hardsigmoid"

A composite is one integer kernel after quantization: the activation becomes the saturating
clamp of its requantization, so only the composite's output is ever quantized (and calibrated).
HardSwish and HardSigmoid (which TVM's ONNX frontend decomposes into the chains above, with
scalar constants) become one lookup table each; they are matched first, so that the `x + 3`
inside a HardSwish is never taken for the bias of the conv that produces x.
Anything else, e.g. an activation after a pool, or an add of a constant, is left alone, and so
is a match whose intermediate value is also used outside it.
"""
from __future__ import annotations

import tvm
from qcompiler.passes import module_pass
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard
from tvm.relax.transform import FusionPattern, PatternCheckContext

from qcompiler.frontend.node_names import spans_after_fusion
from qcompiler.relax_access import const_array, is_tensor_const

COMPOSITES = ("qcompiler.conv2d", "qcompiler.conv2d_transpose", "qcompiler.dense",
              "qcompiler.add", "qcompiler.hardswish", "qcompiler.hardsigmoid")


def _with_activation(producer):  # noqa: ANN001, ANN202
    relu = is_op("relax.nn.relu")(producer)
    clip = is_op("relax.clip")(producer, wildcard(), wildcard())
    return [relu, clip, producer]


def _self_contained(ctx: PatternCheckContext) -> bool:
    """Only the match's last value may be used outside it (else fusing would duplicate it)."""
    inner = set(ctx.matched_bindings.keys())
    out = ctx.value_to_bound_var[ctx.matched_expr]
    return all(u in inner for v in inner if not v.same_as(out) for u in ctx.var_usages.get(v, []))


def _scalar_constants(ctx: PatternCheckContext) -> bool:
    """A table activation needs scalar constants (a per-channel `x + a[c]` is not one f)."""
    return _self_contained(ctx) and all(
        const_array(arg).size == 1 for call in ctx.matched_bindings.values()
        for arg in call.args if is_tensor_const(arg))


def _table_patterns() -> list[FusionPattern]:
    x = wildcard()
    shifted = is_op("relax.clip")(is_op("relax.add")(x, is_const()), wildcard(), wildcard())
    hardswish = is_op("relax.multiply")(x, is_op("relax.divide")(shifted, is_const()))
    y = wildcard()
    affine = is_op("relax.add")(is_op("relax.multiply")(is_const(), y), is_const())
    hardsigmoid = is_op("relax.clip")(affine, wildcard(), wildcard())
    return [FusionPattern("qcompiler.hardswish", hardswish, check=_scalar_constants),
            FusionPattern("qcompiler.hardsigmoid", hardsigmoid, check=_scalar_constants)]


def _patterns() -> list[FusionPattern]:
    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    conv_t = is_op("relax.nn.conv2d_transpose")(wildcard(), is_const())
    dense = is_op("relax.matmul")(wildcard(), is_const())
    residual = is_op("relax.add")(~is_const(), ~is_const())
    out = _table_patterns()
    for name, producer in (("qcompiler.conv2d", conv), ("qcompiler.conv2d_transpose", conv_t),
                           ("qcompiler.dense", dense)):
        biased = is_op("relax.add")(producer, is_const())
        out += [FusionPattern(name, p, check=_self_contained)
                for p in _with_activation(biased) + _with_activation(producer)]
    out += [FusionPattern("qcompiler.add", p, check=_self_contained)
            for p in _with_activation(residual)]
    return out


def fuse_activation() -> tvm.transform.Pass:
    fuse = relax.transform.FuseOpsByPattern(_patterns(), bind_constants=True,
                                            annotate_codegen=False)

    @module_pass("qcompiler.fuse_activation")
    def transform(mod: tvm.IRModule, _ctx: object) -> tvm.IRModule:
        # each composite call keeps the ONNX node of the group it replaced (layer names)
        return spans_after_fusion(mod["main"], fuse(mod))

    return transform
