"""`qcompile`: ONNX model + calibration data -> integer library, with a one-screen summary."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from qcompiler.config import ADAROUND_ITERS, TARGETS
from qcompiler.errors import QCompileError
from qcompiler.numerics.observers import OBSERVERS

EVAL_SETS = ("fashion-mnist",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="qcompile", description="Compile an ONNX CNN to a per-channel int8 library.")
    ap.add_argument("model", help="the ONNX model (float, opset >= 11)")
    ap.add_argument("--calib", default=None,
                    help="calibration inputs: FILE.npz (one array per input) or DIR of .npy; "
                         "optional for a QDQ model, which carries its own scales")
    ap.add_argument("--target", default="x86", help=f"one of {', '.join(TARGETS)}")
    ap.add_argument("-o", "--out", default="build", help="output folder (default: build)")
    ap.add_argument("--name", default=None,
                    help="the C library's name: NAME.h, libNAME.a, NAME_run (default: the "
                         "model file's stem)")
    ap.add_argument("--observer", default="percentile", help=f"one of {', '.join(OBSERVERS)}")
    ap.add_argument("--percentile", type=float, default=99.99)
    ap.add_argument("--per-tensor", action="store_true",
                    help="per-tensor weight scales instead of per-channel (for comparison)")
    ap.add_argument("--weight-bits", type=int, choices=(4, 8), default=8,
                    help="4: weights in [-7, 7] per channel (stored two per byte); default 8")
    ap.add_argument("--activation-bits", type=int, choices=(8, 16), default=8,
                    help="16: int16 activations (symmetric); default 8, the target's dtype")
    ap.add_argument("--precision", default=None, metavar="JSON",
                    help='per-layer weight bits: {"weight_bits": {"/conv1/Conv": 4, "#5": 4}} '
                         "(ONNX node names or #indices as in the summary); others take "
                         "--weight-bits")
    ap.add_argument("--mixed-precision", type=float, default=None, metavar="FRACTION",
                    help="keep at most this fraction of conv/dense weight elements at 8 bits; "
                         "the layers least sensitive on the calibration data take 4 bits")
    ap.add_argument("--equalize", action="store_true",
                    help="cross-layer equalization of conv -> ReLU -> conv pairs (Nagel 2019)")
    ap.add_argument("--bias-correction", action="store_true",
                    help="correct each conv/dense bias by the mean error its weight rounding "
                         "causes on the calibration data")
    ap.add_argument("--adaround", type=int, nargs="?", const=ADAROUND_ITERS, default=0,
                    metavar="ITERS", help="learn each conv/dense layer's weight rounding on the "
                    f"calibration data (AdaRound; default {ADAROUND_ITERS} iterations per layer)")
    ap.add_argument("--batch", type=int, default=None,
                    help="fix a dynamic batch dimension to N (default 1)")
    ap.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x224x224",
                    help="the static shape of an input with symbolic dims (repeatable; "
                    "default: the calibration data's sample shape, batch from --batch)")
    ap.add_argument("--calib-limit", type=int, default=None,
                    help="use only the first N calibration samples")
    ap.add_argument("--eval", choices=EVAL_SETS, default=None,
                    help="also measure top-1 float vs int8 on this test set")
    ap.add_argument("--eval-limit", type=int, default=None,
                    help="evaluate on the first N test images only")
    ap.add_argument("--dump-ir", choices=("import", "float", "quantized"), default=None,
                    help="print the IRModule after this stage and continue")
    ap.add_argument("--report", default=None, metavar="HTML",
                    help="write a per-layer report (op, integer/float, scales, SQNR float vs "
                         "int8 on calibration data, with a plot) to this HTML file")
    ap.add_argument("--threads", type=int, default=1,
                    help="worker threads for the latency figure, ours and onnxruntime's "
                         "(default 1; the TVM module takes qcompiler.load(..., threads=N))")
    ap.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                    help="autotune each dot-product kernel with MetaSchedule (XGBoost cost "
                         "model), TRIALS measured candidates per kernel; x86 times them, "
                         "hexagon counts packets under qemu")
    ap.add_argument("--tune-minutes", type=float, default=None, metavar="M",
                    help="a time budget for --tune: at most M minutes in all, shared among "
                         "the kernels (each still stops at TRIALS)")
    ap.add_argument("--tuning-db", default=None, metavar="DIR",
                    help="the tuning database (default with --tune: ~/.cache/qcompiler/tuning);"
                         " its records are used whenever given, and kernels it has are not "
                         "tuned again")
    ap.add_argument("--rpc-tracker", default=None, metavar="HOST:PORT:KEY",
                    help="time the x86 candidates on the servers of TVM's RPC tracker")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


def _fmt_bytes(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME:1x3x224x224` -> ("NAME", (1, 3, 224, 224)), as tvmc's --input-shapes spells it
    (the name may contain ':'; the shape is what follows the last one)."""
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape:
        raise QCompileError(f"--input-shape {text!r}: give NAME:DIMS, e.g. x:1x3x224x224")
    return name, shape


