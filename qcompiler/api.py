"""The Python API behind `qcompiler.compile` and the CLI.

    prepare(model, calib, out, **options) -> Job        every check that needs no compile
    Job.compile()                         -> Compiled   the pipeline (qcompiler.pipeline)
    write_outputs(compiled, out)          -> manifest   model.so, the C library, model.json
    compile_to_dir(...)                   -> CompileResult: all three, then the loaded model
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx

from qcompiler.backend.c_name import name_from_stem
from qcompiler.backend.emit import build, check_out_dir, emit
from qcompiler.backend.kernel_build import failing_kernels
from qcompiler.backend.runtime import CompiledModel
from qcompiler.config import CompileConfig
from qcompiler.errors import QCompileError
from qcompiler.frontend.onnx_import import ModelInput, graph_inputs, load_onnx
from qcompiler.frontend.static_shapes import resolve_inputs
from qcompiler.numerics.calibrate import load_calibration
from qcompiler.pipeline import Compiled, compile_model
from qcompiler.targets import check_toolchain, get_target


@dataclass(frozen=True)
class Job:
    """A compile whose inputs are read and checked: nothing left to fail but the compile."""

    config: CompileConfig
    model: onnx.ModelProto
    inputs: list[ModelInput]
    calib: dict[str, np.ndarray] | None  # None: a QDQ model's own scales

    def compile(self, progress: bool = False) -> Compiled:
        return compile_model(self.model, self.calib, self.config, progress)

    def emit(self, compiled: Compiled, out: Path, progress: bool = False
             ) -> tuple[Compiled, dict]:
        """`write_outputs`, and the compile it wrote (with its manifest). Where LLVM rejects
        the code of a scheduled kernel (a bug in the target's rule, which the fuzzers hunt),
        that kernel is found by building each alone and the compile is redone with it on its
        portable kernel: the library is written, exact, and the summary names the layer."""
        try:
            return compiled, write_outputs(compiled, out, self.config.name)
        except QCompileError:
            raise  # a user's mistake (an output folder, a toolchain): no kernel to blame
        except Exception:
            failing = failing_kernels(compiled.quantized, compiled.tvm_target)
            if not failing:
                raise
        compiled = compile_model(self.model, self.calib, self.config, progress,
                                 portable=failing)
        return compiled, write_outputs(compiled, out, self.config.name)


class CompileResult(NamedTuple):
    """What `compile_to_dir` wrote, loaded (`lib`), and what the compile produced."""

    lib: CompiledModel
    compiled: Compiled


def prepare(model_path: Path, calib_path: Path | None, out: Path, **options: object) -> Job:
    """Fail before any work, in this order: bad options, a missing toolchain, an unreadable
    model, an output folder that cannot be written, calibration data that does not fit."""
    config = CompileConfig(**options)  # rejects bad options before any work
    if config.name is None:
        config = replace(config, name=name_from_stem(Path(model_path).stem))
    check_toolchain(get_target(config.target))
    model = load_onnx(model_path)
    check_out_dir(out)
    # Dims the model leaves symbolic are fixed by --input-shape, else by the calibration
    # data's sample shape: read the data against what is fixed so far, then fix the rest.
    fixed = resolve_inputs(model, config.batch, config.input_shapes, partial=True)
    calib = None if calib_path is None else \
        load_calibration(calib_path, fixed, config.calib_limit)  # optional for a QDQ model
    inputs = graph_inputs(model, config.batch, config.input_shapes, calib)
    return Job(config, model, inputs, calib)


def compile_only(model_path: Path, calib_path: Path | None, out: Path, progress: bool = False,
                 **options: object) -> Compiled:
    return prepare(model_path, calib_path, out, **options).compile(progress)


def write_outputs(compiled: Compiled, out: Path, name: str = "model") -> dict:
    """Build the TVM module (where the target runs here) and write every output file into
    OUT; returns the manifest (`model.json`). `name`: the C library's (`Job.config.name`)."""
    return emit(compiled, build(compiled), out, name)


def compile_to_dir(model_path: Path, calib_path: Path | None, out: Path, progress: bool = False,
                   **options: object) -> CompileResult:
    job = prepare(model_path, calib_path, out, **options)
    compiled, _ = job.emit(job.compile(progress), out, progress)
    return CompileResult(CompiledModel(out), compiled)
