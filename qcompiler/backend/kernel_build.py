"""One LLVM build of a graph's kernels, shared by `model.so` and the runtime-free C library.

`tvm.compile` turns the graph's Relax functions into VM bytecode and builds every PrimFunc
into one LLVM module; the C library calls the same PrimFuncs under the same symbols. Building
and emitting machine code is most of a compile's time, so `build_vm` does what `tvm.compile`
does but keeps the kernels it built (`VMBuild.kernels`): the C library takes their object
code when it needs exactly those functions, and `export_vm` links `model.so` from the same
object code instead of emitting it a second time. The files are byte for byte what
`tvm.compile`, `export_library` and a build of the library's own kernels write
(tests/backend/test_kernel_build.py).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax import _ffi_api as relax_api
from tvm.relax import vm_build
from tvm.runtime import _ffi_api as runtime_api
from tvm.support import cc

from qcompiler.backend.kernel_scratch import Scratch, measured_build


class KernelBuild:
    """PrimFuncs and their LLVM module; the object code is emitted on first use, once."""

    def __init__(self, tir: tvm.IRModule, lib: tvm.runtime.Module,
                 scratch: dict[str, Scratch]) -> None:
        self.tir = tir
        self.lib = lib
        self.scratch = scratch  # per kernel, as its built code allocates it
        self._object: bytes | None = None

    def serves(self, kernels: tvm.IRModule) -> bool:
        """Whether `kernels` is exactly what was built (same functions, attributes, symbols)."""
        return bool(tvm_ffi.structural_equal(kernels, self.tir))

    def write_object(self, path: Path) -> None:
        if self._object is None:
            with tempfile.TemporaryDirectory() as tmp:
                self.lib.write_to_file(os.path.join(tmp, "kernels.o"))
                self._object = Path(tmp, "kernels.o").read_bytes()
        path.write_bytes(self._object)


class VMBuild(vm_build.VMExecutable):
    """What `tvm.compile` returns, with the kernel build it links (None: no PrimFunc)."""

    def __init__(self, mod: tvm.runtime.Module, kernels: KernelBuild | None) -> None:
        super().__init__(mod)
        self.kernels = kernels


def build_vm(mod: tvm.IRModule, target: tvm.target.Target) -> VMBuild:
    """`tvm.compile(mod, target)` (relax.build's default pipelines) under opt_level 3."""
    with tvm.transform.PassContext(opt_level=3):
        with target:
            mod = relax.get_pipeline("default")(mod)
        attrs = dict(mod.attrs) if mod.attrs else {}
        builder = relax.ExecBuilder()
        tir = vm_build._filter_tir(vm_build._vmcodegen(builder, mod, "bytecode"))
        kernels = None
        if tir is not None and len(tir.get_global_vars()) > 0:
            tir = vm_build._auto_attach_system_lib_prefix(tir, target, None)
            kernels = KernelBuild(tir, *measured_build(tir, target))
        linked = relax_api.VMLink(builder, target, kernels.lib if kernels else None,
                                  list(attrs.get("external_mods", [])),
                                  dict(attrs.get("const_name_to_constant", {})))
    return VMBuild(linked, kernels)


def export_vm(exe: tvm.runtime.Executable, path: Path) -> None:
    """`exe.export_library(path)`; a VMBuild's kernels go in as the object code already
    emitted for the C library (export_library would emit it again)."""
    kernels = exe.kernels if isinstance(exe, VMBuild) else None
    dso = exe.mod._collect_dso_modules()
    if kernels is None or len(dso) != 1 or not dso[0].same_as(kernels.lib) \
            or kernels.lib.kind != "llvm" or kernels.lib.get_function("__tvm_is_system_module")():
        exe.export_library(str(path))
        return
    with tempfile.TemporaryDirectory() as tmp:  # export_library's steps for one LLVM module
        objects = [os.path.join(tmp, "lib0.o"), os.path.join(tmp, "devc.o")]
        kernels.write_object(Path(objects[0]))
        llvm_target = kernels.lib.get_function("_get_target_string")()
        prefix = kernels.lib.get_function("__tvm_get_system_lib_prefix")() or ""
        runtime_api.ModulePackImportsToLLVM(exe.mod, False, llvm_target, prefix).write_to_file(
            objects[1])
        cc.create_shared(str(path), objects)


class CodegenError(RuntimeError):
    """LLVM rejected the code a target rule generated for one kernel (a bug in the rule)."""


def failing_kernels(mod: tvm.IRModule, target: tvm.target.Target) -> dict[str, CodegenError]:
    """The scheduled kernels of `mod` whose code does not build, each built alone: after a
    failed build of the whole module, which kernel to put back on its portable form."""
    failing = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs is None \
                or "qcompiler.schedule" not in func.attrs:
            continue
        symbol = str(func.attrs.get("global_symbol", gv.name_hint))
        try:
            with tvm.transform.PassContext(opt_level=3):
                tvm.tirx.build(tvm.IRModule({symbol: func}), target=target)
        except Exception as exc:  # noqa: BLE001 - whatever TVM or LLVM raise: this kernel
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            failing[symbol] = CodegenError(" ".join(lines[:2])[:300] or type(exc).__name__)
    return failing
