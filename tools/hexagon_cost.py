"""Packets executed under qemu-hexagon, per kernel and in total, for a model.

    python tools/hexagon_cost.py MODEL.onnx --calib CALIB.npz [--compare]

`--compare` also builds the same model with the portable kernels (HVX enabled, LLVM's own
vectorization) and without HVX at all (scalar), to show what the vrmpy schedules buy.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from qcompiler.calibrate import load_calibration
from qcompiler.config import CompileConfig
from qcompiler.emit import emit
from qcompiler.hexagon_cost import count_packets, per_kernel
from qcompiler.onnx_import import graph_inputs, load_onnx
from qcompiler.pipeline import compile_model
from qcompiler.targets.hexagon import HEXAGON

VARIANTS = {
    "vrmpy": (True, HEXAGON),
    "portable+hvx": (False, HEXAGON),
    "scalar": (False, dataclasses.replace(
        HEXAGON, tvm_target={**HEXAGON.tvm_target, "mattr": ["-hvx"]},
        cc=(*HEXAGON.cc[:-1], "-mcpu=hexagonv68"))),
}


def measure(model_path: Path, calib_path: Path, variant: str) -> dict[str, int]:
    schedules, target = VARIANTS[variant]
    model = load_onnx(model_path)
    inputs = graph_inputs(model, None)
    calib = load_calibration(calib_path, inputs)
    compiled = compile_model(model, calib, CompileConfig(target="hexagon", schedules=schedules),
                             progress=False, target=target)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        emit(compiled, None, out)
        q = next(iter(calib.values()))[: inputs[0].shape[0]]
        qp = compiled.in_qparams[0]
        import numpy as np

        qin = np.clip(np.rint(q / np.float32(qp.scale)) + qp.zero_point, 0, 255).astype("uint8")
        return per_kernel(count_packets(out, qin))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--calib", type=Path, required=True)
    ap.add_argument("--compare", action="store_true")
    args = ap.parse_args()
    variants = list(VARIANTS) if args.compare else ["vrmpy"]
    results = {v: measure(args.model, args.calib, v) for v in variants}
    names = sorted({k for r in results.values() for k in r if k != "<total>"},
                   key=lambda k: -results["vrmpy"].get(k, 0))
    print(f"{'kernel':28s}" + "".join(f"{v:>16s}" for v in variants))
    for name in [*names, "<total>"]:
        print(f"{name:28s}" + "".join(f"{results[v].get(name, 0):16,d}" for v in variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
