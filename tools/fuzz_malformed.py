"""Feed mutated ONNX models to `qcompile` and classify every outcome.

    python tools/fuzz_malformed.py --n 500 [--seed 0] [--json results.json]

Each case is a corruption of a small valid model (`support.fuzz_graphs.mutate`: flipped bytes,
truncation, wrong attribute types, dangling inputs, inconsistent initializers, cycles, ...).
The CLI runs in this process; an exception escaping it, an exit status other than 0 (compiled)
or 2 (one-line user error), a multi-line error, or a case over the time limit is a failure.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from qcompiler import cli

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support
from support.fuzz_graphs import base_model, mutate  # noqa: E402


class _Timeout(Exception):
    pass


def _alarm(_sig: int, _frame: object) -> None:
    raise _Timeout()


def run_case(path: Path, calib: Path, out: Path, limit_s: int) -> dict:
    err, std = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            rc = cli.main([str(path), "--calib", str(calib), "-o", str(out), "--quiet"])
        escaped = None
    except _Timeout:
        rc, escaped = None, "timeout"
    except BaseException:  # noqa: BLE001 - anything escaping the CLI is what we look for
        rc, escaped = None, traceback.format_exc()
    finally:
        signal.alarm(0)
    lines = err.getvalue().strip().splitlines()
    ok = escaped is None and (rc == 0 or (rc == 2 and len(lines) == 1
                                          and lines[0].startswith("qcompile: error: ")))
    return {"rc": rc, "stderr": lines[:3], "escaped": escaped, "ok": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=120, help="seconds per case")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    base = base_model()
    outcomes: Counter = Counter()
    failures = []
    t = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = tmp / "calib.npz"
        np.savez(calib, x=np.random.default_rng(0).standard_normal((2, 2, 6, 6))
                 .astype(np.float32))
        for i in range(args.n):
            kind, data = mutate(base, args.seed + i)
            path = tmp / f"case_{i}.onnx"
            path.write_bytes(data)
            res = run_case(path, calib, tmp / f"out_{i}", args.limit)
            outcomes[(kind, "compiled" if res["rc"] == 0 else
                      "user error" if res["ok"] else "FAILURE")] += 1
            if not res["ok"]:
                failures.append({"case": args.seed + i, "kind": kind, **res})
            path.unlink()
    for (kind, what), n in sorted(outcomes.items()):
        print(f"  {kind:16s} {what:11s} {n}")
    print(f"{args.n} malformed models in {time.time() - t:.0f} s: "
          f"{sum(1 for f in failures if f['escaped'])} tracebacks/timeouts, "
          f"{len(failures)} failures")
    for f in failures[:5]:
        print(f"case {f['case']} ({f['kind']}): rc={f['rc']} {f['stderr']} "
              f"{(f['escaped'] or '')[-800:]}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "failures": failures,
                                         "outcomes": {f"{k}/{w}": n for (k, w), n in
                                                      outcomes.items()}}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
