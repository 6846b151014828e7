"""Latency side by side, in one process: ONNX Runtime float, ONNX Runtime int8 (quantize_static,
QDQ, per-channel, uint8 activations, the same calibration data) and qcompiler int8 (its TVM
module; with --tune/--tuning-db also a tuned one, with --nchw also one built without the
blocked activation layout, `passes.plan_layout`); the median of N runs after warm-up, at 1
thread and at all cores, batch 1.

    python tools/bench.py [bundled resnet50 mobilenetv2] [--runs 50] [--no-layers]
                          [--tune TRIALS] [--tuning-db DIR] [--nchw]

Models: `bundled` (models/fashion_cnn.onnx), `resnet50` (the ONNX wheel's light ResNet-50, its
constant-fill weights perturbed, see support.model_zoo), `mobilenetv2`
(tools/export_mobilenetv2.py, random weights). Ratios > 1 mean qcompiler is faster.

Per conv/dense layer (1 thread): the kernel's median time (the VM's instrument hook around each
kernel call), GOPS (2 x multiply-adds / time) and the fraction of the int8 peak of one core.
The peak is measured, not looked up: tools/vnni_peak.c runs 12 independent AVX-512 VNNI
`vpdpbusd` chains (128 ops each) and reports ops per second; on a CPU without VNNI the
fraction is not given.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import tvm
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_mobilenetv2 import build as build_mobilenetv2  # noqa: E402

from qcompiler.api import compile_to_dir  # noqa: E402
from qcompiler.evaluation.metrics import median_latency_ms  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support
from support.model_zoo import light_model_path, perturb_weights  # noqa: E402

from qcompiler.backend.runtime import CompiledModel, set_threads  # noqa: E402
from qcompiler.frontend.onnx_import import load_onnx  # noqa: E402
from qcompiler.numerics.weight_layout import canonical  # noqa: E402
from qcompiler.relax_access import const_array, is_const, op_name, shape_of  # noqa: E402
from qcompiler.tuning.tune import table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("bundled", "resnet50", "mobilenetv2")


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, data: np.ndarray) -> None:
        self.items = iter([{name: data[i:i + 1]} for i in range(len(data))])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def prepare(name: str, tmp: Path) -> tuple[Path, Path]:
    """(model.onnx, calib.npz) for one benchmark model."""
    if name == "bundled":
        return ROOT / "models" / "fashion_cnn.onnx", ROOT / "models" / "fashion_calib.npz"
    if name == "resnet50":
        # Opset 9 predates per-axis DequantizeLinear, which ORT's quantize_static writes.
        model = onnx.version_converter.convert_version(
            perturb_weights(load_onnx(light_model_path("resnet50"))), 13)
        inits = {i.name for i in model.graph.initializer}
        keep = [i for i in model.graph.input if i.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(keep)
    else:
        model = build_mobilenetv2()
    path = tmp / f"{name}.onnx"
    onnx.save(model, str(path))
    x = model.graph.input[0]
    shape = [d.dim_value for d in x.type.tensor_type.shape.dim][1:]
    calib = tmp / f"{name}_calib.npz"
    rng = np.random.default_rng(0)
    np.savez(calib, **{x.name: rng.standard_normal((16, *shape)).astype(np.float32)})
    return path, calib


def vnni_peak_ops() -> float | None:
    """One core's measured int8 ops/s on vpdpbusd, or None without AVX-512 VNNI."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "peak"
        built = subprocess.run(["cc", "-O2", "-mavx512f", "-mavx512vnni",
                                str(ROOT / "tools" / "vnni_peak.c"), "-o", str(exe)],
                               capture_output=True)
        if built.returncode:
            return None
        runs = [subprocess.run([str(exe)], capture_output=True, text=True) for _ in range(3)]
        if any(r.returncode for r in runs):
            return None
        return max(float(r.stdout.split()[0]) for r in runs)


