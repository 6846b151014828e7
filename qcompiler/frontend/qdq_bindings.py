"""Which Relax binding is which ONNX tensor, so a QDQ model's qparams reach the right binding.

TVM's frontend drops tensor names and fusion merges nodes, but values survive: we run the
float graph's probe (every tensor binding as an output, as calibration does) and the stripped
ONNX graph (every node output as an output, in ONNX Runtime) on the same input, and pair each
binding with the ONNX tensor of the same shape whose values agree to float rounding.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from tvm import relax

from qcompiler.frontend.onnx_import import ModelInput
from qcompiler.frontend.qdq_import import QDQModel
from qcompiler.numerics.calibrate import probe_module
from qcompiler.numerics.qparams import QParams, with_dtype

# Two float implementations of the same graph agree to this relative error; distinct tensors
# of one graph on a random input do not.
MATCH_RTOL = 1e-3


def _onnx_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node output of the float ONNX graph on these inputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    names = [o for n in m.graph.node for o in n.output if o and o not in have]
    m.graph.output.extend(onnx.ValueInfoProto(name=o) for o in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    return dict(zip(outs, sess.run(outs, feeds)))


def _binding_values(float_mod: tvm.IRModule, feeds: list[np.ndarray],
                    target: tvm.target.Target) -> list[np.ndarray]:
    probe, _ = probe_module(float_mod)
    vm = relax.VirtualMachine(tvm.compile(probe, target), tvm.cpu())
    return [r.numpy() for r in vm["main"](*[tvm.runtime.tensor(x) for x in feeds])]


def binding_tensor_names(model: onnx.ModelProto, float_mod: tvm.IRModule,
                         inputs: list[ModelInput], target: tvm.target.Target,
                         prefer: frozenset[str] = frozenset(), seed: int = 0
                         ) -> list[str | None]:
    """The ONNX tensor name of each tensor binding of `main` (None where none matches); of
    equal tensors (an Identity's input and output) one in `prefer` is taken."""
    rng = np.random.default_rng(seed)
    feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in inputs}
    onnx_vals = _onnx_values(model, feeds)
    names: list[str | None] = []
    for v in _binding_values(float_mod, [feeds[i.name] for i in inputs], target):
        best, best_key = None, (MATCH_RTOL, False)
        for name, ref in onnx_vals.items():
            if ref.shape != v.shape or ref.dtype != v.dtype:
                continue
            err = float(np.abs(ref - v).max(initial=0.0)) / \
                max(float(np.abs(ref).max(initial=0.0)), 1e-30)
            key = (err, name not in prefer)
            if key < best_key:
                best, best_key = name, key
        names.append(best)
    return names


def given_qparams(qdq: QDQModel, float_mod: tvm.IRModule, inputs: list[ModelInput],
                  act_dtype: str, target: tvm.target.Target
                  ) -> tuple[list[QParams | None], list[QParams | None], list[str | None]]:
    """(graph inputs, tensor bindings) qparams as the QDQ model gives them, stored as the
    target's activation dtype, with each binding's ONNX tensor name; None where not given."""
    acts = qdq.activations
    names = binding_tensor_names(qdq.model, float_mod, inputs, target, frozenset(acts))

    def get(name: str | None) -> QParams | None:
        if name not in acts:
            return None
        qp = acts[name]
        return qp if qp.dtype == "int16" else with_dtype(qp, act_dtype)  # 8-bit: the target's

    return [get(i.name) for i in inputs], [get(n) for n in names], names
