"""Compile the ONNX wheel's light model zoo for x86 and print, per model: compile time,
integer layers, what stayed float, bit-exactness against the reference, and output SQNR
float (ONNX Runtime) vs int8.

    python tools/zoo.py [MODEL ...]        (default: all nine)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support
from support.model_zoo import LIGHT_MODELS, check_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=list(LIGHT_MODELS))
    args = ap.parse_args()
    print(f"{'model':14s} {'compile s':>9s} {'integer':>9s} {'bit-exact':>9s} "
          f"{'SQNR dB':>8s}  float layers")
    ok = True
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            r = check_model(name, Path(tmp) / "lib")
        n_int = sum(x["status"] == "integer" for x in r.layers)
        print(f"{name:14s} {r.compile_s:9.1f} {n_int:4d}/{len(r.layers):<4d} "
              f"{'yes' if r.bit_exact else 'NO':>9s} {r.sqnr_db:8.1f}  "
              f"{', '.join(r.float_ops) or '-'}", flush=True)
        ok &= r.bit_exact
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
