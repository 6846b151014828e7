"""Fuzz compiled-vs-reference on random valid CNN graphs.

    python tools/fuzz.py --target x86 --n 2000 [--seed N] [--save tests/fixtures/fuzz]
                         [--isa vnni|avx2] [--nchw]

New graphs on every run (the CI tests in tests/test_fuzz.py draw a fixed set); the run prints
its seed, and `--seed` with it draws the same graphs again. Each graph (hypothesis strategy
`support.fuzz_graphs.cnn_graphs`, with the layers real exports add: tables, written-out
chains, SE gates, Resize, ConvTranspose) is compiled, run, and compared with
`qcompiler.reference` bit for bit; a layer a target rule failed on (the compile falls back to the portable kernel,
`graph_meta.schedule_fallbacks`) is a finding too. `--isa vnni` compiles x86 for AVX-512 VNNI
whatever this CPU is (built only, not run, where it lacks VNNI); `--nchw`: no blocked layout.
A mismatch is shrunk by hypothesis to a minimal graph and saved
as `<save>/mismatch_<seed>.onnx` with its calibration `.npz`, a regression fixture for tests/.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from qcompiler.targets.x86 import x86_target
from tqdm import tqdm

from qcompiler.config import TARGETS

# x86 ISAs by name (as tests/conftest.py's VNNI_TARGET and AVX2_TARGET)
ISA_TARGETS = {"vnni": {"kind": "llvm", "mcpu": "x86-64-v4",
                        "mattr": ["+avx512vnni", "+avx512vbmi"]},
               "avx2": {"kind": "llvm", "mcpu": "x86-64-v3"}}

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support
from support.fuzz_graphs import KINDS, GraphCase, check_case, cnn_graphs, save_case  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="x86", choices=TARGETS)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None,
                    help="replay the graphs of an earlier run (default: a new seed, printed)")
    ap.add_argument("--save", type=Path, default=Path("tests/fixtures/fuzz"))
    ap.add_argument("--isa", choices=("host", "avx2", "vnni"), default="host",
                    help="x86: this machine's ISA (default), or AVX2 / AVX-512 VNNI explicitly")
    ap.add_argument("--nchw", action="store_true", help="x86 VNNI: no blocked layout")
    args = ap.parse_args()
    target, run_it = args.target, True
    if args.target == "x86" and args.isa != "host":
        target = dataclasses.replace(x86_target(), tvm_target=ISA_TARGETS[args.isa])
        run_it = args.isa == "avx2" or x86_target().has("avx512vnni")
    run_seed = random.SystemRandom().randrange(2**32) if args.seed is None else args.seed
    print(f"seed {run_seed} (python tools/fuzz.py --seed {run_seed} draws these graphs again)")
    stats = {"graphs": 0, "mismatches": 0}
    failing: list[GraphCase] = []
    bar = tqdm(total=args.n, desc="graphs", unit="graph")

    @seed(run_seed)
    @settings(max_examples=args.n, deadline=None, database=None, derandomize=False,
              print_blob=False, suppress_health_check=list(HealthCheck))
    @given(cnn_graphs(kinds=KINDS))  # the CNN layers and those of real exports
    def run(case: GraphCase) -> None:
        stats["graphs"] += 1
        bar.update(1)
        try:
            problem = check_case(case, target=target, blocked_layout=not args.nchw,
                                 run=run_it)
        except Exception as exc:  # noqa: BLE001 - a crash on a valid graph is a finding too
            problem = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        if problem:
            stats["mismatches"] += 1
            failing.append(case)
            raise AssertionError(problem)

    t = time.time()
    try:
        run()
    except AssertionError as exc:
        case = failing[-1]  # hypothesis re-runs the shrunk example last
        stem = args.save / f"mismatch_{case.seed}"
        save_case(case, stem, found_on=args.target)
        print(f"\nmismatch: {exc}; minimized graph saved to {stem}.onnx", file=sys.stderr)
    bar.close()
    what = "compared" if run_it else "built (not run: this CPU lacks the ISA)"
    print(f"{stats['graphs']} graphs compiled and {what} on {args.target} {args.isa} in "
          f"{time.time() - t:.0f} s: {stats['mismatches']} mismatching")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
