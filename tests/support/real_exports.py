"""Real torchvision exports (tools/export_zoo.py): get the files, compile one, check it.

The files are written by `tools/export_zoo.py` in a subprocess whose interpreter has torch and
torchvision (`QCOMPILER_EXPORT_PYTHON`, default this interpreter: CI installs the `[export]`
extra into it), into `QCOMPILER_ZOO_DIR` (default the tool's cache folder), reusing what is
there. The compiler under test never imports torch.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
EXPORT_ZOO = ROOT / "tools" / "export_zoo.py"
sys.path.insert(0, str(EXPORT_ZOO.parent))
import export_zoo  # noqa: E402  (numpy only at import; torch runs in its subprocess)

ZOO = export_zoo.ZOO
onnx_path, calib_path = export_zoo.onnx_path, export_zoo.calib_path


def export_python() -> str:
    return os.environ.get("QCOMPILER_EXPORT_PYTHON") or sys.executable


def zoo_dir() -> Path:
    env = os.environ.get("QCOMPILER_ZOO_DIR")
    return Path(env) if env else export_zoo.DEFAULT_OUT


def has_torch(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import torch, torchvision"], check=False,
                           capture_output=True)
    return probe.returncode == 0


def export(names: list[str], out: Path, calib_size: int, opsets: list[int],
           dynamo: bool = False) -> None:
    """Run tools/export_zoo.py (missing files only); raises with its stderr if it fails."""
    cmd = [export_python(), str(EXPORT_ZOO), *names, "--out", str(out),
           "--calib-size", str(calib_size), "--opset", *map(str, opsets)]
    res = subprocess.run(cmd + (["--dynamo"] if dynamo else []), check=False, capture_output=True,
                         text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - got)^2), in float64."""
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - got) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(max(float(np.sum(ref ** 2)), 1e-300)
                                                       / noise)


@dataclass
class ExportResult:
    compile_s: float
    check_s: float
    float_ops: list[str]  # "op (layer)" of every layer left float
    sqnr_db: float
    bit_exact_checked: int  # held-out inputs compared bit for bit (a mismatch raises)
    schedule_fallbacks: list[str] = field(default_factory=list)


def held_out(shape: tuple, n: int, seed: int = 1) -> list[np.ndarray]:
    """Inputs the calibration never saw (the calibration set is seeded apart)."""
    rng = np.random.default_rng([seed, 99])
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def check_export(model: Path, calib: Path, out: Path, target: str = "x86", n_inputs: int = 2
                 ) -> ExportResult:
    """Compile `model` with `calib` for `target` into `out`; the library equals the reference
    bit for bit on `n_inputs` held-out inputs (raises otherwise); the SQNR of its dequantized
    output against ONNX Runtime's float output on the same inputs."""
    import onnxruntime as ort
    from conftest import check_against_reference

    from qcompiler.api import compile_only, write_outputs
    from qcompiler.backend.runtime import load
    from qcompiler.graph_meta import graph_meta, schedule_fallbacks

    t = time.perf_counter()
    compiled = compile_only(model, calib, out, target=target)
    write_outputs(compiled, out)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    lib = load(out)
    spec = lib.inputs[0]
    xs = held_out(tuple(spec["shape"]), n_inputs)
    check_against_reference(compiled, lib, [[x] for x in xs])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {spec["name"]: x})[0].ravel() for x in xs])
    got = np.concatenate([lib.run(x)[0].ravel() for x in xs])
    layers = graph_meta(compiled.quantized)["layers"]
    return ExportResult(
        compile_s, time.perf_counter() - t,
        [f"{x['op']} ({x.get('name', '?')})" for x in layers if x["status"] == "float"],
        sqnr_db(ref, got), n_inputs,
        [f.summary() for f in schedule_fallbacks(compiled.quantized)])
