"""`x86.rows`: the NCHW kernels without a dot product run in parallel (and vectorized where
they reduce nothing), with the same integers at 1 and 2 threads as the reference."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tvm
from conftest import AVX2_TARGET, make_model, vnni_target
from onnx import helper
from qcompiler.schedules.x86.rows import X86_ROWS, schedule_rows
from tvm import relax, te

from qcompiler.backend.emit import build
from qcompiler.backend.runtime import set_threads
from qcompiler.config import CompileConfig
from qcompiler.frontend.onnx_import import graph_inputs
from qcompiler.numerics.calibrate import load_calibration
from qcompiler.pipeline import compile_model
from qcompiler.reference import Reference

AVX2 = dataclasses.replace(vnni_target(), tvm_target=AVX2_TARGET)


def _loops(func: tvm.tirx.PrimFunc, block: str) -> list[str]:
    """The kinds of the loops around `block`, outermost first."""
    sch = tvm.s_tir.Schedule(func)
    return [tvm.tirx.ForKind(int(sch.get(loop).kind)).name.lower()
            for loop in sch.get_loops(sch.get_sblock(block))]


def test_elementwise_block_parallel_outside_and_vectorized_inside():
    shape = (2, 6, 5, 16)
    x = te.placeholder(shape, "uint8", name="x")
    y = te.compute(shape, lambda *i: x[i] + tvm.tirx.const(1, "uint8"), name="y")
    before = te.create_prim_func([x, y])
    kinds = _loops(schedule_rows(before), "y")
    assert kinds[0] == "parallel" and kinds[-1] == "vectorized"
    assert _loops(before, "y") == ["serial"] * 4
    # numbers unchanged
    a = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    outs = []
    for f in (before, schedule_rows(before)):
        out = tvm.runtime.tensor(np.zeros(shape, np.uint8))
        tvm.tirx.build(f, target="llvm")(tvm.runtime.tensor(a), out)
        outs.append(out.numpy())
    np.testing.assert_array_equal(*outs)


def test_reduction_block_parallel_over_batch_and_channel_only():
    x = te.placeholder((1, 8, 7, 7), "int32", name="x")
    r = [te.reduce_axis((0, 7), name="ry"), te.reduce_axis((0, 7), name="rx")]
    y = te.compute((1, 8, 1, 1), lambda b, c, i, j: te.sum(x[b, c, r[0], r[1]], axis=r),
                   name="s")
    kinds = _loops(schedule_rows(te.create_prim_func([x, y])), "s")
    assert kinds[0] == "parallel" and "vectorized" not in kinds


def test_table_lookup_parallel_but_not_vectorized():
    """A table's (and resize's) loads are gathers: as vectors, an insert a lane (3x the
    scalar loop's time), so the rule gives it threads only."""
    from qcompiler import kernels

    func = kernels.lut((1, 96, 7, 32), "uint8", (1, 256), {"axis": -1, "out_dtype": "uint8"})
    kinds = _loops(X86_ROWS.rebuild(func, [None, None, None]), "lut")
    assert kinds[0] == "parallel" and "vectorized" not in kinds


def _graph(rng):
    """Each op the rule takes that a CNN has between (or after) its convolutions, on NCHW."""
    c, hw = 16, 12
    w = (rng.standard_normal((c, c // 2, 3, 3)) * 0.3).astype(np.float32)  # groups 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3],
                              pads=[1] * 4, group=2),
             helper.make_node("Add", ["c", "x"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1] * 4),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("HardSigmoid", ["g"], ["h"]),
             helper.make_node("Mul", ["p", "h"], ["m"]),  # a squeeze-excite gate
             helper.make_node("AveragePool", ["m"], ["v"], kernel_shape=[2, 2]),
             # a detector's neck: upsample, transposed conv (grouped: the zero-inserted
             # kernel; an ungrouped one is the conv of its phases), resample
             helper.make_node("Resize", ["v", "", "up"], ["u"], mode="nearest"),
             helper.make_node("ConvTranspose", ["u", "wt", "bt"], ["t"], kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1] * 4, output_padding=[1, 1], group=2),
             helper.make_node("Resize", ["t", "", "down"], ["y"], mode="linear")]
    inits = {"w": w, "b": rng.standard_normal(c).astype(np.float32),
             "up": np.array([1, 1, 2, 2], np.float32), "down": np.array([1, 1, .5, .5], np.float32),
             "wt": (rng.standard_normal((c, 4, 3, 3)) * 0.2).astype(np.float32),
             "bt": rng.standard_normal(8).astype(np.float32)}
    return make_model(nodes, {"x": ("N", c, hw, hw)}, {"y": None}, inits), (c, hw, hw)


@pytest.mark.parametrize("target", [AVX2, vnni_target()], ids=["avx2", "vnni"])
def test_ops_between_convolutions_take_the_rule_and_stay_bit_exact(target, tmp_path, rng):
    model, shape = _graph(rng)
    path = tmp_path / "c.npz"
    np.savez(path, x=rng.standard_normal((4, *shape)).astype(np.float32))
    inputs = graph_inputs(model, 2)
    compiled = compile_model(model, load_calibration(path, inputs),
                             CompileConfig(batch=2, blocked_layout=False), progress=False,
                             target=target)
    schedules = {str(f.attrs["qcompiler.op"]): str(f.attrs.get("qcompiler.schedule", ""))
                 for f in compiled.quantized.functions.values()
                 if isinstance(f, tvm.tirx.PrimFunc) and "qcompiler.op" in f.attrs}
    taken = {op for op, rule in schedules.items() if rule == X86_ROWS.name}
    assert {"conv2d", "add", "max_pool2d", "avg_pool2d", "mul", "reduce_mean",
            "resize_nearest", "conv2d_transpose", "resize_bilinear"} <= taken
    # the table: vpermi2b where the target has AVX-512 VBMI (`x86.lookup`), else the rows
    assert schedules["lut"] == ("x86_vbmi_lookup" if target.has("avx512vbmi") else
                                X86_ROWS.name)
    lib = build(compiled)
    if target is not AVX2:  # built for VNNI whatever this CPU is; run where it can
        return
    ref = Reference(compiled.quantized, compiled.tvm_target)
    q = rng.integers(0, 256, inputs[0].shape).astype(np.uint8)
    want = ref.run(q)[0]
    try:
        for n in (1, 2):
            set_threads(n)
            vm = relax.VirtualMachine(lib, tvm.cpu())
            np.testing.assert_array_equal(vm["main_int"](tvm.runtime.tensor(q)).numpy(), want)
    finally:
        set_threads(None)
