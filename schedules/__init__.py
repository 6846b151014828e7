"""Target-specific integer kernels, swapped in for the portable ones after quantization.

A scheduled kernel computes what the portable kernel computes, from operands prepared once at
compile time: its weights packed for the dot-product instruction and the zero point folded into
its bias (`numerics.weight_layout`), as nibbles again if the portable kernel stored them so
(`numerics.nibbles`). Its attributes say so (`packed_lanes`, `w_shape`, `nibble_shape`), which
is all the reference needs to read the same numbers back. The graph is otherwise unchanged.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import tvm
from qcompiler.schedules.arm.dot import ARM_SDOT
from qcompiler.schedules.arm.vector import NEON_VECTOR
from qcompiler.schedules.channel_local import (
    CHANNEL_LOCAL,
    HVX_CHANNEL_LOCAL_RULE,
    NEON_CHANNEL_LOCAL,
)
from qcompiler.schedules.dot_product import DotProduct
from qcompiler.schedules.hexagon.depthwise_lanes import HVX_CHANNEL_LANES
from qcompiler.schedules.hexagon.dot import HEXAGON_VRMPY
from qcompiler.schedules.hexagon.vector import HVX_VECTOR
from qcompiler.schedules.vector_rule import VectorRule
from qcompiler.schedules.x86.blocked import BLOCKED_VNNI, depthwise_rule
from qcompiler.schedules.x86.columns import X86_VNNI_COLUMNS
from qcompiler.schedules.x86.depthwise import DEPTHWISE, DEPTHWISE_VNNI
from qcompiler.schedules.x86.dot import X86_AVX2, X86_VNNI
from qcompiler.schedules.x86.lookup import X86_VBMI_LOOKUP
from qcompiler.schedules.x86.requantize import RIGHT_SHIFTS
from qcompiler.schedules.x86.rows import X86_ROWS
from qcompiler.targets.target import Target
from tvm import relax

from qcompiler.graph_meta import record_schedule_fallbacks, schedule_fallback
from qcompiler.numerics import nibbles
from qcompiler.numerics.weight_layout import canonical
from qcompiler.relax_access import bindings, const_array, is_const, op_name, reemit


def shift_kind(shift: np.ndarray | None) -> str:
    """"right" when every channel's requantize shift is a right shift (the vector epilogue's
    cheaper form) of 2 to 22 more bits (`x86.requantize.RIGHT_SHIFTS`: a multiplier in
    [2^-23, 1/4), where real layers are near 2^-10), else "any". Part of a kernel's identity:
    tuning rebuilds it the same way."""
    lo, hi = RIGHT_SHIFTS
    return "right" if shift is not None and ((shift >= lo) & (shift <= hi)).all() else "any"


def rules_for(target: Target) -> list:
    """The kernel rules a target's ISA supports (VNNI only where the target enables it), in
    order: a kernel takes the first rule that applies."""
    if target.name == "arm":
        return [ARM_SDOT, NEON_VECTOR, CHANNEL_LOCAL]
    if target.name == "hexagon" and target.has("hvxv68"):
        return [HEXAGON_VRMPY, HVX_CHANNEL_LANES, HVX_VECTOR, HVX_CHANNEL_LOCAL_RULE]
    if target.name == "x86":
        lookup = [X86_VBMI_LOOKUP] if target.has("avx512vbmi") else []
        if target.has("avx512vnni"):
            return [X86_VNNI_COLUMNS, X86_VNNI, DEPTHWISE_VNNI, *lookup, X86_ROWS]
        return [X86_AVX2, DEPTHWISE, *lookup, X86_ROWS]
    return []


def tunable_rules(target: Target) -> list:
    """The rules whose kernels tuning can rebuild: the target's dot-product rules; on ARM the
    depthwise conv per channel (`channel_local`); on x86 VNNI the blocked conv (alone or
    fused with an add or a table) and depthwise conv (built by `passes.plan_layout`, not
    chosen by `apply_schedules`)."""
    rules = [r for r in rules_for(target) if isinstance(r, DotProduct)]
    if target.name == "arm":
        rules.append(NEON_CHANNEL_LOCAL)
    if target.name == "x86" and target.has("avx512vnni"):
        rules += [BLOCKED_VNNI, depthwise_rule(target.has("avx512vbmi"))]
    return rules


def _shape(func: tvm.tirx.PrimFunc, i: int) -> tuple[tuple[int, ...], str]:
    buf = func.params[i]  # in TVM 0.27 a PrimFunc parameter is the buffer itself
    return tuple(int(d) for d in buf.shape), str(buf.dtype)


def _plan(mod: tvm.IRModule, call: relax.Call, rules: list, tensor: str = "",
          fallbacks: list | None = None, portable: Mapping[str, Exception] | None = None
          ) -> tuple | None:
    """(packed PrimFunc, new constant operands) for one kernel call, or None to keep it.

    A rule that raises while packing, building or scheduling the kernel (a TVM ScheduleError or
    TVMError, or our own exception) leaves the portable kernel in place, which computes the same
    numbers, and is recorded in `fallbacks` (`graph_meta.ScheduleFallback`; `tensor`: the
    binding's name): the compile goes on, its summary names the layer, and the fuzz and zoo
    tests fail on it. Only an interrupt (not an Exception) stops the compile. `portable`:
    kernels (by symbol) whose built code failed before, with the error: kept portable and
    recorded the same way."""
    func = mod[call.args[0]]
    if not isinstance(func, tvm.tirx.PrimFunc) or "qcompiler.op" not in func.attrs \
            or "qcompiler.schedule" in func.attrs:  # portable kernels only (not `blocked`'s)
        return None
    op = str(func.attrs["qcompiler.op"])
    attrs = json.loads(str(func.attrs["qcompiler.attrs"]))
    args = list(call.args[1].fields)
    x_shape, x_dtype = _shape(func, 0)
    symbol = str(func.attrs["global_symbol"])
    for rule in rules:
        if not rule.applies(op, attrs, x_dtype):
            continue
        if portable and symbol in portable:  # LLVM rejected this rule's code for it
            if fallbacks is not None:
                fallbacks.append(schedule_fallback(tensor, op, symbol, rule.name,
                                                   portable[symbol]))
            return None
        try:
            return _plan_rule(rule, func, op, attrs, args, x_shape, x_dtype)
        except _Declined:
            continue
        except Exception as exc:  # noqa: BLE001 - any failure of a rule: the portable kernel
            if fallbacks is not None:
                fallbacks.append(schedule_fallback(tensor, op, symbol, rule.name, exc))
            return None
    return None


class _Declined(Exception):
    """A rule that applies to the op but not to this kernel: the next rule is tried."""


def _plan_rule(rule: object, func: tvm.tirx.PrimFunc, op: str, attrs: dict, args: list,
               x_shape: tuple, x_dtype: str) -> tuple | None:
    """`_plan` for one rule that applies (None: keep the portable kernel); raises _Declined
    when the rule does not fit the kernel."""
    if isinstance(rule, VectorRule):  # same operands, another loop nest
        new = rule.rebuild(func, [const_array(a) if is_const(a) else None for a in args])
        if new is None:
            raise _Declined
        return new.with_attr("global_symbol", func.attrs["global_symbol"]), args
    if not all(is_const(a) for a in args[1:3]):
        raise _Declined
    if nibbles.is_nibbles(attrs) and not isinstance(rule, DotProduct):
        raise _Declined  # 4-bit (nibble) weights: only the dot-product kernels unpack them
    w = canonical(const_array(args[1]), attrs)  # int8, also for 4-bit (nibble) storage
    if hasattr(rule, "fits") and not rule.fits(x_shape, w.shape, attrs):
        raise _Declined  # a rule that depends on shapes the attributes do not carry
    try:
        wp, bias = rule.pack_operands(w, const_array(args[2]), attrs)
    except OverflowError:
        return None  # keep the portable kernel: its int64 epilogue cannot wrap
    new = rule.build(op, x_shape, x_dtype, w.shape, attrs, shifts=shift_kind(
        const_array(args[4]) if is_const(args[4]) else None))
    new = new.with_attr("global_symbol", func.attrs["global_symbol"])
    return new, [args[0], relax.const(wp), relax.const(bias), *args[3:]]


def apply_schedules(mod: tvm.IRModule, target: Target, rules: list | None = None,
                    portable: Mapping[str, Exception] | None = None) -> tvm.IRModule:
    """The module rebuilt with every kernel a target has a rule for replaced by its packed,
    tensorized or vectorized version (others untouched). `rules`: instead of the target's
    (e.g. `hexagon.plain.PLAIN_VECTOR_RULES`, for comparisons). A kernel whose rule raises
    stays portable and is listed in the graph metadata (`graph_meta.schedule_fallbacks`), as
    is each kernel named in `portable` (symbol -> the error its built code gave)."""
    rules = rules_for(target) if rules is None else rules
    if not rules:
        return mod
    plans, fallbacks = {}, []
    for b in bindings(mod["main_int"]):
        if isinstance(b.value, relax.Call) and op_name(b.value) == "relax.call_tir":
            plan = _plan(mod, b.value, rules, b.var.name, fallbacks, portable)
            if plan is not None:
                plans[b.value.args[0]] = plan
    return record_schedule_fallbacks(_rebuild(mod, plans) if plans else mod, fallbacks)


def _rebuild(mod: tvm.IRModule, plans: dict) -> tvm.IRModule:
    """A fresh module: a replaced kernel has another signature, so it needs a new GlobalVar,
    and every Relax function is re-emitted against the new ones."""
    bb = relax.BlockBuilder()
    gmap = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            gmap[gv] = bb.add_func(plans[gv][0] if gv in plans else func, gv.name_hint)
    names = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, relax.Function)]
    assert sorted(names) == ["main", "main_int"], names
    def packed(value: relax.Expr) -> relax.Expr:  # a replaced kernel's call takes its operands
        if isinstance(value, relax.Call) and op_name(value) == "relax.call_tir" \
                and value.args[0] in plans:
            return relax.call_tir(value.args[0], plans[value.args[0]][1], value.ty_args[0])
        return value

    for name in ("main_int", "main"):  # main calls main_int
        # names kept: reports find tensors by name (`Reference.run_all`)
        reemit(bb, mod[name], name, dict(gmap), packed, keep_names=True)
        gmap[mod.get_global_var(name)] = bb.get().get_global_var(name)
    return bb.get()
