"""TensorFlow exports compute in NHWC: tf2onnx wraps every Conv in a Transpose pair
(NHWC -> NCHW -> NHWC) and, where its own optimizer cannot push them through (batch norm
written as a Mul and an Add by per-channel constants on the last axis, ReduceMean over axes
1 and 2, Pad in NHWC), leaves them there: a Keras MobileNetV3 arrives with two Transposes per
Conv, each a full copy of an activation. ONNX Runtime's transpose optimizer (part of its
basic graph optimizations, which write plain ONNX ops) pushes them through elementwise ops,
pads, reductions and concats and cancels the inverse pairs; it is applied to such files
only, so every other file keeps its nodes as written.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

# NCHW <-> NHWC: the two perms of a layout conversion.
LAYOUT_PERMS = ((0, 3, 1, 2), (0, 2, 3, 1))


def layout_transposes(model: onnx.ModelProto) -> int:
    """How many Transposes convert between NHWC and NCHW."""
    return sum(1 for n in model.graph.node if n.op_type == "Transpose" and tuple(
        next((a.ints for a in n.attribute if a.name == "perm"), ())) in LAYOUT_PERMS)


def sink_layout_transposes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its layout Transposes pushed through and cancelled, where it has more than
    an input and an output conversion (else `model` itself). Float models only: a QDQ model's
    Q/DQ placement is the quantization the user chose."""
    if layout_transposes(model) <= 2 or any(
            n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return model
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst)
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - the importer reports what is wrong, by node name
            return model
        out = onnx.load(str(dst))
    if any(n.domain not in ("", "ai.onnx") for n in out.graph.node) \
            or layout_transposes(out) >= layout_transposes(model):
        return model
    return out
