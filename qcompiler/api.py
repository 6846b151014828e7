"""The Python API behind `qcompiler.compile` and the CLI."""
from __future__ import annotations

from pathlib import Path

from qcompiler.backend.emit import build, check_out_dir, emit
from qcompiler.backend.runtime import CompiledModel
from qcompiler.config import CompileConfig
from qcompiler.frontend.onnx_import import graph_inputs, load_onnx
from qcompiler.numerics.calibrate import load_calibration
from qcompiler.pipeline import Compiled, compile_model
from qcompiler.targets import check_toolchain, get_target


def compile_to_dir(model_path: Path, calib_path: Path | None, out: Path, progress: bool = False,
                   **options: object) -> CompiledModel:
    compiled = compile_only(model_path, calib_path, out, progress, **options)
    emit(compiled, build(compiled), out)
    return CompiledModel(out)


def compile_only(model_path: Path, calib_path: Path | None, out: Path, progress: bool = False,
                 **options: object) -> Compiled:
    config = CompileConfig(**options)  # rejects bad options before any work
    check_toolchain(get_target(config.target))
    model = load_onnx(model_path)
    check_out_dir(out)
    inputs = graph_inputs(model, config.batch)
    calib = None if calib_path is None else \
        load_calibration(calib_path, inputs, config.calib_limit)  # optional for a QDQ model
    return compile_model(model, calib, config, progress)
