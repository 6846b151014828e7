"""fuse_conv_table: on ARM, Hexagon and x86 AVX2 a conv and the one-row table that takes its
output become one kernel, the table looked up in the conv's epilogue; a conv whose output
has another reader, or a table of a row per channel, is left alone; x86 with VNNI (where
`plan_layout` fuses in the blocked layout) is unchanged.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tvm
from conftest import AVX2_TARGET, VNNI_TARGET, make_model, requires_cpu_for
from onnx import helper
from qcompiler.passes.fuse_conv_table import fuse_conv_table
from qcompiler.targets.x86 import x86_target
from tvm import relax

from qcompiler.config import CompileConfig
from qcompiler.numerics.qparams import dtype_range
from qcompiler.pipeline import compile_model
from qcompiler.reference import Reference
from qcompiler.relax_access import bindings, op_name

AVX2 = dataclasses.replace(x86_target(), tvm_target=AVX2_TARGET)
VNNI = dataclasses.replace(x86_target(), tvm_target=VNNI_TARGET)


def _target(name: str):  # -> Target
    from qcompiler.targets import arm, hexagon

    return {"arm": arm.ARM, "hexagon": hexagon.HEXAGON, "avx2": AVX2, "vnni": VNNI}[name]


def _model(rng):
    """Convs followed by a table: a HardSwish, a written-out SiLU, a Sigmoid whose conv is
    read by a gate too, a PRelu (a table of a row per channel); channel counts off every
    rule's lane multiple (4, 8, 32), strides 2 and 1, 3x3 and 1x1."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c1"], ["h1"]),
             helper.make_node("Conv", ["h1", "w2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c2"], ["s2"]),
             helper.make_node("Mul", ["c2", "s2"], ["h2"]),  # SiLU, written out
             helper.make_node("Conv", ["h2", "w3"], ["c3"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c3"], ["s3"]),
             helper.make_node("GlobalAveragePool", ["s3"], ["g3"]),
             helper.make_node("Mul", ["c3", "g3"], ["a3"]),  # c3 has two readers: not fused
             helper.make_node("Conv", ["a3", "w4"], ["c4"], kernel_shape=[1, 1]),
             helper.make_node("PRelu", ["c4", "slope"], ["y"])]
    inits = {"w1": rng.standard_normal((20, 3, 3, 3)) * 0.4,
             "w2": rng.standard_normal((36, 20, 1, 1)) * 0.3,
             "w3": rng.standard_normal((12, 36, 3, 3)) * 0.1,
             "w4": rng.standard_normal((9, 12, 1, 1)) * 0.3,
             "slope": rng.uniform(0, 0.5, (9, 1, 1))}
    return make_model(nodes, {"x": (1, 3, 15, 13)}, {"y": None}, inits)


def _calib(rng) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((4, 3, 15, 13)).astype(np.float32)}


def _kernels(mod: tvm.IRModule) -> list[tuple[str, str]]:
    """(op, schedule) of each kernel `main_int` calls, in order."""
    out = []
    for b in bindings(mod["main_int"]):
        if isinstance(b.value, relax.Call) and op_name(b.value) == "relax.call_tir":
            func = mod[b.value.args[0]]
            out.append((str(func.attrs["qcompiler.op"]),
                        str(func.attrs.get("qcompiler.schedule", "portable"))))
    return out


@pytest.mark.parametrize("name", ["arm", "hexagon", "avx2"])
def test_a_conv_and_its_table_become_one_kernel(name, rng):
    """Before/after on the quantized graph (portable kernels): the two convs whose only
    reader is a one-row table are fused, the others not; the fused portable kernels, built
    for this CPU, compute the reference's numbers of the graph before."""
    target = _target(name)
    before = compile_model(_model(rng), _calib(rng), CompileConfig(schedules=False),
                           progress=False, target=target).quantized
    after = fuse_conv_table(target)(before)
    ops = [op for op, _ in _kernels(after)]
    assert [op for op, _ in _kernels(before)].count("lut") == 4
    assert ops.count("conv2d_lut") == 2 and ops.count("conv2d") == 2 and ops.count("lut") == 2
    fused = [f for f in after.functions.values()
             if isinstance(f, tvm.tirx.PrimFunc) and f.attrs["qcompiler.op"] == "conv2d_lut"]
    attrs = [json.loads(str(f.attrs["qcompiler.attrs"])) for f in fused]
    assert [a["lut"]["fn"] for a in attrs] == ["hardswish", "elementwise"]  # (SiLU's chain)
    assert all(a["strides"] and "conv_tensor" in a for a in attrs)
    assert len([gv for gv, f in after.functions.items()
                if isinstance(f, tvm.tirx.PrimFunc)]) == len(_kernels(after)) + 2  # (+ q/dq)
    vm = relax.VirtualMachine(tvm.compile(after, target="llvm"), tvm.cpu())
    ref = Reference(before)
    x = after["main_int"].params[0]
    lo, hi = dtype_range(str(x.ty.dtype))
    for _ in range(3):
        q = rng.integers(lo, hi + 1, [int(d) for d in x.ty.shape]).astype(str(x.ty.dtype))
        np.testing.assert_array_equal(vm["main_int"](tvm.runtime.tensor(q)).numpy(),
                                      ref.run(q)[0])
    # every tensor of the graph before, the fused convs' own outputs too (per-layer reports)
    want, got = ref.run_all(q), Reference(after).run_all(q)
    for tensor, value in want.items():
        np.testing.assert_array_equal(got[tensor], value)


