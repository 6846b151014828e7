"""The static memory plan of the runtime-free library: the kernels in call order and where
every tensor lives.

Activations get fixed offsets in one caller-provided workspace, chosen by liveness (`_place`:
greedy by size over the known lifetimes).
A kernel's scratch (what its generated code allocates, `kernel_scratch`) is one more tensor of
that plan, live during its call only, so it reuses the bytes of tensors that are dead by then.
Only what the tasks of a parallel loop allocate on other threads is kept per thread. The
weights are one aligned constant blob. Offsets are multiples of ALIGN.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import tvm
from tvm import relax

from qcompiler.errors import TargetError
from qcompiler.relax_access import bindings, const_array, is_const, op_name, output_exprs, shape_of

if TYPE_CHECKING:
    from qcompiler.backend.kernel_scratch import Scratch

ALIGN = 128  # bytes: HVX vectors; also a cache line multiple on x86 and ARM


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "input", "output", "const", "act"
    offset: int = 0
    const: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


COPY = "<copy>"  # a plain memcpy step in the driver, not a kernel


@dataclass
class KernelCall:
    kernel: str
    args: list[Tensor]
    scratch: Tensor | None = None  # the calling thread's scratch during this call


@dataclass
class Plan:
    """Kernels in call order and where every tensor lives."""

    calls: list[KernelCall] = field(default_factory=list)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    consts: list[Tensor] = field(default_factory=list)
    act_bytes: int = 0  # the arena: activations and the calling thread's kernel scratch
    scratch_bytes: int = 0  # each further thread's scratch (its parallel tasks')
    live_bytes: int = 0  # the most bytes of tensors live at once, the network's in and out too
    boundary_scratch: int = 0  # the float entry's quantize and dequantize kernels' (c_source)


def plan(lowered: tvm.IRModule, scratch: dict[str, Scratch], func_name: str = "main_int"
         ) -> Plan:
    """Walk the legalized integer graph; place activations and each call's scratch by
    liveness (`_place`). `scratch`: every kernel's, measured on its built code."""
    func = lowered[func_name]
    p = Plan()
    env: dict = {}
    for i, param in enumerate(func.params):
        t = Tensor(f"in{i}", shape_of(param), str(param.ty.dtype), "input")
        env[param] = t
        p.inputs.append(t)
    bound = list(bindings(func))
    out_vars = output_exprs(func)
    # Resolve output aliases (gv = lv) so the producing kernel writes the caller's buffer;
    # a tuple item (split) is the item of its tuple's tensors.
    alias = {b.var: b.value for b in bound if isinstance(b.value, relax.Var)}
    item = {b.var: b.value for b in bound if isinstance(b.value, relax.TupleGetItem)}

    def resolve(v: relax.Expr) -> relax.Expr:
        while v in alias:
            v = alias[v]
        return v

    def root(v: relax.Expr) -> relax.Expr:  # the binding whose kernel wrote v
        v = resolve(v)
        return root(item[v].tuple_value) if v in item else v

    def lookup(v: relax.Expr) -> Tensor | list[Tensor]:
        v = resolve(v)
        return lookup(item[v].tuple_value)[item[v].index] if v in item else env[v]

    out_of = {resolve(v): i for i, v in enumerate(out_vars)}
    for i, v in enumerate(out_vars):
        p.outputs.append(Tensor(f"out{i}", shape_of(v), str(v.ty.dtype), "output"))
    last_use: dict = {}
    for idx, b in enumerate(bound):
        if op_name(b.value) == "relax.call_tir":
            for a in b.value.args[1].fields:
                if isinstance(a, relax.Var):
                    last_use[root(a)] = idx
    for v in out_vars:  # an output copied at the end stays live until then
        last_use[root(v)] = len(bound)
    live: list[tuple[int, object]] = []  # (bytes, var) of the intermediates live now
    spans: list[tuple[Tensor, int, object]] = []  # (tensor, first call, var), for placing
    n_const = done_out = 0

    for idx, b in enumerate(bound):
        if isinstance(b.value, (relax.Var, relax.TupleGetItem, relax.Tuple)):
            continue
        if op_name(b.value) != "relax.call_tir":
            raise TargetError(f"binding {b.var.name}: {op_name(b.value)} has no kernel in the "
                              "standalone library")
        kernel = str(b.value.args[0].name_hint)
        need = scratch[kernel]
        p.scratch_bytes = max(p.scratch_bytes, need.task)
        args = []
        for a in b.value.args[1].fields:
            if is_const(a):
                arr = const_array(a)
                t = Tensor(f"c{n_const}", arr.shape, str(arr.dtype), "const", const=arr)
                n_const += 1
                p.consts.append(t)
                args.append(t)
            else:
                args.append(lookup(a))
        var = b.var
        live = [x for x in live if last_use.get(x[1], -1) >= idx]  # free what died
        if var in out_of:
            outs = [p.outputs[out_of[var]]]
        else:
            fields = var.ty.fields if isinstance(var.ty, relax.TupleType) else [var.ty]
            outs = [Tensor(f"t{idx}_{k}", tuple(int(d) for d in f.shape), str(f.dtype), "act")
                    for k, f in enumerate(fields)]
            for t in outs:
                live.append((align(t.nbytes), var))
                spans.append((t, idx, var))
        env[var] = outs if isinstance(var.ty, relax.TupleType) else outs[0]
        done_out += sum(t.nbytes for t in outs if t.kind == "output")
        p.live_bytes = max(p.live_bytes, done_out + sum(
            t.nbytes for v, t in zip(func.params, p.inputs) if last_use.get(v, -1) >= idx) + sum(
            size for size, _ in live))
        work = None
        if need.caller:
            work = Tensor(f"s{idx}", (need.caller,), "uint8", "scratch")
            last_use[work.name] = idx  # freed at the next call
            spans.append((work, idx, work.name))
        p.calls.append(KernelCall(kernel, [*args, *outs], work))
    # An output no kernel writes (the graph returns an input, or one tensor twice) is copied.
    for i, v in enumerate(out_vars):
        src = lookup(v)
        if src is not p.outputs[i]:
            p.calls.append(KernelCall(COPY, [src, p.outputs[i]]))
    p.act_bytes = _place([(t, first, last_use.get(var, first)) for t, first, var in spans])
    return p


