"""What each kernel asks the workspace allocator for, read from the code TVM generates.

After lowering (`LowerTVMBuiltin`), every buffer a kernel keeps off the stack is a
`TVMBackendAllocWorkspace` call whose size is a constant (static shapes), freed in reverse
order. Walking that code in program order gives, per kernel, the most it holds at once on
the calling thread (`caller`: its own buffers plus what the calling thread's share of a
parallel loop allocates on top of them) and the most one task of a parallel loop holds
(`task`: what every other worker thread needs). The memory plan gives each call exactly
that, so the figure in the summary is what the library really uses.

`measured_build` builds the kernels with TVM's own build and measures a copy lowered the
same way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import tvm
from tvm import tirx
from tvm.tirx.build import split_host_device_mods

from qcompiler.backend.memory_plan import align
from qcompiler.errors import TargetError


@dataclass(frozen=True)
class Scratch:
    caller: int = 0  # bytes on the calling thread, at the most
    task: int = 0  # bytes of one parallel task on another thread, at the most


_ALLOC = re.compile(r"(\w+) = T\.decl_buffer\(.*data=T\.TVMBackendAllocWorkspace\("
                    r"[^,]+, [^,]+, ([^,]+), ")
_CONST = re.compile(r"T\.uint64\((\d+)\)|(\d+)")
_FREE = re.compile(r"T\.TVMBackendFreeWorkspace\([^,]+, [^,]+, (\w+)\.data\)")
_PARALLEL = re.compile(r"for .* in T\.parallel\(")


def scratch_of(func: tirx.PrimFunc, kernel: str) -> Scratch:
    """The scratch of one lowered (host-finalized) kernel, read from its TVMScript text: an
    allocation and its free are one line each, a parallel loop's body is indented under it.
    (Text, not the IR objects: walking the lowered IR from Python corrupted memory that
    TVM's code generation used next; see the closing notes of the eleventh session.)"""
    caller = task = root = inside = 0
    held: dict[str, tuple[int, bool]] = {}  # buffer -> (bytes, allocated inside a loop)
    loop_indent: int | None = None  # the parallel loop being walked, if any
    for line in func.script().splitlines():
        indent = len(line) - len(line.lstrip())
        if loop_indent is not None and line.strip() and indent <= loop_indent:
            loop_indent = None  # left the loop body: a task's buffers are all freed
        if m := _ALLOC.search(line):
            size = _CONST.fullmatch(m.group(2))
            if size is None:
                raise TargetError(f"kernel {kernel}: scratch of a size known only at run "
                                  f"time ({m.group(2)}); the C library needs static sizes")
            n = align(int(size.group(1) or size.group(2)))  # each start is aligned
            held[m.group(1)] = (n, loop_indent is not None)
            if loop_indent is None:
                root += n
            else:
                inside += n
                task = max(task, inside)
            caller = max(caller, root + inside)
        elif m := _FREE.search(line):
            n, in_loop = held.pop(m.group(1), (0, False))
            if in_loop:
                inside -= n
            else:
                root -= n
        elif loop_indent is None and _PARALLEL.search(line):
            loop_indent, inside = indent, 0
    return Scratch(caller, task)


def measured_build(tir: tvm.IRModule, target: tvm.target.Target
                   ) -> tuple[tvm.runtime.Module, dict[str, Scratch]]:
    """`tvm.tirx.build(tir, target)`, and every kernel's scratch as the built code asks for
    it: measured on a deep copy lowered the same way (TVM's default pipeline for CPU targets
    and its host finalization), after the build. A Python pass inside the build, or a
    lowering sharing nodes with `tir` before it, made TVM's Hexagon code generation crash now
    and then (eleventh session's notes); the copy shares nothing."""
    lib = tirx.build(tir, target=target)
    target = tvm.target.Target(target)
    copy = tvm.ir.load_json(tvm.ir.save_json(tir))
    copy = tirx.transform.BindTarget(target.with_host(target))(copy)
    run, finalize_host, _ = tirx.get_default_tir_pipeline(target)
    host, _ = split_host_device_mods(run(copy))
    host = finalize_host()(host)
    return lib, {gv.name_hint: scratch_of(f, gv.name_hint) for gv, f in host.functions.items()
                 if isinstance(f, tirx.PrimFunc)}