def test_vnni_keeps_its_blocked_fusion(rng):
    """x86 with VNNI: the pass leaves the module alone (`plan_layout` fuses there)."""
    before = compile_model(_model(rng), _calib(rng), CompileConfig(schedules=False),
                           progress=False, target=VNNI).quantized
    assert fuse_conv_table(VNNI)(before).same_as(before)


def test_avx2_fused_kernels_equal_the_reference(rng):
    """The whole pipeline on AVX2: the fused convs on `vpmaddwd` with the lookup in the
    epilogue, bit-exact against the reference (run here: AVX2 CPUs only)."""
    from qcompiler.backend.emit import build

    compiled = compile_model(_model(rng), _calib(rng), CompileConfig(), progress=False,
                             target=AVX2)
    assert _kernels(compiled.quantized).count(("conv2d_lut", "x86_avx2")) == 2
    requires_cpu_for(AVX2_TARGET)
    vm = relax.VirtualMachine(build(compiled), tvm.cpu())
    ref = Reference(compiled.quantized, compiled.tvm_target)
    for _ in range(3):
        q = rng.integers(0, 256, (1, 3, 15, 13)).astype(np.uint8)
        np.testing.assert_array_equal(vm["main_int"](tvm.runtime.tensor(q)).numpy(),
                                      ref.run(q)[0])


@pytest.mark.parametrize("name", ["arm", "hexagon"])
def test_emulated_fused_kernels_equal_the_reference(name, tmp_path, rng):
    """ARM `sdot` and Hexagon `vrmpy` with the table in the epilogue: the C library under
    qemu, bit-exact against the reference (int8 activations on ARM index from -128)."""
    from qcompiler.api import compile_only, write_outputs
    from qcompiler.backend.runtime import StandaloneModel

    mpath, cpath = tmp_path / "m.onnx", tmp_path / "calib.npz"
    mpath.write_bytes(_model(rng).SerializeToString())
    np.savez(cpath, **_calib(rng))
    compiled = compile_only(mpath, cpath, tmp_path / "out", target=name)
    rule = {"arm": "arm_sdot", "hexagon": "hexagon_vrmpy"}[name]
    assert _kernels(compiled.quantized).count(("conv2d_lut", rule)) == 2
    write_outputs(compiled, tmp_path / "out")
    lib = StandaloneModel(tmp_path / "out")
    spec = lib.inputs[0]
    lo, hi = dtype_range(spec["dtype"])
    ref = Reference(compiled.quantized)
    for _ in range(2):
        q = rng.integers(lo, hi + 1, spec["shape"]).astype(spec["dtype"])
        np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])


@pytest.mark.parametrize("name", ["arm", "hexagon", "avx2"])
def test_fused_kernels_are_tuning_tasks(name, rng):
    """A fused conv is a task of its own (its table one of its constant operands), and the
    fixed schedule's trace, replayed, builds the kernel the compile built."""
    import tvm_ffi

    from qcompiler.tuning.tasks import extract_tasks

    target = _target(name)
    compiled = compile_model(_model(rng), _calib(rng), CompileConfig(), progress=False,
                             target=target)
    tasks = extract_tasks(compiled.quantized, target)
    fused = [t for t in tasks if t.op == "conv2d_lut"]
    assert [t.name.endswith("+table") for t in tasks] == [True, True, False, False]
    for task in fused:
        table = task.operands[-1]
        assert table.shape == (1, 256) and str(table.dtype) == target.activation_dtype
        assert tvm_ffi.structural_equal(task.build(task.default_trace()).body,
                                        task.build().body)