def config_options(args: argparse.Namespace) -> dict[str, object]:
    """The CompileConfig fields the command line sets (CompileConfig checks them)."""
    from qcompiler.numerics.mixed_precision import load_precision

    shapes = dict(parse_input_shape(s) for s in args.input_shape)
    if len(shapes) < len(args.input_shape):
        raise QCompileError("--input-shape: an input is named twice")
    return {"target": args.target, "observer": args.observer, "percentile": args.percentile,
            "per_channel": not args.per_tensor, "batch": args.batch, "input_shapes": shapes,
            "calib_limit": args.calib_limit, "weight_bits": args.weight_bits,
            "activation_bits": args.activation_bits, "equalize": args.equalize,
            "bias_correction": args.bias_correction, "adaround": args.adaround,
            "layer_weight_bits": load_precision(args.precision) if args.precision else {},
            "mixed_precision": args.mixed_precision, "tune_trials": args.tune,
            "tune_minutes": args.tune_minutes,
            "tuning_db": args.tuning_db, "rpc_tracker": args.rpc_tracker, "name": args.name}


def run(args: argparse.Namespace) -> int:
    from qcompiler.api import prepare
    from qcompiler.backend.runtime import load
    from qcompiler.evaluation.metrics import (
        float_predictions,
        int8_predictions,
        median_latency_ms,
        ort_latency_ms,
    )
    from qcompiler.frontend.onnx_import import import_onnx, initializer_bytes
    from qcompiler.frontend.qdq_import import is_qdq, strip_qdq
    from qcompiler.graph_meta import layer_label, schedule_fallbacks
    from qcompiler.reference import Reference

    if args.threads < 1:
        raise QCompileError(f"--threads {args.threads}: must be at least 1")
    t0 = time.perf_counter()
    out = Path(args.out)
    job = prepare(Path(args.model), Path(args.calib) if args.calib else None, out,
                  **config_options(args))
    config, model, inputs, calib = job.config, job.model, job.inputs, job.calib
    qdq = is_qdq(model)
    if args.dump_ir == "import":
        print(import_onnx(strip_qdq(model).model if qdq else model, inputs))
    compiled = job.compile(progress=not args.quiet)
    if args.dump_ir == "float":
        print(compiled.float_mod)
    if args.dump_ir == "quantized":
        print(compiled.quantized)
    compiled, info = job.emit(compiled, out, progress=not args.quiet)
    compile_s = time.perf_counter() - t0
    native = compiled.target.runs_natively
    lib = load(out, threads=args.threads if native else None)
    # Float-fallback ops in the reference run on this machine: for the target's own build
    # where it runs here, else the host's.
    ref = Reference(compiled.quantized, compiled.tvm_target if native else None)
    checked = None if native else 100  # images through an emulated library

    layers = info["layers"]
    n_int = sum(1 for x in layers if x["status"] == "integer")
    fallback = [layer_label(x) for x in layers if x["status"] == "float"]
    w_float = initializer_bytes(model)
    w_int = sum(c.value.numpy().nbytes for c in _constants(compiled.quantized))
    tt = compiled.tvm_target.attrs
    print(f"\nqcompile {args.model} -> {out}/  [target {args.target}, "
          f"{tt.get('mtriple') or tt.get('mcpu', '')}]")
    qparams = "scales from the QDQ model" if qdq else f"observer {args.observer}"
    bits = sorted({x["weight_bits"] for x in layers if x.get("weight_bits")})
    n4 = sum(x.get("weight_bits") == 4 for x in layers)
    wbits = "4/8-bit" if len(bits) > 1 else f"{bits[0] if bits else args.weight_bits}-bit"
    weights = "the model's int8 weights" if qdq else \
        f"{'per-tensor' if args.per_tensor else 'per-channel'} {wbits} weights" \
        + (f" ({n4} of {n4 + sum(x.get('weight_bits') == 8 for x in layers)} layers 4-bit)"
           if len(bits) > 1 else "") + f", {args.activation_bits}-bit activations" \
        + (f"; AdaRound {args.adaround} iterations/layer" if args.adaround and not qdq else "")
    print(f"  compiled in {compile_s:.1f} s (calibration "
          f"{compiled.timings.get('calibrate', 0.0):.1f} s); {qparams}, {weights}, "
          f"{inputs[0].shape[0]}-image batch")
    print(f"  ops:        {n_int}/{len(layers)} integer"
          + (f"; float fallback: {', '.join(fallback)}" if fallback else "; no float fallback"))
    stuck = schedule_fallbacks(compiled.quantized)  # a rule that raised: a bug, still exact
    if stuck:
        layers_stuck: dict[tuple, list] = {}  # a layer's blocked form, then its NCHW rule
        for f in stuck:
            layers_stuck.setdefault((f.layer, f.op), []).append(f)
        print(f"  schedules:  {len(layers_stuck)} layer{'s' * (len(layers_stuck) > 1)} off "
              "their target kernel: " + "; ".join(
                  f"{layer} {op} ({'; '.join(f.cause() for f in fs)})"
                  for (layer, op), fs in layers_stuck.items()))
    if compiled.precision:
        _print_precision(compiled.precision, layers, args.mixed_precision)
    if compiled.tuning:
        from qcompiler.tuning.tune import table

        new = sum(r.trials for r in compiled.tuning)
        print(f"  tuning:     {len(compiled.tuning)} kernel(s), {new} new trial(s), database "
              f"{config.tuning_root()}")
        print("\n".join("    " + line for line in table(compiled.tuning, compiled.target)
                        .splitlines()))
    if config.tuning_root() is not None:
        from qcompiler.tuning.tune import database_summary

        print("\n".join(database_summary(Path(config.tuning_root()), compiled.target,
                                          compiled.quantized)))
    requantized = [layer_label(x) for x in layers
                   if x["detail"].startswith("weights re-quantized")]
    if requantized:
        print(f"  note:       {len(requantized)} layer(s) re-quantized their weights (a "
              "BatchNormalization with no Q/DQ before it folded into the model's int8 "
              f"weights): {', '.join(requantized)}")
    stored = "int4x2/int8/int32" if 4 in bits else "int8/int32"  # 4-bit: two per byte
    print(f"  weights:    {_fmt_bytes(w_float)} float32 -> {_fmt_bytes(w_int)} {stored} "
          f"({w_float / max(w_int, 1):.1f}x smaller)")
    sa = info["standalone"]
    print(f"  library:    {sa['static']} {_fmt_bytes(os.path.getsize(out / sa['static']))}, "
          f"{sa['shared']} {_fmt_bytes(os.path.getsize(out / sa['shared']))}; "
          f"{sa['kernels']} kernels")
    print(f"  workspace:  {_fmt_bytes(sa['workspace_bytes'])} at 1 thread, "
          f"{sa['workspace_bytes'] / max(sa['live_activation_bytes'], 1):.2f}x the peak of live "
          f"activations ({_fmt_bytes(sa['live_activation_bytes'])}); each further thread "
          f"+{_fmt_bytes(sa['thread_bytes'])}")

    name = inputs[0].name
    sample_kind = "calibration" if calib else "random"
    sample = next(iter(calib.values())) if calib else \
        _random_inputs(compiled.in_qparams[0], inputs[0])
    if args.eval:
        from qcompiler.evaluation.datasets import load_fashion_mnist

        images, labels = load_fashion_mnist("t10k")
        if args.eval_limit:
            images, labels = images[:args.eval_limit], labels[:args.eval_limit]
        fp = float_predictions(args.model, images, name)
        ip, bad, total = int8_predictions(lib, ref, images, checked)
        n = len(ip)
        top_f, top_i = float((fp[:n] == labels[:n]).mean()), float((ip == labels[:n]).mean())
        print(f"  top-1:      float {100 * top_f:.2f}%  int8 {100 * top_i:.2f}%  "
              f"({100 * (top_i - top_f):+.2f} points, {n} {args.eval} test images)")
        exact = bad == 0
        print(f"  bit-exact:  {'yes' if exact else 'NO'} vs qcompiler.reference "
              f"({total - bad}/{total} output elements equal over "
              f"{n if checked is None else min(n, checked)} images"
              + (")" if native else f", run under {lib.prefix[0]}; top-1 of the rest from "
                 "the reference)"))
    else:
        x = sample[: max(inputs[0].shape[0], 16)]
        _, bad, total = int8_predictions(lib, ref, x)
        exact = bad == 0
        print(f"  bit-exact:  {'yes' if exact else 'NO'} vs qcompiler.reference "
              f"({total - bad}/{total} output elements equal on {sample_kind} inputs)")
    feeds = {i.name: sample[: i.shape[0]] for i in inputs[:1]}
    if not native:
        print(f"  latency:    not measured: {args.target} runs under emulation here")
    elif len(inputs) == 1 and feeds[name].shape[0] == inputs[0].shape[0]:
        q = lib.quantize_inputs(feeds[name])
        i_ms = median_latency_ms(lambda: lib.run_int(*q))
        try:
            f_ms = ort_latency_ms(args.model, feeds, args.threads)
            threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
            print(f"  latency:    {'QDQ' if qdq else 'float'} (onnxruntime, {threads}) "
                  f"{f_ms:.3f} ms, int8 (qcompiler) "
                  f"{i_ms:.3f} ms  -> {f_ms / i_ms:.2f}x  (median of 50, batch "
                  f"{inputs[0].shape[0]})")
        except Exception as exc:  # noqa: BLE001 - the peer may reject a model we accept
            print(f"  latency:    int8 (qcompiler) {i_ms:.3f} ms; onnxruntime could not run the "
                  f"model ({type(exc).__name__})")
    if args.report:
        from qcompiler.evaluation.report import layer_sqnr, write_report

        data = calib or {i.name: _random_inputs(q, i)
                         for q, i in zip(compiled.in_qparams, inputs)}
        per_layer = layer_sqnr(compiled, data)
        write_report(Path(args.report), per_layer, Path(args.model).name)
        worst = min((x for x in per_layer if x.get("sqnr_db") is not None),
                    key=lambda x: x["sqnr_db"], default=None)
        print(f"  report:     {args.report}"
              + (f" (lowest SQNR {worst['sqnr_db']:.1f} dB at {layer_label(worst)})"
                 if worst else ""))
    print(f"  wrote {', '.join(f'{out}/{f}' for f in sorted(os.listdir(out)) if f[0] != '.')}")
    return 0 if exact else 1


