"""Target-specific integer kernels, swapped in for the portable ones after quantization.

A scheduled kernel keeps the portable kernel's operands and `qcompiler.attrs`, so the graph,
the reference and the reports do not change; only the PrimFunc behind the call does.
"""
from __future__ import annotations

import json

import tvm

from qcompiler.schedules.dot_product import ARM_SDOT, HEXAGON_VRMPY, X86_VNNI
from qcompiler.targets.target import Target


def rules_for(target: Target) -> list:
    """The kernel rules a target's ISA supports (VNNI only where the target enables it)."""
    if target.name == "arm":
        return [ARM_SDOT]
    if target.name == "hexagon":
        return [HEXAGON_VRMPY]
    if target.name == "x86" and "+avx512vnni" in target.tvm_target.get("mattr", []):
        return [X86_VNNI]
    return []


def _shape(func: tvm.tirx.PrimFunc, i: int) -> tuple[tuple[int, ...], str]:
    buf = func.params[i]  # in TVM 0.27 a PrimFunc parameter is the buffer itself
    return tuple(int(d) for d in buf.shape), str(buf.dtype)


def apply_schedules(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Replace each kernel a target has a schedule for; return the module (others untouched)."""
    rules = rules_for(target)
    if not rules:
        return mod
    mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or "qcompiler.op" not in func.attrs:
            continue
        op = str(func.attrs["qcompiler.op"])
        attrs = json.loads(str(func.attrs["qcompiler.attrs"]))
        for rule in rules:
            (x_shape, x_dtype) = _shape(func, 0)
            if rule.applies(op, attrs, x_dtype):
                w_shape, _ = _shape(func, 1)
                new = rule.build(op, x_shape, x_dtype, w_shape, attrs)
                mod[gv] = new.with_attr("global_symbol", func.attrs["global_symbol"])
                break
    return mod
