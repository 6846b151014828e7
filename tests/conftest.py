"""Shared helpers: build small ONNX graphs, compile them, compare with the reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = ROOT / "models" / "fashion_cnn.onnx"
BUNDLED_CALIB = ROOT / "models" / "fashion_calib.npz"


def make_model(nodes: list, inputs: dict[str, tuple], outputs: dict[str, tuple | None],
               initializers: dict[str, np.ndarray] | None = None, opset: int = 17
               ) -> onnx.ModelProto:
    """A checked ONNX model from nodes; outputs with shape None are left for inference."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) if s else
         helper.make_value_info(n, helper.make_tensor_type_proto(TensorProto.FLOAT, None))
         for n, s in outputs.items()],
        [numpy_helper.from_array(v.astype(np.float32), k)
         for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)  # fills the unknown output shapes
    onnx.checker.check_model(model)
    return model


def save_model(model: onnx.ModelProto, tmp: Path, name: str = "m.onnx") -> Path:
    path = tmp / name
    onnx.save(model, str(path))
    return path


def save_calib(arrays: dict[str, np.ndarray], tmp: Path, name: str = "calib.npz") -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def compile_and_compare(model: onnx.ModelProto, tmp: Path, calib: dict[str, np.ndarray],
                        n_checks: int = 3, seed: int = 0, **options: object):
    """Compile, then run the library and the reference on fresh inputs: equal bit for bit.

    Returns (compiled artifacts, loaded model) for further assertions.
    """
    from qcompiler.api import compile_to_dir

    mpath, cpath = save_model(model, tmp), save_calib(calib, tmp)
    out = tmp / "out"
    lib, compiled = compile_to_dir(mpath, cpath, out, **options)
    rng = np.random.default_rng(seed)
    feeds = [[(rng.standard_normal(spec["shape"]) * data.std() * 1.5 + data.mean())
              .astype(np.float32) for spec, data in zip(lib.inputs, calib.values())]
             for _ in range(n_checks)]
    check_against_reference(compiled, lib, feeds)
    return compiled, lib


def check_against_reference(compiled, lib, feeds: list[list[np.ndarray]]) -> None:
    """The library equals the reference bit for bit on each list of float inputs."""
    from qcompiler.reference import Reference

    ref = Reference(compiled.quantized, compiled.tvm_target)
    for inputs in feeds:
        q = lib.quantize_inputs(*inputs)
        got, want = lib.run_int(*q), ref.run(*q)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
        # The float entry point is quantize -> same integers -> dequantize.
        fl = lib.run(*inputs)
        for f, w, spec in zip(fl, want, lib.outputs):
            deq = (w.astype(np.int32) - spec["zero_point"]).astype(np.float32) \
                * np.float32(spec["scale"])
            np.testing.assert_array_equal(f, deq)


def relax_main(body, x_type) -> "tvm.IRModule":  # noqa: ANN001
    """A module whose main(x: x_type) returns `body(bb, x)`, built in one dataflow block."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", x_type)
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def run_relax(mod, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """main(x) of a float Relax module, built for this machine."""
    import tvm
    from tvm import relax

    exe = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
