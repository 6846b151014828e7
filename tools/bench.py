"""Latency side by side, in one process: ORT float, ORT int8 (quantize_static, QDQ, per-channel,
same calibration data) and qcompiler int8; the median of N runs after warm-up, at 1 thread.

    python tools/bench.py MODEL.onnx --calib CALIB.npz [--runs 100]

Prints the medians and the ratios (>1 means qcompiler is faster). qcompiler runs its TVM module
(the x86 target); threading (`--threads`) is not implemented yet, so only 1 thread is compared.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)

import qcompiler
from qcompiler.evaluate import median_latency_ms


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, data: np.ndarray) -> None:
        self.items = iter([{name: data[i:i + 1]} for i in range(len(data))])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def _session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--calib", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lib = qcompiler.compile(args.model, args.calib, Path(tmp) / "q")
        name = lib.inputs[0]["name"]
        calib = np.load(args.calib)
        data = calib[name] if name in calib.files else calib[calib.files[0]]
        x = data[: lib.inputs[0]["shape"][0]]
        int8_path = str(Path(tmp) / "ort_int8.onnx")
        quantize_static(str(args.model), int8_path, _Reader(name, data[:64]),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        f32, i8 = _session(str(args.model)), _session(int8_path)
        q = lib.quantize_inputs(x)
        ms = {"onnxruntime float": median_latency_ms(lambda: f32.run(None, {name: x}), args.runs),
              "onnxruntime int8": median_latency_ms(lambda: i8.run(None, {name: x}), args.runs),
              "qcompiler int8": median_latency_ms(lambda: lib.run_int(*q), args.runs)}
    ours = ms["qcompiler int8"]
    print(f"{args.model.name}, batch {x.shape[0]}, 1 thread, median of {args.runs}:")
    for k, v in ms.items():
        print(f"  {k:18s} {v:9.3f} ms   qcompiler speed-up {v / ours:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