def _print_precision(choice: list, layers: list[dict], fraction: float) -> None:
    """The mixed-precision choice: per conv/dense layer its bits and its measured SQNR."""
    total = sum(c.elements for c in choice)
    eight = sum(c.elements for c in choice if c.bits == 8)
    print(f"  precision:  {eight}/{total} weights 8-bit ({100 * eight / max(total, 1):.0f}%, "
          f"budget {100 * fraction:.0f}%); network output SQNR with each layer alone at 4-bit:")
    where = {x.get("index"): i for i, x in enumerate(layers)}
    for c in choice:
        k = where.get(c.position)
        name = c.name if k is None else layers[k]["name"]  # its ONNX node
        print(f"    #{'?' if k is None else k:<3} {name:<10} {c.op:<16} {c.bits}-bit  "
              f"{c.sqnr_db:6.1f} dB  ({c.elements} weights)")


def _random_inputs(qp: object, spec: object, n: int = 16) -> object:
    """Inputs spread over the first input's quantized range, for a model with no data given."""
    import numpy as np

    from qcompiler.numerics.qparams import dtype_range

    lo, hi = dtype_range(qp.dtype)
    rng = np.random.default_rng(0)
    x = rng.uniform(qp.scale * (lo - qp.zero_point), qp.scale * (hi - qp.zero_point),
                    (max(n, spec.shape[0]), *spec.shape[1:]))
    return x.astype(np.float32)


def _constants(mod: object) -> list:
    """The constant kernel arguments of the integer graph: what the library stores."""
    from tvm import relax

    from qcompiler.relax_access import bindings, is_const, op_name

    found = []
    for b in bindings(mod["main_int"]):
        if isinstance(b.value, relax.Call) and op_name(b.value) == "relax.call_tir":
            found += [a for a in b.value.args[1].fields if is_const(a)]
    return found


def _import_tvm_without_torch() -> None:
    """TVM's FFI imports torch at start-up whenever it is installed, for tensor exchange the
    compiler never does: ~5 s of every run, most of a user error's. TVM is imported with
    torch hidden; torch itself stays importable afterwards."""
    if "tvm" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` fails fast
    try:
        import tvm  # noqa: F401
    finally:
        del sys.modules["torch"]


def main(argv: list[str] | None = None) -> int:
    _import_tvm_without_torch()
    try:
        args = parse_args(argv)
        return run(args)
    except QCompileError as exc:
        print(f"qcompile: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("qcompile: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in qcompiler, not a user mistake: still one line
        if os.environ.get("QCOMPILE_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[-1][:300]
        print(f"qcompile: internal error: {type(exc).__name__}: {first} "
              "(QCOMPILE_DEBUG=1 shows the traceback; please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
