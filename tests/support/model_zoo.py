"""The ONNX wheel's light model zoo (untrained weights): compile, check, measure.

Used by `tools/zoo.py` (figures) and `tests/test_zoo.py` (assertions). The weights are
constant fills (every channel alike, so a network's output is nearly uniform and quantizes
exactly); each float weight is multiplied by a fixed random factor in [0.5, 1.5] so channels
differ while signs and magnitudes (and batch-norm variances) stay what the model had. Accuracy
means nothing here; the output SQNR, float model (ONNX Runtime) vs the integer library's
dequantized output, on the logits (a final Softmax is dropped), says how much the quantization
changed the result.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")
# Layers that must be integer in every zoo model (the "conv, pool, add and concat").
MUST_BE_INTEGER = frozenset({"conv2d", "dense", "max_pool2d", "avg_pool2d", "mean", "add",
                             "concat"})


def light_model_path(name: str) -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / \
        f"light_{name}.onnx"


@dataclass
class ZooResult:
    name: str
    compile_s: float
    layers: list[dict]
    bit_exact: bool
    sqnr_db: float
    float_ops: list[str] = field(default_factory=list)

    @property
    def integer_fraction(self) -> float:
        return sum(x["status"] == "integer" for x in self.layers) / max(len(self.layers), 1)


def drop_final_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """The logits as the output: SQNR on a saturated softmax measures argmax flips, not error."""
    last = model.graph.node[-1] if model.graph.node else None
    if last is None or last.op_type != "Softmax" or len(model.graph.output) != 1:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[-1]
    out.graph.output[0].name = last.input[0]
    return out


def perturb_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Each float initializer times a random factor in [0.5, 1.5] (deterministic)."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 1:
            w = (w * rng.uniform(0.5, 1.5, w.shape)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    return out


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-300) / noise)


def check_model(name: str, out: Path, n_calib: int = 2, seed: int = 0) -> ZooResult:
    """Compile `light_<name>` (weights perturbed) for x86 with random calibration into `out`,
    run the library and the reference on a fresh input (bit for bit), and compare the float
    output with ORT's. The perturbed model is saved beside `out`. Fails (AssertionError) if a
    target rule raised on a layer, which the compile would hide behind the portable kernel."""
    import onnxruntime as ort

    from qcompiler.api import write_outputs
    from qcompiler.backend.runtime import CompiledModel
    from qcompiler.config import CompileConfig
    from qcompiler.frontend.onnx_import import graph_inputs, load_onnx
    from qcompiler.graph_meta import schedule_fallbacks
    from qcompiler.pipeline import compile_model
    from qcompiler.reference import Reference

    path = out.parent / f"{name}_perturbed.onnx"
    onnx.save(drop_final_softmax(perturb_weights(load_onnx(light_model_path(name)), seed)),
              str(path))
    t = time.perf_counter()
    model = load_onnx(path)
    inputs = graph_inputs(model, 1)
    rng = np.random.default_rng(seed)
    calib = {i.name: rng.standard_normal((n_calib, *i.shape[1:])).astype(np.float32)
             for i in inputs}
    compiled = compile_model(model, calib, CompileConfig(), progress=False)
    fallbacks = schedule_fallbacks(compiled.quantized)  # a target rule raised: a bug to fix
    assert not fallbacks, f"{name}: " + "; ".join(f.summary() for f in fallbacks)
    write_outputs(compiled, out)
    compile_s = time.perf_counter() - t
    lib = CompiledModel(out)
    x = [rng.standard_normal(i.shape).astype(np.float32) for i in inputs]
    q = lib.quantize_inputs(*x)
    got, want = lib.run_int(*q), Reference(compiled.quantized, compiled.tvm_target).run(*q)
    exact = all(g.dtype == w.dtype and np.array_equal(g, w) for g, w in zip(got, want))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the zoo files carry unused initializers ORT warns about
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    f_ref = sess.run(None, {i.name: v for i, v in zip(inputs, x)})[0]
    f_int = lib.run(*x)[0]
    layers = lib.meta["layers"]
    return ZooResult(name, compile_s, layers, exact, _sqnr_db(f_ref.reshape(f_int.shape), f_int),
                     sorted({x["op"] for x in layers if x["status"] == "float"}))
