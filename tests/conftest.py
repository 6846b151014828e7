"""Shared helpers: build small ONNX graphs, compile them, compare with the reference."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = ROOT / "models" / "fashion_cnn.onnx"
BUNDLED_CALIB = ROOT / "models" / "fashion_calib.npz"

# ---- CPU features ------------------------------------------------------------------------
# Code for an ISA is built (LLVM cross-compiles) on every machine; only running it needs the
# CPU. Tests build for an explicit target and call `requires_cpu_for(target)` (or
# `requires_cpu(flag)`) right before they execute what they built.

# x86 AVX-512 VNNI (+ VBMI, as `x86_target` gives it on Ice Lake, Sapphire Rapids, Zen 4),
# whatever this machine has.
VNNI_TARGET = {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vnni", "+avx512vbmi"]}
AVX2_TARGET = {"kind": "llvm", "mcpu": "x86-64-v3"}

# /proc/cpuinfo flags an x86 `mcpu` level or `mattr` entry needs (the x86-64 psABI levels).
_ISA_FLAGS = {
    "x86-64-v3": ("avx2", "fma", "bmi2", "movbe", "f16c"),
    "x86-64-v4": ("avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512cd", "avx512dq",
                  "avx512vl"),
    "+avx512vnni": ("avx512_vnni",),
    "+avx512vbmi": ("avx512vbmi",),
    "+amx-tile": ("amx_tile",),
    "+amx-int8": ("amx_int8",),
}


def cpu_flags() -> frozenset[str]:
    """The flags of this CPU as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines()
                           if line.startswith("flags")), []))


def cpu_has(flag: str) -> bool:
    return flag in cpu_flags()


def requires_cpu(*flags: str) -> None:
    """Skip the rest of the test unless this CPU has every flag; call it where the test
    starts executing code built for them (after building and inspecting it)."""
    missing = [f for f in flags if not cpu_has(f)]
    if missing:
        pytest.skip(f"this CPU has no {', '.join(missing)} (the code for it is built and "
                    "checked, not run)")


def requires_cpu_for(tvm_target: dict) -> None:
    """`requires_cpu` with the flags an x86 TVM target dict's `mcpu` and `mattr` need."""
    names = [tvm_target["mcpu"]] if "mcpu" in tvm_target else []
    flags = [f for name in names + list(tvm_target.get("mattr", [])) for f in _ISA_FLAGS[name]]
    requires_cpu(*dict.fromkeys(flags))


def vnni_target():  # -> qcompiler.targets.target.Target
    """The x86 target with AVX-512 VNNI, whether or not this machine has it."""
    import dataclasses

    from qcompiler.targets.x86 import x86_target

    return dataclasses.replace(x86_target(), tvm_target=VNNI_TARGET)


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


@pytest.fixture
def no_torch_in_subprocesses(tmp_path_factory: pytest.TempPathFactory,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes the test starts (TVM's RPC tracker and servers, MetaSchedule's builder and
    runner workers, a compile in a new process) find a `torch` that cannot be imported: TVM's
    FFI imports torch at start-up wherever it is installed (the export extra installs it),
    5-10 s a process on the CI machine, and none of them uses it (`qcompile` hides it the same
    way: `cli._import_tvm_without_torch`)."""
    stub = tmp_path_factory.getbasetemp() / "no_torch"
    (stub / "torch").mkdir(parents=True, exist_ok=True)
    (stub / "torch" / "__init__.py").write_text(
        "raise ImportError('torch is hidden from the processes of this test "
        "(tests/conftest.py)')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(stub), *filter(None, [os.environ.get("PYTHONPATH")])]))
