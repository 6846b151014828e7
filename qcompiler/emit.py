"""Write the deployable artifacts: `model.so` (TVM runtime module) and `model.json`.

Writes are atomic: each file goes to a temporary name in the output folder and is renamed
into place only when it is complete; a failed compile leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import tvm

from qcompiler.errors import QCompileError
from qcompiler.passes.quantize import graph_meta
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


def _atomic_write(path: Path, write: callable) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(compiled: Compiled) -> tvm.runtime.Module:
    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(compiled.quantized, compiled.tvm_target)


def manifest(compiled: Compiled) -> dict:
    meta = graph_meta(compiled.quantized)
    return {"format": "qcompiler-tvm-vm/1", "target": compiled.target_name,
            "tvm_target": str(compiled.tvm_target), "library": "model.so",
            "inputs": meta["inputs"], "outputs": meta["outputs"], "layers": meta["layers"]}


def emit(compiled: Compiled, exe: tvm.runtime.Module, out: Path) -> dict:
    prepare_out_dir(out)
    info = manifest(compiled)
    _atomic_write(out / "model.so", lambda p: exe.export_library(p))
    _atomic_write(out / "model.json",
                  lambda p: Path(p).write_text(json.dumps(info, indent=2) + "\n"))
    return info
