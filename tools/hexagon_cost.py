"""Packets executed under qemu-hexagon (or instructions under qemu-aarch64), per kernel and
in total, for a model or one layer.

    python tools/hexagon_cost.py MODEL.onnx --calib CALIB.npz [--compare]
    python tools/hexagon_cost.py --layer dense64|conv3x3 [--compare]
    ... [--tuning-db DIR]    # also a "tuned" column (records from qcompile --tune)
    ... --target arm         # instructions of the aarch64 build (sdot), and its tuned column

Variants (`--compare` runs them all; otherwise vrmpy only):
  vrmpy         the default compile: conv/dense on `vrmpy`, the other kernels HVX-vectorized
  vector        plain-vectorized: conv/dense on 32 int32 lanes, no `vrmpy`
                (`schedules/hvx_plain.py`), the other kernels as in vrmpy
  portable+hvx  the portable kernels, HVX enabled, LLVM's own vectorization only
  scalar        the portable kernels without HVX
`--layer dense64`: a Gemm of a 64x64 input by 64x64 weights (batch 64, 64 in, 64 out);
`--layer conv3x3`: the bundled model's conv2 (3x3, 16 -> 32 channels, 14x14, with its batch
norm and ReLU6), cut out of models/fashion_cnn.onnx and calibrated on the activations the
bundled calibration set gives it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qcompiler.schedules import apply_schedules
from qcompiler.schedules.hexagon.plain import PLAIN_VECTOR_RULES
from qcompiler.targets.arm import ARM
from qcompiler.targets.hexagon import HEXAGON

from qcompiler.backend.emit import emit
from qcompiler.backend.hexagon_cost import count_packets, per_kernel
from qcompiler.config import CompileConfig
from qcompiler.frontend.onnx_import import graph_inputs
from qcompiler.frontend.static_shapes import resolve_inputs
from qcompiler.numerics.calibrate import load_calibration
from qcompiler.numerics.qparams import dtype_range
from qcompiler.pipeline import compile_model

ROOT = Path(__file__).resolve().parent.parent
SCALAR = dataclasses.replace(HEXAGON, tvm_target={**HEXAGON.tvm_target, "mattr": ["-hvx"]},
                             cc=(*HEXAGON.cc[:-1], "-mcpu=hexagonv68"))
# variant -> (compile with the target's schedules, rules applied afterwards, target)
VARIANTS = {
    "scalar": (False, None, SCALAR),
    "portable+hvx": (False, None, HEXAGON),
    "vector": (False, PLAIN_VECTOR_RULES, HEXAGON),
    "vrmpy": (True, None, HEXAGON),
}
# per target: its variants, the first its default compile (also the "tuned" column's base)
TARGET_VARIANTS = {"hexagon": {"vrmpy": VARIANTS["vrmpy"], **VARIANTS},
                   "arm": {"sdot": (True, None, ARM)}}  # arm: instructions, not packets
CONV_LAYER = ("/pool/MaxPool_output_0", "/conv2/conv2.2/Clip_output_0")  # conv2: BN, ReLU6


def dense64(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Gemm y = x W^T + b with x 64x64, W 64x64: the 64x64x64 dense of the issue."""
    w = (rng.standard_normal((64, 64)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(64) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "dense64",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64, 64])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {"x": rng.standard_normal((128, 64)).astype(np.float32)}


