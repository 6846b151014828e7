"""Latency side by side, in one process: ONNX Runtime float, ONNX Runtime int8
(quant_pre_process, then quantize_static: QDQ, per-channel, uint8 activations, the same
calibration data), OpenVINO float and int8 (the same QDQ file as ONNX Runtime's int8) and
qcompiler int8 (its TVM module; with --tune/--tuning-db also a tuned one, with --nchw also one
built without the blocked activation layout, `passes.plan_layout`; with --c also the
runtime-free C library, `libNAME.so`, its pthreads pool at each thread count); the median of N
runs after warm-up, at 1 thread and at all cores (or --threads), batch 1.

    python tools/bench.py [MODEL ...] [--size 224] [--calib FILE.npz] [--threads 1 ...]
                          [--runs 50] [--no-layers] [--tune TRIALS] [--tuning-db DIR] [--nchw]
                          [--c]

Models: `bundled` (models/fashion_cnn.onnx), `resnet50` (the ONNX wheel's light ResNet-50, its
constant-fill weights perturbed, see support.model_zoo), `mobilenetv2`
(tools/export_mobilenetv2.py, random weights), any name of tools/export_zoo.py (torchvision
with random weights, its opset-17 TorchScript export, exported on first use into --zoo-dir by
`QCOMPILER_EXPORT_PYTHON`, default this interpreter, which then needs the `[export]` extra),
or a path to any ONNX file (calibration: --calib, else 16 standard-normal samples). Symbolic
input dims are fixed to batch 1 and --size x --size. Ratios > 1 mean qcompiler is faster.
Runtimes are timed in turns (`metrics.median_latencies_ms`), so a slow spell of a shared
machine falls on all of them. "workspace" is the C library's at 1 thread, "/ live" its ratio
to the peak of live activation bytes.

OpenVINO (`pip install -e '.[bench]'`; the columns read n/a without it) compiles each file for
"CPU" with INFERENCE_NUM_THREADS = the thread count, PERFORMANCE_HINT LATENCY, NUM_STREAMS 1,
its input reshaped to the static shape, and for the float model INFERENCE_PRECISION_HINT f32
(else it may pick bf16 on AMX machines).

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
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_mobilenetv2 import build as build_mobilenetv2  # noqa: E402
from export_zoo import DEFAULT_OUT as ZOO_DIR  # noqa: E402
from export_zoo import ZOO, calib_path, onnx_path  # noqa: E402

from qcompiler.api import compile_to_dir  # noqa: E402
from qcompiler.evaluation.metrics import median_latencies_ms  # noqa: E402
from qcompiler.relax_access import bindings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support
from support.model_zoo import light_model_path, perturb_weights  # noqa: E402

from qcompiler.backend.c_binding import CLibrary  # noqa: E402
from qcompiler.backend.runtime import CompiledModel, set_threads  # noqa: E402
from qcompiler.frontend.onnx_import import load_onnx  # noqa: E402
from qcompiler.numerics.weight_layout import canonical  # noqa: E402
from qcompiler.relax_access import const_array, is_const, op_name, shape_of  # noqa: E402
from qcompiler.tuning.tune import table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("bundled", "resnet50", "mobilenetv2")
ZOO_OPSET = 17


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, data: np.ndarray) -> None:
        self.items = iter([{name: data[i:i + 1]} for i in range(len(data))])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def export_zoo_model(name: str, out: Path, size: int) -> tuple[Path, Path]:
    """tools/export_zoo.py `name` (opset 17) with `size` x `size` calibration images, exported
    unless it is in `out` already."""
    model, calib = onnx_path(out, name, ZOO_OPSET), calib_path(out, name, size)
    if not (model.exists() and calib.exists()):
        python = os.environ.get("QCOMPILER_EXPORT_PYTHON") or sys.executable
        subprocess.run([python, str(ROOT / "tools" / "export_zoo.py"), name, "--out", str(out),
                        "--opset", str(ZOO_OPSET), "--calib-size", str(size)], check=True)
    return model, calib


def fixed_shape(model: Path, size: int) -> list[int]:
    """The first input's shape, a symbolic batch as 1 and symbolic H, W as `size`."""
    dims = onnx.load(str(model), load_external_data=False).graph.input[0].type.tensor_type \
        .shape.dim
    return [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else size)
            for i, d in enumerate(dims)]


