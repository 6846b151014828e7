"""x86 kernels: conv/dense on `vpdpbusd` where the target has AVX-512 VNNI, and the portable
kernels on the AVX2 (x86-64-v3) fallback; both bit-exact against the reference."""
from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pytest
import tvm
from conftest import make_model
from onnx import helper
from tvm import relax

from qcompiler.calibrate import load_calibration
from qcompiler.config import CompileConfig
from qcompiler.emit import build, emit
from qcompiler.onnx_import import graph_inputs
from qcompiler.pipeline import compile_model
from qcompiler.reference import Reference
from qcompiler.targets.x86 import _cpu_flags, x86_target

AVX2 = dataclasses.replace(x86_target(), tvm_target={"kind": "llvm", "mcpu": "x86-64-v3"})


def _model(rng, cin=13, cout=40, k=3, hw=9, stride=2):
    w = (rng.standard_normal((cout, cin, k, k)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k],
                              strides=[stride, stride], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = {"w": w, "b": rng.standard_normal(cout).astype(np.float32),
             "fw": rng.standard_normal((10, cout)).astype(np.float32),
             "fb": rng.standard_normal(10).astype(np.float32)}
    return make_model(nodes, {"x": ("N", cin, hw, hw)}, {"y": None}, inits), (cin, hw, hw)


def _compile(model, shape, tmp_path, rng, target, batch=2):
    path = tmp_path / "c.npz"
    np.savez(path, x=rng.standard_normal((4, *shape)).astype(np.float32))
    inputs = graph_inputs(model, batch)
    calib = load_calibration(path, inputs)
    return compile_model(model, calib, CompileConfig(batch=batch), progress=False,
                         target=target), inputs


@pytest.mark.parametrize("target", ["vnni", "avx2"])
def test_bit_exact_on_both_isa_levels(target, tmp_path, rng):
    if target == "vnni" and "avx512_vnni" not in _cpu_flags():
        pytest.fail("this test machine is expected to have AVX-512 VNNI (shared/DESIGN.md)")
    model, shape = _model(rng)
    compiled, inputs = _compile(model, shape, tmp_path, rng,
                                x86_target() if target == "vnni" else AVX2)
    schedules = {str(f.attrs.get("qcompiler.schedule", "portable"))
                 for f in compiled.quantized.functions.values()
                 if isinstance(f, tvm.tirx.PrimFunc) and "qcompiler.op" in f.attrs}
    assert ("x86_vnni" in schedules) == (target == "vnni")
    vm = relax.VirtualMachine(build(compiled), tvm.cpu())
    ref = Reference(compiled.quantized, compiled.tvm_target)
    for _ in range(3):
        q = rng.integers(0, 256, inputs[0].shape).astype(np.uint8)
        np.testing.assert_array_equal(vm["main_int"](tvm.runtime.tensor(q)).numpy(),
                                      ref.run(q)[0])


def test_vnni_conv_kernel_uses_vpdpbusd(tmp_path, rng):
    model, shape = _model(rng)
    compiled, _ = _compile(model, shape, tmp_path, rng, x86_target())
    emit(compiled, None, tmp_path / "out")
    dis = subprocess.run(["objdump", "-d", str(tmp_path / "out" / "libmodel.a")],
                         capture_output=True, text=True, check=True).stdout
    bodies = dis.split("\n\n")
    conv = [b for b in bodies if "conv2d_compute_>:" in b]
    dense = [b for b in bodies if "dense_compute_>:" in b]
    assert conv and dense and all("vpdpbusd" in b for b in conv + dense)


def test_threads_split_the_work_and_keep_every_bit(tmp_path, rng):
    """The kernels' parallel loops give the same integers with 1 and 2 worker threads."""
    from qcompiler.runtime import CompiledModel, set_threads

    model, shape = _model(rng, cin=32, cout=48, hw=16, stride=1)
    compiled, inputs = _compile(model, shape, tmp_path, rng, x86_target())
    emit(compiled, build(compiled), tmp_path / "out")
    ref = Reference(compiled.quantized, compiled.tvm_target)
    q = rng.integers(0, 256, inputs[0].shape).astype(np.uint8)
    want = ref.run(q)[0]
    try:
        for n in (1, 2):
            lib = CompiledModel(tmp_path / "out", threads=n)
            np.testing.assert_array_equal(lib.run_int(q)[0], want)
    finally:
        set_threads(None)
    with pytest.raises(Exception, match="threads must be a positive integer"):
        set_threads(0)
