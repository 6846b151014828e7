"""qcompiler: ONNX CNN -> per-channel int8 -> integer library, on Apache TVM.

    qcompiler.compile("model.onnx", calib="calib.npz", out="build/")  -> CompiledModel
    qcompiler.load("build/")                                            -> CompiledModel
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["compile", "load"]


def compile(model: str | Path, calib: str | Path | None, out: str | Path,  # noqa: A001
            **options: object):  # -> CompiledModel
    """Compile an ONNX model for a target and write OUT/model.so and OUT/model.json.
    `calib` may be None for a QDQ model, which carries its own scales. (The compile's own
    result, the quantized graph, comes with `qcompiler.api.compile_to_dir`.)"""
    from qcompiler.api import compile_to_dir

    return compile_to_dir(Path(model), None if calib is None else Path(calib), Path(out),
                          **options).lib


def load(path: str | Path, threads: int | None = None):  # -> CompiledModel
    """A compiled model folder; `threads`: worker threads of the TVM module (default: TVM's)."""
    from qcompiler.backend.runtime import load as _load

    return _load(path, threads=threads)