def _for_every_runtime(path: Path, tmp: Path) -> Path:
    """`path`, or a copy in `tmp` that every runtime takes: at opset 13 where it is older (ORT's
    quantize_static writes per-axis DequantizeLinear, opset 13, into any file), without graph
    inputs no node reads (tf2onnx lists folded Keras constants as inputs; the runtimes would
    ask for values). All the runtimes then read the same file."""
    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    used = {i for n in model.graph.node for i in n.input}
    if opset >= 13 and all(i.name in used for i in model.graph.input):
        return path
    if opset < 13:
        model = onnx.version_converter.convert_version(model, 13)
    keep = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    out = tmp / f"{path.stem}_runtimes.onnx"
    onnx.save(model, str(out))
    return out


def prepare(name: str, tmp: Path, size: int = 224, calib: Path | None = None,
            zoo_dir: Path = ZOO_DIR) -> tuple[Path, Path]:
    """(model.onnx, calib.npz) for one benchmark model: a name, a zoo name or an ONNX path."""
    if name == "bundled":
        return ROOT / "models" / "fashion_cnn.onnx", ROOT / "models" / "fashion_calib.npz"
    if name in ZOO:
        return export_zoo_model(name, zoo_dir, size)
    if name.endswith(".onnx"):
        path = _for_every_runtime(Path(name), tmp)
        if calib is None:
            first = onnx.load(str(path), load_external_data=False).graph.input[0].name
            calib = tmp / f"{path.stem}_calib.npz"
            rng = np.random.default_rng(0)
            np.savez(calib, **{first: rng.standard_normal(
                (16, *fixed_shape(path, size)[1:])).astype(np.float32)})
        return path, calib
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