def _session(path: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def layer_ops(quantized: tvm.IRModule) -> dict[str, tuple[str, str, int]]:
    """kernel symbol -> (op, shape text, int8 ops per call) for conv2d and dense kernels (and
    convs fused with an add, whose time includes the add's)."""
    out = {}
    for blk in quantized["main_int"].body.blocks:
        for b in blk.bindings:
            if op_name(b.value) != "relax.call_tir":
                continue
            prim = quantized[b.value.args[0]]
            kind = str(prim.attrs["qcompiler.op"])
            if kind not in ("conv2d", "conv2d_add", "dense"):  # (a fused add's time counts)
                continue
            args = b.value.args[1].fields
            if not is_const(args[1]):
                continue
            attrs = json.loads(str(prim.attrs["qcompiler.attrs"]))
            w_shape = canonical(const_array(args[1]), attrs).shape  # packed, nibbles: undone
            x, y = shape_of(args[0]), shape_of(b.var)
            if "channels" in attrs:  # NCHW16c: the layer's own channels (padding is no work)
                cin, cout = attrs["channels"]
                x, y = (x[0], cin, *x[2:4]), (y[0], cout, *y[2:4])
                w_shape = (cout, 1 if attrs["groups"] > 1 else cin, *w_shape[2:])
            macs = int(np.prod(y)) * int(np.prod(w_shape[1:]))
            text = f"{tuple(x)} * {tuple(w_shape)} -> {tuple(y)}" \
                + (" + add" if kind == "conv2d_add" else "")
            out[str(prim.attrs["global_symbol"])] = (kind, text, 2 * macs)
    return out


def kernel_times(lib: CompiledModel, q: list, runs: int = 10) -> dict[str, float]:
    """Median seconds per kernel call, timed around each call by the VM's instrument hook."""
    times: dict[str, list[float]] = {}
    start = [0.0]

    def hook(_func, name, before, _ret, *_args) -> int:  # noqa: ANN001
        if before:
            start[0] = time.perf_counter()
        else:
            times.setdefault(name, []).append(time.perf_counter() - start[0])
        return 0

    lib._vm.set_instrument(hook)
    for _ in range(runs):
        lib.run_int(*q)
    lib._vm.set_instrument(None)
    return {k: float(np.median(v)) for k, v in times.items()}


def _compiled(model: Path, calib: Path, out: Path, **options: object) -> tuple:
    t = time.perf_counter()
    lib, compiled = compile_to_dir(model, calib, out, **options)
    return compiled, lib, time.perf_counter() - t


def bench_model(name: str, tmp: Path, runs: int, threads: list[int], peak: float | None,
                layers: bool, tuning: dict, nchw: bool = False) -> list[tuple]:
    """`tuning`: CompileConfig options (tune_trials, tuning_db); when given, a second
    qcompiler library built with them is measured beside the untuned one. `nchw`: also one
    built with `blocked_layout=False`."""
    model, calib = prepare(name, tmp)
    compiled, lib, compile_s = _compiled(model, calib, tmp / f"{name}_q")
    flat = _compiled(model, calib, tmp / f"{name}_nchw", blocked_layout=False)[1] if nchw \
        else None
    tuned = _compiled(model, calib, tmp / f"{name}_tuned", **tuning) if tuning else None
    if tuned is not None:
        compiled, tuned_lib, _ = tuned
        print(f"\n{name}: tuned kernels\n" + table(compiled.tuning, compiled.target))
    spec = lib.inputs[0]
    data = np.load(calib)
    x = data[data.files[0]][: spec["shape"][0]]
    int8_path = str(tmp / f"{name}_ort_int8.onnx")
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice, not results
    quantize_static(str(model), int8_path, _Reader(spec["name"], data[data.files[0]]),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    q = lib.quantize_inputs(x)
    rows = []
    for n in threads:
        f32, i8 = _session(str(model), n), _session(int8_path, n)
        set_threads(n)
        feeds = {spec["name"]: x}
        ms = [median_latency_ms(lambda: f32.run(None, feeds), runs),
              median_latency_ms(lambda: i8.run(None, feeds), runs),
              median_latency_ms(lambda: lib.run_int(*q), runs),
              median_latency_ms(lambda: tuned_lib.run_int(*q), runs) if tuned else None,
              median_latency_ms(lambda: flat.run_int(*q), runs) if flat else None]
        rows.append((name, n, *ms, compile_s))
    if layers:
        set_threads(1)
        per = kernel_times(tuned_lib if tuned else lib, q)
        print(f"\n{name}: conv/dense kernels{' (tuned)' if tuned else ''} at 1 thread (peak "
              f"{'%.0f GOPS/core' % (peak / 1e9) if peak else 'n/a'})")
        print(f"  {'kernel':16s} {'shape':52s} {'ms':>8s} {'GOPS':>7s} {'% peak':>7s}")
        total_t = total_ops = 0.0
        for sym, (kind, text, ops) in layer_ops(compiled.quantized).items():
            if sym not in per:
                continue
            s = per[sym]
            total_t, total_ops = total_t + s, total_ops + ops
            frac = f"{100 * ops / s / peak:6.1f}%" if peak else "    n/a"
            print(f"  {sym:16s} {text:52s} {1e3 * s:8.3f} {ops / s / 1e9:7.1f} {frac}")
        if total_t:
            frac = f"{100 * total_ops / total_t / peak:.1f}%" if peak else "n/a"
            print(f"  all conv/dense: {1e3 * total_t:.2f} ms, {total_ops / total_t / 1e9:.1f} "
                  f"GOPS, {frac} of peak")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", choices=[*MODELS, []], metavar="MODEL",
                    help=f"any of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    ap.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                    help="also measure a library tuned with this many trials per kernel")
    ap.add_argument("--tuning-db", default=None, metavar="DIR",
                    help="also measure a library built from (and tuned into) this database")
    ap.add_argument("--nchw", action="store_true",
                    help="also measure a library built without the blocked (NCHW16c) layout")
    args = ap.parse_args()
    tuning = {"tune_trials": args.tune, "tuning_db": args.tuning_db} \
        if args.tune or args.tuning_db else {}
    cores = os.cpu_count() or 1
    threads = [1] if cores == 1 else [1, cores]
    peak = vnni_peak_ops()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models or MODELS:
            rows += bench_model(name, Path(tmp), args.runs, threads, peak, not args.no_layers,
                                tuning, args.nchw)
    print(f"\nmedian of {args.runs} runs, batch 1, ms (ratios: ORT time / qcompiler time)")
    print(f"  {'model':12s} {'threads':>7s} {'ORT float':>10s} {'ORT int8':>10s} "
          f"{'qcompiler':>10s} {'vs float':>9s} {'vs int8':>8s} {'compile s':>9s}"
          + (f" {'tuned':>8s} {'vs float':>9s} {'vs int8':>8s}" if tuning else "")
          + (f" {'NCHW':>8s} {'layout gain':>11s}" if args.nchw else ""))
    for name, n, f32, i8, ours, tuned, flat, compile_s in rows:
        print(f"  {name:12s} {n:7d} {f32:10.3f} {i8:10.3f} {ours:10.3f} {f32 / ours:8.2f}x "
              f"{i8 / ours:7.2f}x {compile_s:9.1f}"
              + (f" {tuned:8.3f} {f32 / tuned:8.2f}x {i8 / tuned:7.2f}x" if tuned else "")
              + (f" {flat:8.3f} {flat / ours:10.2f}x" if flat else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
