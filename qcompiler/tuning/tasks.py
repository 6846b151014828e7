"""The tuning tasks of a quantized graph: one per distinct dot-product kernel.

A task is the unscheduled packed kernel (`DotProduct.workload`), which is also its key in the
tuning database: layers whose kernels compute the same thing (same shapes, strides, zero
points, clamp, fused add or table) share one task and one record. Each task keeps the
constant operands of its first layer (real packed weights, bias, multipliers, a fused table),
so candidates are measured and checked on the data they will run on; its other operands (the
input, a fused add's second operand) are drawn at random for each measurement.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from qcompiler.relax_access import (
    bindings,
    const_array,
    dtype_of,
    is_tensor_const,
    op_name,
    shape_of,
)
from qcompiler.schedules import shift_kind, tunable_rules
from qcompiler.schedules.dot_product import DotProduct
from qcompiler.schedules.fixed_point32 import unbound
from qcompiler.targets.target import Target

# Added by the packed kernel; not the workload's.
PACKED_KEYS = ("packed_lanes", "depthwise_lanes", "w_shape", "columns_folded")


@dataclass(frozen=True)
class Activation:
    """An operand that is not a constant (a fused add's second operand): drawn at random."""

    shape: tuple
    dtype: str


@dataclass
class Task:
    """One kernel to tune, with what is needed to build, run and check it."""

    name: str  # e.g. "conv2d 1x64x56x56 -> 64 k3x3 s1"
    rule: DotProduct  # or another rule of `schedules.tunable_rules` (the same methods)
    op: str
    x_shape: tuple
    x_dtype: str
    w_shape: tuple
    attrs: dict  # the portable kernel's attributes
    # The operands after the input: packed weights, folded bias, m0, shift of the first layer,
    # then a fused add's second operand (`Activation`) or a fused table.
    operands: list[np.ndarray | Activation]
    shifts: str = "any"  # the rule's `shift_kind` of the layers' shifts (part of the kernel)
    kernels: list = field(default_factory=list)  # the module's GlobalVars running it
    kernel_attrs: dict = field(default_factory=dict)  # the built kernel's (the reference's)

    @property
    def calls(self) -> int:
        """Layers that run this kernel."""
        return len(self.kernels)

    @property
    def workload(self) -> tvm.IRModule:
        """The tuning database's key: the unscheduled packed kernel as a one-function module."""
        func = self.rule.workload(self.op, self.x_shape, self.x_dtype, self.w_shape, self.attrs,
                                  self.shifts)
        return tvm.IRModule({"main": func})

    @property
    def search_workload(self) -> tvm.IRModule:
        """The workload as MetaSchedule searches it: the same blocks and loops (so its traces
        replay on `workload`) without `Let` expressions, which TVM's FLOP estimate rejects."""
        with unbound():
            return self.workload

    def build(self, trace: tvm.s_tir.Trace | None = None) -> tvm.tirx.PrimFunc:
        """The scheduled kernel: the fixed schedule, or a tuning record's trace."""
        return self.rule.build(self.op, self.x_shape, self.x_dtype, self.w_shape, self.attrs,
                               trace, self.shifts)

    def default_trace(self) -> tvm.s_tir.Trace:
        """The fixed schedule as a trace of the tunable design space (its first decisions)."""
        sch = tvm.s_tir.Schedule(self.workload)
        self.rule.schedule(sch, tunable=True)
        return sch.trace

    def ops(self) -> int:
        """Multiply-accumulates x 2 of one call (for GOPS figures)."""
        y = self.workload["main"].params[-1]  # a PrimFunc parameter is its buffer in TVM 0.27
        return 2 * int(np.prod([int(d) for d in y.shape])) * int(np.prod(self.w_shape[1:]))


def _describe(op: str, x_shape: tuple, w_shape: tuple, attrs: dict) -> str:
    shape = "x".join(map(str, x_shape))
    if op == "dense":
        return f"dense {shape} -> {w_shape[0]}"
    k = "x".join(map(str, w_shape[2:]))
    s = attrs["strides"][0]
    kind = "dwconv" if w_shape[1] == 1 and attrs["groups"] == w_shape[0] > 1 else "conv2d"
    fused = " +add" if op == "conv2d_add" else " +table" if op == "conv2d_lut" else ""
    return f"{kind} {shape} -> {w_shape[0]} k{k} s{s}{fused}"


def _operand(arg: relax.Expr) -> np.ndarray | Activation:
    if is_tensor_const(arg):
        return const_array(arg)
    return Activation(shape_of(arg), dtype_of(arg))


def extract_tasks(mod: tvm.IRModule, target: Target) -> list[Task]:
    """The distinct tunable kernels of a scheduled module (`apply_schedules`' output), in
    graph order, each with the kernels (GlobalVars) that compute it."""
    rules = {name: r for r in tunable_rules(target) for name in r.kernel_names}
    tasks: dict[int, Task] = {}
    for b in bindings(mod["main_int"]):
        if not (isinstance(b.value, relax.Call) and op_name(b.value) == "relax.call_tir"):
            continue
        func = mod[b.value.args[0]]
        if "qcompiler.schedule" not in func.attrs:
            continue
        rule = rules.get(str(func.attrs["qcompiler.schedule"]))
        if rule is None:
            continue
        kernel_attrs = json.loads(str(func.attrs["qcompiler.attrs"]))
        # (a packed kernel records its weights' shape; a rule that packs nothing has them)
        w_shape = tuple(kernel_attrs.get("w_shape", func.params[1].shape))
        w_shape = tuple(int(d) for d in w_shape)
        attrs = {k: v for k, v in kernel_attrs.items() if k not in PACKED_KEYS}
        x = func.params[0]
        x_shape = tuple(int(d) for d in x.shape)
        op = str(func.attrs["qcompiler.op"])
        operands = [_operand(a) for a in list(b.value.args[1].fields)[1:]]
        shifts = getattr(rule, "shift_kind", shift_kind)(operands[3])
        task = Task(_describe(op, x_shape, w_shape, attrs), rule, op, x_shape,
                    str(x.dtype), w_shape, attrs, operands, shifts, kernel_attrs=kernel_attrs)
        task = tasks.setdefault(tvm_ffi.structural_hash(task.workload), task)
        task.kernels.append(b.value.args[0])
    return list(tasks.values())


def with_kernels(mod: tvm.IRModule, task: Task, func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """`mod` with every kernel of `task` replaced by `func` (same operands; each kernel keeps
    its symbol)."""
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv in task.kernels:
        out.update_func(gv, func.with_attr("global_symbol", mod[gv].attrs["global_symbol"]))
    return out