def openvino_runner(path: str, threads: int, x: np.ndarray, f32: bool):
    """A call that runs `path` on OpenVINO's CPU plugin on `x` (None without openvino)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    model = core.read_model(path)
    model.reshape({model.inputs[0].any_name: ov.PartialShape(list(x.shape))})
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1}
    if f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    try:
        request = core.compile_model(model, "CPU", config).create_infer_request()
    except RuntimeError as e:  # OpenVINO's own transformations can refuse a valid file
        print(f"{Path(path).name}: OpenVINO {'float' if f32 else 'int8'} failed to compile "
              f"({str(e).strip().splitlines()[-1][:160]}); its column reads n/a")
        return None
    return lambda: request.infer({0: x})[0]


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64)
                                                                      ** 2)) / noise)


def layer_ops(quantized: tvm.IRModule) -> dict[str, tuple[str, str, int]]:
    """kernel symbol -> (op, shape text, int8 ops per call) for conv2d and dense kernels (and
    convs fused with an add or a table, whose time includes it)."""
    out = {}
    for b in bindings(quantized["main_int"]):
        if op_name(b.value) != "relax.call_tir":
            continue
        prim = quantized[b.value.args[0]]
        kind = str(prim.attrs["qcompiler.op"])
        if kind not in ("conv2d", "conv2d_add", "conv2d_lut", "dense"):  # (fused: counted)
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
            + {"conv2d_add": " + add", "conv2d_lut": " + table"}.get(kind, "")
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
                layers: bool, tuning: dict, nchw: bool = False, size: int = 224,
                calib: Path | None = None, zoo_dir: Path = ZOO_DIR,
                c_rows: list | None = None) -> list[tuple]:
    """`tuning`: CompileConfig options (tune_trials, tuning_db); when given, a second
    qcompiler library built with them is measured beside the untuned one. `nchw`: also one
    built with `blocked_layout=False`. `c_rows`: also time the C library (libNAME.so, its
    own pthreads pool) at each thread count, checked bit for bit against the TVM module;
    rows (model, threads, TVM ms, C ms) are appended to it."""
    model, calib = prepare(name, tmp, size, calib, zoo_dir)
    name = Path(name).stem if name.endswith(".onnx") else name
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
    # ORT's recommended pre-processing (shape inference, BatchNormalization fused into Conv):
    # without it, an unfused BatchNormalization gets per-axis Q/DQ that OpenVINO crashes on.
    prepared = str(tmp / f"{name}_ort_prepared.onnx")
    try:
        quant_pre_process(str(model), prepared, skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - its shape inference refuses some valid files
        print(f"{name}: ORT's quant_pre_process failed ({type(exc).__name__}); quantizing the "
              "file as it is")
        prepared = str(model)
    quantize_static(prepared, int8_path, _Reader(spec["name"], data[data.files[0]]),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    q = lib.quantize_inputs(x)
    rows = []
    for n in threads:
        f32, i8 = _session(str(model), n), _session(int8_path, n)
        ov_f32, ov_i8 = (openvino_runner(p, n, x, f) for p, f in ((str(model), True),
                                                                   (int8_path, False)))
        set_threads(n)
        feeds = {spec["name"]: x}
        if ov_f32 is not None and ov_i8 is not None and n == threads[0]:  # the same inputs reach each runtime
            print(f"{name}: output SQNR, OpenVINO vs ONNX Runtime: float "
                  f"{_sqnr(f32.run(None, feeds)[0], ov_f32()):.1f} dB, int8 (same QDQ file) "
                  f"{_sqnr(i8.run(None, feeds)[0], ov_i8()):.1f} dB")
        timed = {"f32": lambda s=f32, f=feeds: s.run(None, f),
                 "i8": lambda s=i8, f=feeds: s.run(None, f),
                 "ov_f32": ov_f32, "ov_i8": ov_i8, "ours": lambda: lib.run_int(*q),
                 "tuned": (lambda: tuned_lib.run_int(*q)) if tuned else None,
                 "flat": (lambda: flat.run_int(*q)) if flat else None}
        if c_rows is not None:  # the C library at n threads, and at 1 in the same turns
            clibs = {"c": CLibrary(tmp / f"{name}_q", n)}
            if n > 1:
                clibs["c1"] = CLibrary(tmp / f"{name}_q", 1)
            for clib in clibs.values():
                if not all(np.array_equal(a, b)
                           for a, b in zip(clib.run_int(*q), lib.run_int(*q))):
                    raise SystemExit(f"{name}: the C library differs from the TVM module")
            timed.update({k: (lambda c=c: c.run_int(*q)) for k, c in clibs.items()})
        got = median_latencies_ms({k: f for k, f in timed.items() if f is not None}, runs)
        ms = [got.get(k) for k in ("f32", "i8", "ov_f32", "ov_i8", "ours", "tuned", "flat")]
        sa = json.loads((tmp / f"{name}_q" / "model.json").read_text())["standalone"]
        workspace = sa["workspace_bytes"] / max(sa["live_activation_bytes"], 1)
        rows.append((name, n, *ms, compile_s, sa["workspace_bytes"], workspace))
        if c_rows is not None:
            c_rows.append((name, n, got["ours"], got["c"], got.get("c1", got["c"])))
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
        print(f"\n{name}: every kernel by op at 1 thread (ms; layout conversions included)")
        for op, (ms_op, calls) in sorted(op_times(compiled.quantized, per).items(),
                                         key=lambda kv: -kv[1][0]):
            print(f"  {op:16s} {ms_op:8.3f} ms in {calls} kernel(s)")
    return rows


def op_times(quantized: tvm.IRModule, per: dict[str, float]) -> dict[str, tuple[float, int]]:
    """op (`qcompiler.op`, "other" for kernels without one, e.g. a concat) -> (ms, kernels) of
    `kernel_times`' medians (a kernel called twice counts once): where the time goes beyond
    the convs."""
    ops = {str(f.attrs["global_symbol"]): str(f.attrs.get("qcompiler.op", "other"))
           for f in quantized.functions.values()
           if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and "global_symbol" in f.attrs}
    out: dict[str, tuple[float, int]] = {}
    for sym, s in per.items():
        ms_op, calls = out.get(ops.get(sym, "other"), (0.0, 0))
        out[ops.get(sym, "other")] = (ms_op + 1e3 * s, calls + 1)
    return out


def print_table(rows: list, runs: int, tuning: bool, nchw: bool) -> None:
    """The side-by-side table of bench_model's rows."""

    def ms(t: float | None) -> str:
        return f"{t:9.3f}" if t is not None else f"{'n/a':>9s}"

    def ratio(t: float | None, ours: float) -> str:
        return f"{t / ours:7.2f}x" if t is not None else f"{'n/a':>8s}"

    print(f"\nmedian of {runs} runs, batch 1, ms (ratios: their time / qcompiler time; "
          "ORT = ONNX Runtime, OV = OpenVINO)")
    print(f"  {'model':18s} {'threads':>7s} {'ORT f32':>9s} {'ORT int8':>9s} {'OV f32':>9s} "
          f"{'OV int8':>9s} {'qcompiler':>9s} {'ORT f32':>8s} {'ORT int8':>8s} {'OV f32':>8s} "
          f"{'OV int8':>8s} {'compile s':>9s} {'workspace':>10s} {'/ live':>6s}"
          + (f" {'tuned':>8s} {'vs float':>9s} {'vs int8':>8s}" if tuning else "")
          + (f" {'NCHW':>8s} {'layout gain':>11s}" if nchw else ""))
    for name, n, f32, i8, ov_f32, ov_i8, ours, tuned, flat, compile_s, ws, ws_live in rows:
        print(f"  {name:18s} {n:7d} {ms(f32)} {ms(i8)} {ms(ov_f32)} {ms(ov_i8)} {ms(ours)} "
              f"{ratio(f32, ours)} {ratio(i8, ours)} {ratio(ov_f32, ours)} "
              f"{ratio(ov_i8, ours)} {compile_s:9.1f} {ws / 2**20:7.2f} MiB {ws_live:5.2f}x"
              + (f" {tuned:8.3f} {f32 / tuned:8.2f}x {i8 / tuned:7.2f}x" if tuned else "")
              + (f" {flat:8.3f} {flat / ours:10.2f}x" if flat else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", metavar="MODEL",
                    help=f"any of {', '.join(MODELS + ZOO)}, or an ONNX path "
                         f"(default: {', '.join(MODELS)})")
    ap.add_argument("--size", type=int, default=224,
                    help="height and width where the model leaves them symbolic (default 224)")
    ap.add_argument("--calib", type=Path, default=None, metavar="FILE.npz",
                    help="calibration data for an ONNX path (default: random)")
    ap.add_argument("--zoo-dir", type=Path, default=ZOO_DIR,
                    help=f"where zoo models are exported (default {ZOO_DIR})")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="thread counts to measure (default: 1 and all cores)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    ap.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                    help="also measure a library tuned with this many trials per kernel")
    ap.add_argument("--tuning-db", default=None, metavar="DIR",
                    help="also measure a library built from (and tuned into) this database")
    ap.add_argument("--nchw", action="store_true",
                    help="also measure a library built without the blocked (NCHW16c) layout")
    ap.add_argument("--c", action="store_true",
                    help="also time the runtime-free C library beside the TVM module")
    args = ap.parse_args()
    unknown = [m for m in args.models if m not in MODELS + ZOO and not m.endswith(".onnx")]
    if unknown:
        ap.error(f"unknown model {', '.join(unknown)}: choose from "
                 f"{', '.join(MODELS + ZOO)} or give an .onnx path")
    tuning = {"tune_trials": args.tune, "tuning_db": args.tuning_db} \
        if args.tune or args.tuning_db else {}
    cores = os.cpu_count() or 1
    threads = args.threads or ([1] if cores == 1 else [1, cores])
    peak = vnni_peak_ops()
    rows: list = []
    c_rows: list | None = [] if args.c else None
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models or MODELS:
            got = bench_model(name, Path(tmp), args.runs, threads, peak, not args.no_layers,
                              tuning, args.nchw, args.size, args.calib, args.zoo_dir, c_rows)
            print_table(got, args.runs, bool(tuning), args.nchw)  # kept if a later model dies
            rows += got
    print_table(rows, args.runs, bool(tuning), args.nchw)
    if c_rows:
        print("\nthe C library (libNAME.so, its pthreads pool) beside the TVM module, ms")
        print(f"  {'model':18s} {'threads':>7s} {'TVM':>9s} {'C':>9s} {'C / TVM':>8s} "
              f"{'C at 1 thread':>13s} {'C speed-up':>10s}")
        for name, n, tvm_ms, c_ms, c1_ms in c_rows:  # c1: timed in the same turns as C
            print(f"  {name:18s} {n:7d} {tvm_ms:9.3f} {c_ms:9.3f} {c_ms / tvm_ms:7.2f}x "
                  f"{c1_ms:13.3f} {c1_ms / c_ms:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
