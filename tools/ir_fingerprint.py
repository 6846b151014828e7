"""Fingerprints of what the compiler produces, for refactors that must not change behaviour.

    python tools/ir_fingerprint.py OUT.json      # then compare two runs' OUT.json key by key

For a few models (the bundled CNN, the QDQ fixture, the ONNX wheel's light SqueezeNet and
ShuffleNet) and every target (x86 as this machine builds it, x86 AVX-512 VNNI whether or not
this CPU has it, arm, hexagon): the SHA-256 of the quantized module as printed with its
constants (every kernel's TIR after scheduling), and for x86/hexagon the emitted `model.h`
and `model.json`. Equal fingerprints mean the same kernels, constants and graph: the same
outputs and the same speed. The printed modules are written beside OUT.json for diffing.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from qcompiler.targets import get_target
from qcompiler.targets.x86 import x86_target

from qcompiler.api import write_outputs
from qcompiler.config import CompileConfig
from qcompiler.frontend.onnx_import import graph_inputs, load_onnx
from qcompiler.numerics.calibrate import load_calibration
from qcompiler.pipeline import compile_model

ROOT = Path(__file__).resolve().parent.parent
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
VNNI = {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vnni", "+avx512vbmi"]}
MODELS = {  # name -> (model, calibration: a file, None for QDQ, "random" for the light zoo)
    "fashion": (ROOT / "models" / "fashion_cnn.onnx", ROOT / "models" / "fashion_calib.npz"),
    "qdq": (ROOT / "tests" / "fixtures" / "qdq" / "conv_add_gemm_qdq_per_channel.onnx", None),
    "squeezenet": (LIGHT / "light_squeezenet.onnx", "random"),
    "shufflenet": (LIGHT / "light_shufflenet.onnx", "random"),
}
TARGETS = {"x86": None, "vnni": dataclasses.replace(x86_target(), tvm_target=VNNI),
           "arm": get_target("arm"), "hexagon": get_target("hexagon")}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(out: Path) -> dict[str, str]:
    found = {}
    for mname, (path, calib_path) in MODELS.items():
        model = load_onnx(path)
        for tname, target in TARGETS.items():
            if mname in ("squeezenet", "shufflenet") and tname in ("arm", "x86"):
                continue  # the light zoo: the blocked VNNI and HVX paths are what it adds
            config = CompileConfig(target="x86" if target is None else target.name)
            inputs = graph_inputs(model, config.batch)
            if calib_path == "random":
                rng = np.random.default_rng(0)
                calib = {i.name: rng.standard_normal((4, *i.shape[1:])).astype(np.float32)
                         for i in inputs}
            else:
                calib = None if calib_path is None else \
                    load_calibration(calib_path, inputs, config.calib_limit)
            compiled = compile_model(model, calib, config, progress=False, target=target)
            text = compiled.quantized.script(show_meta=True)
            out.with_suffix(f".{mname}.{tname}.txt").write_text(text)
            found[f"{mname}/{tname}"] = _digest(text.encode())
            if tname == "x86" or (tname == "hexagon" and mname == "fashion"):
                with tempfile.TemporaryDirectory() as d:
                    info = write_outputs(compiled, Path(d))
                    found[f"{mname}/{tname}/model.h"] = _digest((Path(d) / "model.h").read_bytes())
                found[f"{mname}/{tname}/model.json"] = json.dumps(info, sort_keys=True)
            print(mname, tname, found[f"{mname}/{tname}"], flush=True)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="where to write the fingerprints (JSON)")
    args = ap.parse_args()
    args.out.write_text(json.dumps(fingerprint(args.out), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
