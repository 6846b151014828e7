"""Write the deployable artifacts: `model.so` (TVM runtime module), the runtime-free C library
(`standalone.py`) and the manifest `model.json`.

Writes are atomic: each file goes to a temporary name in the output folder and is renamed
into place only when it is complete; a failed compile leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import tvm

from qcompiler.backend.kernel_build import build_vm, export_vm
from qcompiler.backend.standalone import build_standalone
from qcompiler.errors import QCompileError
from qcompiler.graph_meta import graph_meta
from qcompiler.pipeline import Compiled


def check_out_dir(out: Path) -> None:
    """Fail early, before any work and without creating anything, if OUT cannot be written."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise QCompileError(f"{out}: cannot create output folder ({probe} is a file)")
    if not os.access(probe, os.W_OK):
        raise QCompileError(f"{out}: output folder is not writable")


def prepare_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QCompileError(f"{out}: cannot create output folder ({exc.strerror})") from None
    if not out.is_dir() or not os.access(out, os.W_OK):
        raise QCompileError(f"{out}: output folder is not writable")


def build(compiled: Compiled) -> tvm.runtime.Executable | None:
    """The TVM runtime module (`model.so`), for targets that run on this machine; `emit`
    reuses its kernels for the C library."""
    if not compiled.target.runs_natively:
        return None
    return build_vm(compiled.quantized, compiled.tvm_target)


def manifest(compiled: Compiled, standalone: dict) -> dict:
    """model.json; `standalone` (build_standalone's) names the C library's files."""
    meta = graph_meta(compiled.quantized)
    t = compiled.target
    return {"format": "qcompiler/1", "target": t.name, "tvm_target": str(compiled.tvm_target),
            "library": "model.so" if t.runs_natively else None,
            "standalone": standalone,
            "run_prefix": list(t.run_prefix),
            "inputs": meta["inputs"], "outputs": meta["outputs"], "layers": meta["layers"]}


def emit(compiled: Compiled, exe: tvm.runtime.Executable | None, out: Path, name: str = "model",
         sources: Path | None = None) -> dict:
    """Build everything in a temporary folder next to OUT, then rename each file into place.
    `name`: the C library's (NAME.h, libNAME.a, libNAME.so); `sources`: a folder to keep its
    sources in (build_standalone)."""
    prepare_out_dir(out)
    with tempfile.TemporaryDirectory(prefix=".qcompile-", dir=out) as tmp:
        tmp = Path(tmp)
        built = getattr(exe, "kernels", None)  # build()'s, for the C library to reuse
        info = manifest(compiled, build_standalone(compiled, tmp, name, sources, built))
        if exe is not None:
            export_vm(exe, tmp / "model.so")
        (tmp / "model.json").write_text(json.dumps(info, indent=2) + "\n")
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == "model.json"):
            os.replace(f, out / f.name)  # the manifest last: it marks a complete output
    return info
