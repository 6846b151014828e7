"""plan_layout: on x86 with AVX-512 VNNI, the kernels with a blocked form run on NCHW16c and
the layout changes only at the graph's edges; without VNNI, or for kernels without a blocked
form, the module is unchanged.

The structure is checked everywhere (the VNNI code is built for an explicit target); running
it needs a CPU with VNNI, so only that execution is skipped elsewhere.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tvm
from conftest import make_model
from onnx import helper
from qcompiler.passes.plan_layout import LAYOUT_ATTR, plan_layout, uses_blocked_layout
from qcompiler.schedules.x86 import blocked
from qcompiler.targets.x86 import cpu_flags, x86_target
from tvm import relax

from qcompiler.config import CompileConfig
from qcompiler.pipeline import compile_model
from qcompiler.reference import Reference
from qcompiler.relax_access import bindings, op_name

VNNI = dataclasses.replace(x86_target(), tvm_target={
    "kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vnni", "+avx512vbmi"]})
AVX2 = dataclasses.replace(x86_target(), tvm_target={"kind": "llvm", "mcpu": "x86-64-v3"})


def _quantized(rng, nodes, x_shape, inits):
    """The quantized graph (portable kernels, no layout planned) of a small model."""
    model = make_model(nodes, {"x": x_shape}, {"y": None}, inits)
    calib = {"x": rng.standard_normal((4, *x_shape[1:])).astype(np.float32)}
    config = CompileConfig(schedules=False)
    return compile_model(model, calib, config, progress=False, target=VNNI).quantized


def _conv_conv(rng):
    """conv 3x3 (16 -> 16, ReLU), conv 1x1 (16 -> 24): both have a blocked form."""
    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3],
                              pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["y"], kernel_shape=[1, 1])]
    inits = {"w0": w(16, 16, 3, 3), "b0": w(16), "w1": w(24, 16, 1, 1), "b1": w(24)}
    return _quantized(rng, nodes, (1, 16, 8, 8), inits)


def _calls(mod: tvm.IRModule) -> list[tuple[str, dict]]:
    """(op, attrs) of every kernel `main_int` calls, in order."""
    out = []
    for b in bindings(mod["main_int"]):
        if isinstance(b.value, relax.Call) and op_name(b.value) == "relax.call_tir":
            f = mod[b.value.args[0]]
            out.append((str(f.attrs["qcompiler.op"]),
                        json.loads(str(f.attrs["qcompiler.attrs"]))))
    return out


def test_blocked_between_the_layers_converted_at_the_edges(rng):
    before = _conv_conv(rng)
    assert [op for op, _ in _calls(before)] == ["conv2d", "conv2d"]
    after = plan_layout(VNNI)(before)
    relax.analysis.well_formed(after)  # raises on the first violation
    calls = _calls(after)
    assert [op for op, _ in calls] == ["to_blocked", "conv2d", "conv2d", "from_blocked"]
    assert all(attrs["layout"] == blocked.LAYOUT for _, attrs in calls[1:3])
    assert [attrs["channels"] for _, attrs in calls[1:3]] == [[16, 16], [16, 24]]
    out = after["main_int"].body.body  # NCHW again at the output, with its shape
    assert [int(d) for d in out.ty.shape] == [1, 24, 8, 8]
    # the blocked tensors with their channels, for `Reference.run_all`
    assert sorted(json.loads(str(after["main_int"].attrs[LAYOUT_ATTR])).values()) == [16, 24]


def test_near_miss_without_vnni_the_pass_is_the_identity(rng):
    before = _conv_conv(rng)
    assert not uses_blocked_layout(AVX2) and uses_blocked_layout(VNNI)
    tvm.ir.assert_structural_equal(plan_layout(AVX2)(before), before)


def test_near_miss_dense_has_no_blocked_form(rng):
    """A graph of 2-D kernels (Gemm) stays as it was on VNNI too: no conversion emitted."""
    w = (rng.standard_normal((10, 32)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(10) * 0.1).astype(np.float32)
    before = _quantized(rng, [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
                        (1, 32), {"w": w, "b": b})
    after = plan_layout(VNNI)(before)
    relax.analysis.well_formed(after)
    assert [op for op, _ in _calls(after)] == [op for op, _ in _calls(before)] == ["dense"]
    assert json.loads(str(after["main_int"].attrs[LAYOUT_ATTR])) == {}  # no blocked tensor


def test_planned_module_equals_the_reference(rng):
    """The planned graph, built for VNNI, gives the reference's integers (which reads the
    original graph) bit for bit."""
    before = _conv_conv(rng)
    _run_equals_reference(before, plan_layout(VNNI)(before), (1, 16, 8, 8), rng, 3)


def _run_equals_reference(before: tvm.IRModule, after: tvm.IRModule, shape: tuple, rng,
                          runs: int) -> None:
    """`after` built for VNNI and run (where the CPU has VNNI) gives the reference's integers
    for `before` on `runs` random inputs."""
    lib = tvm.compile(after, tvm.target.Target(VNNI.tvm_target))
    if "avx512_vnni" not in cpu_flags():
        pytest.skip("this CPU has no avx512_vnni (the planned module is built, not run)")
    vm = relax.VirtualMachine(lib, tvm.cpu())
    ref = Reference(before, tvm.target.Target(VNNI.tvm_target))
    for _ in range(runs):
        q = rng.integers(0, 256, shape).astype(np.uint8)
        got = vm["main_int"](tvm.runtime.tensor(q)).numpy()
        np.testing.assert_array_equal(got, ref.run(q)[0])


def test_upsampling_neck_stays_blocked(rng):
    """A segmenter's neck: nearest and bilinear resizes and a 2x2 stride-2 ConvTranspose (the
    conv of its four phases, then their interleave), between convs of 16 channels: every
    kernel blocked, the layout converted only at the graph's edges; run (where the CPU has
    VNNI), the reference's integers."""
    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[1, 1]),
             helper.make_node("Resize", ["c0", "", "up"], ["n0"], mode="nearest"),
             helper.make_node("Resize", ["n0", "", "down"], ["l0"], mode="linear"),
             helper.make_node("ConvTranspose", ["l0", "wt", "bt"], ["t0"], strides=[2, 2],
                              kernel_shape=[2, 2]),
             helper.make_node("Relu", ["t0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["y"], kernel_shape=[3, 3],
                              pads=[1] * 4)]
    inits = {"w0": w(16, 16, 1, 1), "b0": w(16), "wt": w(16, 16, 2, 2), "bt": w(16),
             "w1": w(16, 16, 3, 3), "b1": w(16),
             "up": np.array([1, 1, 2, 2], np.float32), "down": np.array([1, 1, .5, .5], np.float32)}
    before = _quantized(rng, nodes, (1, 16, 6, 6), inits)
    assert [op for op, _ in _calls(before)] == [
        "conv2d", "resize_nearest", "resize_bilinear", "conv2d", "interleave_phases", "conv2d"]
    after = plan_layout(VNNI)(before)
    relax.analysis.well_formed(after)
    calls = _calls(after)
    assert [op for op, _ in calls] == ["to_blocked", "conv2d", "resize_nearest",
                                       "resize_bilinear", "conv2d", "interleave_phases",
                                       "conv2d", "from_blocked"]
    assert all(attrs["layout"] == blocked.LAYOUT for _, attrs in calls[1:-1])
    _run_equals_reference(before, after, (1, 16, 6, 6), rng, 2)