def _place(spans: list[tuple[Tensor, int, int]]) -> int:
    """Offsets for tensors live from call `first` to call `last`: greedy by size (largest
    first, each at the lowest offset clear of the placed tensors whose lives overlap it), as
    TFLite's arena planner does; the plan is known whole, so it need not be first fit in
    call order. Returns the arena's bytes."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, bytes, first, last)
    for t, first, last in sorted(spans, key=lambda x: (-align(x[0].nbytes), x[1])):
        need, offset = align(t.nbytes), 0
        for off, size, f, la in sorted(x for x in placed if x[2] <= last and first <= x[3]):
            if offset + need <= off:
                break
            offset = max(offset, off + size)
        t.offset = offset
        placed.append((offset, need, first, last))
    return max((off + size for off, size, _, _ in placed), default=0)


def weights_blob(p: Plan) -> bytes:
    """All constants in one aligned blob; each constant's offset is recorded on it."""
    blob = bytearray()
    for t in p.consts:
        t.offset = len(blob)
        blob += np.ascontiguousarray(t.const).tobytes()
        blob += bytes(align(len(blob)) - len(blob))
    return bytes(blob)


def _boundary_calls(lowered: tvm.IRModule) -> list[tuple[str, str, tuple[int, ...]]]:
    """(kernel, "quantize" or "dequantize", shape) of the float entry, in order."""
    out = []
    for b in bindings(lowered["main"]):
        if op_name(b.value) == "relax.call_tir":
            gv = b.value.args[0]
            kind = str(lowered[gv].attrs["qcompiler.op"])
            if kind in ("quantize", "dequantize"):
                out.append((gv.name_hint, kind, shape_of(b.var)))
    return out


def kernel_names(lowered: tvm.IRModule) -> list[str]:
    """The kernels the library calls: the integer network's and the float entry's."""
    return sorted({str(b.value.args[0].name_hint) for b in bindings(lowered["main_int"])
                   if op_name(b.value) == "relax.call_tir"}
                  | {k for k, _, _ in _boundary_calls(lowered)})


def float_boundary(lowered: tvm.IRModule, p: Plan, scratch: dict[str, Scratch]
                   ) -> list[tuple[str, Tensor, Tensor]]:
    """(kernel, from, to) of the float entry's quantize and dequantize calls, in order. They
    run outside the integer network, when the arena is free (c_source places their scratch
    there)."""
    out = []
    n_in = n_out = 0
    for kernel, kind, shape in _boundary_calls(lowered):
        if kind == "quantize":
            q = p.inputs[n_in]
            out.append((kernel, Tensor(f"in{n_in}", shape, "float32", "input"),
                        Tensor(f"q{q.name}", shape, q.dtype, "act")))
            n_in += 1
        else:
            q = p.outputs[n_out]
            out.append((kernel, Tensor(f"q{q.name}", shape, q.dtype, "act"),
                        Tensor(f"out{n_out}", shape, "float32", "output")))
            n_out += 1
        p.boundary_scratch = max(p.boundary_scratch, align(scratch[kernel].caller))
        p.scratch_bytes = max(p.scratch_bytes, scratch[kernel].task)
    return out