def conv3x3(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The bundled model's conv2 alone, calibrated on its real input activations."""
    from onnx.reference import ReferenceEvaluator

    path = ROOT / "models" / "fashion_cnn.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        onnx.utils.extract_model(str(path), f"{tmp}/conv.onnx", [CONV_LAYER[0]], [CONV_LAYER[1]])
        layer = onnx.load(f"{tmp}/conv.onnx")
    full = onnx.load(str(path))
    head = helper.make_model(full.graph, opset_imports=full.opset_import)
    head.graph.output.extend([helper.make_value_info(CONV_LAYER[0], helper.make_tensor_type_proto(
        onnx.TensorProto.FLOAT, None))])
    images = next(iter(np.load(ROOT / "models" / "fashion_calib.npz").values()))[:64]
    acts = ReferenceEvaluator(head).run([CONV_LAYER[0]], {full.graph.input[0].name: images})[0]
    dim = layer.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = "batch"
    return layer, {layer.graph.input[0].name: acts.astype(np.float32)}


LAYERS = {"dense64": dense64, "conv3x3": conv3x3}


def measure(model: onnx.ModelProto, calib: dict[str, np.ndarray], variant: str,
            tuning_db: str | None = None, target_name: str = "hexagon") -> dict[str, int]:
    """Packets per kernel (and "<total>") for one run on the first calibration sample(s).
    `tuning_db`: the "tuned" variant's database (the default compile's dot-product kernels
    rebuilt from its records)."""
    variants = TARGET_VARIANTS[target_name]
    schedules, rules, target = variants[next(iter(variants)) if variant == "tuned" else variant]
    inputs = graph_inputs(model, None, samples=calib)
    config = CompileConfig(target=target.name, schedules=schedules,
                           tuning_db=tuning_db if variant == "tuned" else None)
    compiled = compile_model(model, calib, config, progress=False, target=target)
    if rules is not None:
        compiled.quantized = apply_schedules(compiled.quantized, target, rules)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        emit(compiled, None, out)
        x = next(iter(calib.values()))[: inputs[0].shape[0]]
        qp = compiled.in_qparams[0]
        lo, hi = dtype_range(qp.dtype)
        q = np.clip(np.rint(x / np.float32(qp.scale)) + qp.zero_point, lo, hi).astype(qp.dtype)
        return per_kernel(count_packets(out, q, target.run_prefix))


def table(results: dict[str, dict[str, int]], kernels_only: bool) -> str:
    """One row per kernel (largest first in the last variant), the total, and each
    variant's packets over the last one's. `kernels_only`: without the driver's own
    functions (and the ratio of the kernels alone)."""
    variants = list(results)
    last = results[variants[-1]]
    names = sorted({k for r in results.values() for k in r if k != "<total>"},
                   key=lambda k: -last.get(k, 0))
    if kernels_only:
        names = [n for n in names if not n.startswith(("qc_", "model_"))]
    rows = [f"{'kernel':28s}" + "".join(f"{v:>16s}" for v in variants)]
    for name in names if kernels_only else [*names, "<total>"]:
        rows.append(f"{name:28s}" + "".join(f"{results[v].get(name, 0):16,d}" for v in variants))
    shown = {v: sum(results[v].get(n, 0) for n in names) if kernels_only
             else results[v]["<total>"] for v in variants}
    rows.append(f"{'ratio to ' + variants[-1]:28s}" + "".join(
        f"{shown[v] / shown[variants[-1]]:15.1f}x" for v in variants))
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, nargs="?")
    ap.add_argument("--calib", type=Path)
    ap.add_argument("--layer", choices=sorted(LAYERS))
    ap.add_argument("--compare", action="store_true", help="every variant, not only vrmpy")
    ap.add_argument("--tuning-db", default=None, metavar="DIR",
                    help="add a 'tuned' column: vrmpy kernels from this tuning database "
                         "(qcompile --target hexagon --tune N --tuning-db DIR)")
    ap.add_argument("--target", choices=sorted(TARGET_VARIANTS), default="hexagon",
                    help="arm: instructions executed by the aarch64 build under qemu-aarch64")
    args = ap.parse_args()
    if (args.model is None) == (args.layer is None):
        ap.error("give a MODEL (with --calib) or --layer, not both")
    if args.layer:
        model, calib = LAYERS[args.layer](np.random.default_rng(0))
    else:
        if args.calib is None:
            ap.error("a MODEL needs --calib")
        model = onnx.load(str(args.model))
        # symbolic dims (a real export's) fixed by the calibration data, as qcompile does
        calib = load_calibration(args.calib, resolve_inputs(model, None, partial=True))
    variants = list(VARIANTS) if args.compare and args.target == "hexagon" \
        else list(TARGET_VARIANTS[args.target])[:1]
    if args.tuning_db:
        variants.append("tuned")
    results = {v: measure(model, calib, v, args.tuning_db, args.target) for v in variants}
    print(table(results, kernels_only=args.layer is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
