"""Compile ONNX Runtime's own int8 of each real-export zoo model (quantize_static, QDQ,
per-channel int8 weights, uint8 activations: what a user who quantized with ORT brings):
bit-exact against the reference, the layers left float, the output SQNR against ORT running
the same QDQ file.

    python tools/ort_qdq_zoo.py [NAME ...] [--size 64] [--zoo-dir DIR] [--work DIR]

The zoo's exports and calibration files come from tools/export_zoo.py (`--calib-size`
matching --size); a model not exported yet is reported and skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support
import onnxruntime as ort
from export_zoo import DEFAULT_OUT, ZOO, calib_path, onnx_path
from support import real_exports

from qcompiler.backend.runtime import load


def _as_written(model: Path, xs: list) -> list:
    """ORT running the QDQ file itself, unfused (its fused
    u8s8 kernels saturate on CPUs without VNNI; the QDQ graph itself does not)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: x}) for x in xs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help="default: the whole zoo")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--zoo-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work", type=Path, default=Path("ort_qdq_zoo"))
    args = ap.parse_args()
    failed = 0
    for name in args.names or ZOO:
        model, calib = onnx_path(args.zoo_dir, name, 17), calib_path(args.zoo_dir, name, args.size)
        if not model.exists() or not calib.exists():
            print(f"{name}: not exported (python tools/export_zoo.py {name} --opset 17 "
                  f"--calib-size {args.size})")
            continue
        work = args.work / name
        real_exports.ort_int8_outputs(model, calib, work, [])  # writes work/ort_int8.onnx
        qdq = work / "ort_int8.onnx"
        peer = real_exports.ort_int8_outputs  # check_export's own peer would quantize again
        real_exports.ort_int8_outputs = lambda m, _c, _w, xs: _as_written(m, xs)
        try:
            r = real_exports.check_export(qdq, calib, work / "out")
        except Exception as exc:  # noqa: BLE001 - one line per model, then the next
            failed += 1
            print(f"{name}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        finally:
            real_exports.ort_int8_outputs = peer
        lib = load(work / "out")
        xs = real_exports.held_out(tuple(lib.inputs[0]["shape"]), r.bit_exact_checked)
        got = real_exports.by_output([lib.run(x) for x in xs])
        want = real_exports.by_output(_as_written(qdq, xs))
        print(f"{name}: compiled in {r.compile_s:.0f} s, bit-exact on {r.bit_exact_checked} "
              f"inputs, float layers {r.float_ops or 'none'}, portable-kernel layers "
              f"{r.schedule_fallbacks or 'none'}, SQNR vs ORT running the QDQ file "
              f"{min(map(real_exports.sqnr_db, want, got)):.1f} dB", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
