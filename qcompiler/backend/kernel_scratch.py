"""What each kernel asks the workspace allocator for, read from the code TVM generates.

After lowering (`LowerTVMBuiltin`), every buffer a kernel keeps off the stack is a
`TVMBackendAllocWorkspace` call whose size is a constant (static shapes), freed in reverse
order. Walking that code in program order gives, per kernel, the most it holds at once on
the calling thread (`caller`: its own buffers plus what the calling thread's share of a
parallel loop allocates on top of them) and the most one task of a parallel loop holds
(`task`: what every other worker thread needs). The memory plan gives each call exactly
that, so the figure in the summary is what the library really uses.

The figures are taken while the kernels are built: `measured_build` runs TVM's own build
with a pipeline that adds one read-only pass after TVM's host finalization, so nothing is
lowered twice.
"""
from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import tirx

from qcompiler.backend.memory_plan import align
from qcompiler.errors import TargetError

PIPELINE = "qcompiler_measured"


@dataclass(frozen=True)
class Scratch:
    caller: int = 0  # bytes on the calling thread, at the most
    task: int = 0  # bytes of one parallel task on another thread, at the most


_FIELDS = ("a", "b", "value", "condition", "true_value", "false_value")


def _calls(node: object, name: str) -> list[tvm.ir.Call]:
    """The calls of intrinsic `name` in an expression (the statement fields walked here hold
    TVM's allocation and free calls: a DeclBuffer's data, an if's or a bind's expression)."""
    found, stack = [], [node]
    while stack:
        x = stack.pop()
        if isinstance(x, tvm.ir.Call):
            if isinstance(x.op, tvm.ir.Op) and x.op.name == name:
                found.append(x)
            stack.extend(x.args)
        elif isinstance(x, tvm.ir.expr.Expr):
            stack.extend(v for f in _FIELDS if isinstance(v := getattr(x, f, None), tvm.ir.expr.Expr))
    return found


class _Walk:
    """Program order: + at an allocation, - at its free; a parallel loop's body is walked
    from zero (one task) and sits on top of the caller's bytes for the calling thread."""

    def __init__(self, kernel: str) -> None:
        self.kernel = kernel
        self.size: list = []  # (the allocation's pointer var, aligned bytes); a Var's == is IR
        self.task = 0

    def alloc(self, s: tirx.DeclBuffer) -> int:
        data = getattr(s, "data", None)
        if data is None or not _calls(data, "tirx.TVMBackendAllocWorkspace"):
            return 0
        nbytes = _calls(data, "tirx.TVMBackendAllocWorkspace")[0].args[2]
        if not isinstance(nbytes, tirx.IntImm):
            raise TargetError(f"kernel {self.kernel}: scratch of a size known only at run "
                              f"time ({nbytes}); the C library needs static sizes")
        self.size.append((s.buffer.data, align(int(nbytes.value))))  # aligned starts
        return self.size[-1][1]

    def freed(self, node: object) -> int:
        return sum(n for c in _calls(node, "tirx.TVMBackendFreeWorkspace")
                   for var, n in self.size if var.same_as(c.args[2]))

    def stmt(self, s: tirx.Stmt, cur: int) -> tuple[int, int]:
        """(bytes held after s, the most held during s)."""
        if isinstance(s, tirx.SeqStmt):
            peak = cur
            for c in s.seq:
                cur, p = self.stmt(c, cur)
                peak = max(peak, p)
            return cur, peak
        if isinstance(s, tirx.For) and s.kind == tirx.ForKind.PARALLEL:
            _, body = self.stmt(s.body, 0)
            self.task = max(self.task, body)
            return cur, cur + body
        if isinstance(s, tirx.IfThenElse):
            cur -= self.freed(s.condition)
            a = self.stmt(s.then_case, cur)
            b = self.stmt(s.else_case, cur) if s.else_case is not None else (cur, cur)
            return max(a[0], b[0]), max(a[1], b[1])
        if isinstance(s, tirx.DeclBuffer):
            cur += self.alloc(s)
        for name in ("value", "condition"):  # the statement's own expressions
            if isinstance(getattr(s, name, None), tvm.ir.expr.Expr):
                cur -= self.freed(getattr(s, name))
        body = getattr(s, "body", None)
        return self.stmt(body, cur) if isinstance(body, tirx.Stmt) else (cur, cur)


def scratch_of(func: tirx.PrimFunc, kernel: str) -> Scratch:
    """The scratch of one lowered (host-finalized) kernel."""
    walk = _Walk(kernel)
    _, peak = walk.stmt(func.body, 0)
    return Scratch(peak, walk.task)


_measured: list[dict[str, Scratch]] = []  # the build in progress records here


def _pipeline(**kwargs: object) -> tuple:
    run, finalize_host, finalize_device = tirx.get_tir_pipeline("s_tir", **kwargs)

    def measure_after_finalize() -> tvm.transform.Pass:
        @tvm.transform.module_pass(opt_level=0, name="qcompiler.MeasureScratch")
        def measure(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
            if _measured:
                for gv, f in mod.functions.items():
                    if isinstance(f, tirx.PrimFunc):
                        _measured[-1][gv.name_hint] = scratch_of(f, gv.name_hint)
            return mod
        return tvm.transform.Sequential([finalize_host(), measure])

    return run, measure_after_finalize, finalize_device


tirx.register_tir_pipeline(PIPELINE, _pipeline)


def measured_build(tir: tvm.IRModule, target: tvm.target.Target
                   ) -> tuple[tvm.runtime.Module, dict[str, Scratch]]:
    """`tvm.tirx.build(tir, target)` (TVM's default pipeline for CPU targets), and every
    kernel's scratch as the built code asks for it."""
    _measured.append({})
    try:
        lib = tirx.build(tir, target=target, pipeline=PIPELINE)
        return lib, _measured[-1]
    finally:
        _measured.pop()
