"""Real torchvision exports (tools/export_zoo.py): get the files, compile one, check it.

The files are written by `tools/export_zoo.py` in a subprocess whose interpreter has torch and
torchvision (`QCOMPILER_EXPORT_PYTHON`, default this interpreter: CI installs the `[export]`
extra into it), into `QCOMPILER_ZOO_DIR` (default the tool's cache folder), reusing what is
there. The compiler under test never imports torch. Exports hold a lock on the folder, so
pytest-xdist workers that need the same files write each once.
"""
from __future__ import annotations

import fcntl
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
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        res = subprocess.run(cmd + (["--dynamo"] if dynamo else []), check=False,
                             capture_output=True, text=True)
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
    peer_sqnr_db: float  # ONNX Runtime's own int8 (quantize_static QDQ) on the same inputs
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
    outputs against ONNX Runtime's float outputs on the same inputs (the lowest over the
    outputs)."""
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
    ref = by_output([sess.run(None, {spec["name"]: x}) for x in xs])
    got = by_output([lib.run(x) for x in xs])
    peer = by_output(ort_int8_outputs(model, calib, out, xs))
    layers = graph_meta(compiled.quantized)["layers"]
    return ExportResult(
        compile_s, time.perf_counter() - t,
        [f"{x['op']} ({x.get('name', '?')})" for x in layers if x["status"] == "float"],
        min(map(sqnr_db, ref, got)), min(map(sqnr_db, ref, peer)), n_inputs,
        [f.summary() for f in schedule_fallbacks(compiled.quantized)])


def by_output(runs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per model output, its values over every run, flat (an SQNR per output: a detector's
    scores and box distances live on different scales)."""
    return [np.concatenate([r[k].ravel() for r in runs]) for k in range(len(runs[0]))]


def ort_int8_outputs(model: Path, calib: Path, work: Path, xs: list[np.ndarray]
                     ) -> list[np.ndarray]:
    """ONNX Runtime's post-training int8 of the same file and calibration data (per-channel
    QDQ, uint8 activations), run as written: the peer's accuracy on these inputs. (ORT's fused
    u8s8 kernels saturate on CPUs without VNNI; the QDQ graph itself does not.)"""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    with np.load(calib) as z:
        data = z[z.files[0]]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: data[i:i + 1]} for i in range(len(data))])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    work.mkdir(parents=True, exist_ok=True)
    static = work / "ort_static.onnx"
    shape = [1, *data.shape[1:]]
    m = onnx.load(str(model))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, shape):
        d.Clear()
        d.dim_value = int(v)
    onnx.save(m, str(static))
    qdq = work / "ort_int8.onnx"
    quantize_static(str(static), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(qdq), opts, providers=["CPUExecutionProvider"])
    return [sess.run(None, {name: x}) for x in xs]
