"""The static memory plan of the runtime-free library: the kernels in call order and where
every tensor lives.

Activations get fixed offsets in one caller-provided workspace, chosen by liveness (first fit);
kernel scratch comes after them; the weights are one aligned constant blob. Offsets are
multiples of ALIGN.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from qcompiler.errors import TargetError
from qcompiler.relax_access import bindings, const_array, is_const, op_name, output_exprs, shape_of

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


@dataclass
class Plan:
    """Kernels in call order and where every tensor lives."""

    calls: list[KernelCall] = field(default_factory=list)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    consts: list[Tensor] = field(default_factory=list)
    act_bytes: int = 0
    scratch_bytes: int = 0


SCRATCH_RESERVE = 4096  # small temporaries lowering adds (seen: 16-byte vector spills on ARM)


def _kernel_scratch(func: tvm.tirx.PrimFunc) -> int:
    """What one kernel may ask the workspace allocator for: all its intermediate buffers at
    once, each aligned, twice over, plus a reserve for the temporaries TVM's lowering adds.
    Generous on purpose: running out is reported as a kernel error, never a wild write."""
    total = 0
    stack = [func.body]
    while stack:
        node = stack.pop()
        for buf in getattr(node, "alloc_buffers", []) or []:
            n = int(np.prod([int(d) for d in buf.shape], dtype=np.int64))
            total += align(n * tvm.runtime.DataType(str(buf.dtype)).bits // 8 + 64)
        for name in ("block", "body"):
            child = getattr(node, name, None)
            if child is not None:
                stack.append(child)
        if isinstance(node, tvm.tirx.SeqStmt):
            stack.extend(node.seq)
    return 2 * total + SCRATCH_RESERVE


def plan(lowered: tvm.IRModule, func_name: str = "main_int") -> Plan:
    """Walk the legalized integer graph; place activations by liveness (first fit)."""
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
    live: list[tuple[int, int, object]] = []  # (offset, size, var)
    n_const = 0

    def place(t: Tensor, var: object) -> None:
        """First fit among the live tensors."""
        need, offset = align(t.nbytes), 0
        for off, size, _ in sorted(live, key=lambda x: x[0]):
            if offset + need <= off:
                break
            offset = max(offset, off + size)
        t.offset = offset
        live.append((offset, need, var))
        p.act_bytes = max(p.act_bytes, offset + need)

    for idx, b in enumerate(bound):
        if isinstance(b.value, (relax.Var, relax.TupleGetItem, relax.Tuple)):
            continue
        if op_name(b.value) != "relax.call_tir":
            raise TargetError(f"binding {b.var.name}: {op_name(b.value)} has no kernel in the "
                              "standalone library")
        prim = lowered[b.value.args[0]]
        p.scratch_bytes = max(p.scratch_bytes, _kernel_scratch(prim))
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
        if var in out_of:
            outs = [p.outputs[out_of[var]]]
        else:
            fields = var.ty.fields if isinstance(var.ty, relax.TupleType) else [var.ty]
            outs = [Tensor(f"t{idx}_{k}", tuple(int(d) for d in f.shape), str(f.dtype), "act")
                    for k, f in enumerate(fields)]
            live = [x for x in live if last_use.get(x[2], -1) >= idx]  # free what died
            for t in outs:
                place(t, var)
        env[var] = outs if isinstance(var.ty, relax.TupleType) else outs[0]
        p.calls.append(KernelCall(str(b.value.args[0].name_hint), [*args, *outs]))
    # An output no kernel writes (the graph returns an input, or one tensor twice) is copied.
    for i, v in enumerate(out_vars):
        src = lookup(v)
        if src is not p.outputs[i]:
            p.calls.append(KernelCall(COPY, [src, p.outputs[i]]))
    return p


def weights_blob(p: Plan) -> bytes:
    """All constants in one aligned blob; each constant's offset is recorded on it."""
    blob = bytearray()
    for t in p.consts:
        t.offset = len(blob)
        blob += np.ascontiguousarray(t.const).tobytes()
        blob += bytes(align(len(blob)) - len(blob))
    return bytes(blob)


def float_boundary(lowered: tvm.IRModule, p: Plan) -> list[tuple[str, Tensor, Tensor]]:
    """(kernel, from, to) of the float entry's quantize and dequantize calls, in order."""
    out = []
    n_in = n_out = 0
    for b in bindings(lowered["main"]):
        if op_name(b.value) != "relax.call_tir":
            continue
        gv = b.value.args[0]
        kind = str(lowered[gv].attrs["qcompiler.op"])
        shape = shape_of(b.var)
        if kind == "quantize":
            q = p.inputs[n_in]
            out.append((gv.name_hint, Tensor(f"in{n_in}", shape, "float32", "input"),
                        Tensor(f"q{q.name}", shape, q.dtype, "act")))
            n_in += 1
        elif kind == "dequantize":
            q = p.outputs[n_out]
            out.append((gv.name_hint, Tensor(f"q{q.name}", shape, q.dtype, "act"),
                        Tensor(f"out{n_out}", shape, "float32", "output")))
            n_out += 1
    return out
