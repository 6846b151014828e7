"""The runtime-free C library: `libNAME.a`, `libNAME.so`, `NAME.h` for any target.

The integer kernels come from TVM's codegen (one object file, one function per kernel, TVM's
packed calling convention); the driver that calls them in order is generated C with a static
memory plan: every intermediate tensor has a fixed offset in one caller-provided workspace,
chosen by liveness, and the weights are constant arrays. The library provides what TVM's
objects expect from a host (the error setter, a stack allocator for kernel scratch, a thread
pool for parallel loops), so it needs nothing but libc, libm and pthreads: no TVM runtime, no
Python, no malloc.

    quantized graph -> legalize -> memory_plan -> c_source (+ kernels.o) -> toolchain
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import tvm
from tvm import relax

from qcompiler.backend.c_header import generate_header
from qcompiler.backend.c_source import (
    THREAD_STATE_BYTES,
    WEIGHTS_ASM,
    exported_symbols,
    generate_c,
)
from qcompiler.backend.kernel_build import KernelBuild
from qcompiler.backend.kernel_scratch import measured_build
from qcompiler.backend.memory_plan import align, float_boundary, kernel_names, plan, weights_blob
from qcompiler.backend.toolchain import compile_library
from qcompiler.graph_meta import graph_meta
from qcompiler.pipeline import Compiled

SOURCES = ("kernels.o", "weights.bin", "weights.S")  # with <prefix>.c and <prefix>.h


def build_standalone(compiled: Compiled, folder: Path, prefix: str,
                     sources: Path | None = None, built: KernelBuild | None = None) -> dict:
    """Write lib<prefix>.a, lib<prefix>.so, <prefix>.h and the example runner into `folder`;
    the library's sources too into `sources` if given (to rebuild it with other flags).
    `built`: model.so's kernels, whose object code serves if they are exactly these."""
    lowered = relax.transform.LegalizeOps()(compiled.quantized)
    names = kernel_names(lowered)
    kernels = tvm.IRModule({n: lowered[n].with_attr("global_symbol", n) for n in names})
    if built is None or not built.serves(kernels):
        with tvm.transform.PassContext(opt_level=3):
            built = KernelBuild(kernels, *measured_build(kernels, compiled.tvm_target))
    p = plan(lowered, built.scratch)  # each call's scratch as its built code allocates it
    boundary = float_boundary(lowered, p, built.scratch)
    blob = weights_blob(p)  # places the constants: before the code that points at them
    code, workspace = generate_c(p, boundary, prefix)  # places the boundary tensors
    meta = graph_meta(compiled.quantized)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        built.write_object(tmp / "kernels.o")
        (tmp / "weights.bin").write_bytes(blob)
        (tmp / "weights.S").write_text(WEIGHTS_ASM)
        (tmp / f"{prefix}.c").write_text(code)
        (tmp / f"{prefix}.h").write_text(generate_header(p, meta, prefix, workspace))
        compile_library(compiled.target, tmp, prefix, exported_symbols(prefix))
        for name in (f"lib{prefix}.a", f"lib{prefix}.so", f"{prefix}.h", "run_model"):
            shutil.copy(tmp / name, folder / name)
        for name in (*SOURCES, f"{prefix}.c", f"{prefix}.h") if sources else ():
            shutil.copy(tmp / name, sources / name)
    return {"name": prefix, "static": f"lib{prefix}.a", "shared": f"lib{prefix}.so",
            "header": f"{prefix}.h", "runner": "run_model", "workspace_bytes": workspace,
            "live_activation_bytes": p.live_bytes, "arena_bytes": p.act_bytes,
            "thread_bytes": THREAD_STATE_BYTES + align(p.scratch_bytes), "kernels": len(names),
            "weights_bytes": sum(t.nbytes for t in p.consts)}
