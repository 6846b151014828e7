"""Compiling the runtime-free library with the target's toolchain: the C driver and the
weights into objects, then `lib<prefix>.a`, `lib<prefix>.so` and the example runner.

The compiler is the target's (`Target.cc`: the system `cc` natively, `python -m ziglang cc`
for cross builds, which also brings the archiver); a missing tool is one error that names
the install line.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from qcompiler.errors import TargetError
from qcompiler.targets.target import Target

RUNNER = Path(__file__).parent / "c" / "run_model.c"
CFLAGS = ["-O2", "-fPIC", "-std=c11", "-ffp-contract=off"]


def _zig_binary(cmd: list[str]) -> list[str]:
    """`python -m ziglang ARGS` as the zig binary it execs (`ziglang/__main__.py`), without
    an interpreter start per step (~0.1 s each, seven steps a library)."""
    if cmd[:3] != [sys.executable, "-m", "ziglang"]:
        return cmd
    spec = importlib.util.find_spec("ziglang")
    zig = Path(spec.origin).parent / "zig" if spec and spec.origin else None
    return [str(zig), *cmd[3:]] if zig is not None and zig.is_file() else cmd


def _run(cmd: list[str], what: str, hint: str, cwd: Path) -> None:
    cmd = _zig_binary(cmd)
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800,
                             check=False)
    except FileNotFoundError:
        raise TargetError(f"{what}: {cmd[0]} not found; install it: {hint}") from None
    if res.returncode != 0:
        msg = (res.stderr.strip() or res.stdout.strip()).splitlines()
        if "No module named ziglang" in res.stderr:
            raise TargetError(f"{what}: the zig cross compiler is missing; install it: {hint}")
        raise TargetError(f"{what} failed: {msg[-1] if msg else res.returncode}")


def _objcopy(hint: str) -> str:
    """llvm-objcopy reads every target's objects; GNU objcopy the host's."""
    for tool in ("llvm-objcopy", "objcopy"):
        if shutil.which(tool):
            return tool
    raise TargetError(f"making the library's symbols local: objcopy not found; install it: "
                      f"apt-get install llvm (or binutils); {hint}")


def compile_library(target: Target, folder: Path, prefix: str, exports: list[str],
                    cflags: tuple[str, ...] = ()) -> None:
    """In `folder`, which holds `<prefix>.c`, `<prefix>.h`, `weights.S`, `weights.bin` and
    `kernels.o`: build `lib<prefix>.a`, `lib<prefix>.so` and `run_model` (statically linked
    for a target that runs under emulation).

    Driver, weights and kernels become one relocatable object whose only global symbols are
    `exports`: the kernels' `__tvm_ffi_*`, the host hooks and the weights are local, in the
    archive as in the shared library, so several models link into one program. `cflags`:
    extra flags for the driver, the library and the runner (tests: sanitizers)."""
    cc = list(target.cc)
    hint = target.install_hint
    _run([*cc, *CFLAGS, *cflags, "-c", f"{prefix}.c", "-o", "driver.o"], "compiling the C driver",
         hint, folder)
    _run([*cc, "-c", "weights.S", "-o", "weights.o"], "assembling the weights", hint, folder)
    _run([*cc, "-r", "-nostdlib", "-o", "joined.o", "driver.o", "weights.o", "kernels.o"],
         "joining the library's objects", hint, folder)
    (folder / "exports.txt").write_text("".join(f"{s}\n" for s in exports))
    _run([_objcopy(hint), "--keep-global-symbols=exports.txt", "joined.o", f"{prefix}.o"],
         "making the library's symbols local", hint, folder)
    ar = [*cc[:cc.index("cc")], "ar"] if "ziglang" in cc else ["ar"]
    _run([*ar, "rcs", f"lib{prefix}.a", f"{prefix}.o"], "archiving", hint, folder)
    _run([*cc, *cflags, "-shared", "-o", f"lib{prefix}.so", f"{prefix}.o", "-lm", "-lpthread"],
         "linking", hint, folder)
    shutil.copy(RUNNER, folder / "run_model.c")
    static = ["-static"] if not target.runs_natively else []
    _run([*cc, "-O2", "-std=c11", *cflags, *static, f"-DMODEL={prefix}", "-I.", "run_model.c",
          f"lib{prefix}.a", "-lm", "-lpthread", "-o", "run_model"],
         "building the example runner", hint, folder)
