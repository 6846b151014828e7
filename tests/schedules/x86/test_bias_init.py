"""`schedules.bias_init`: a reduction's init reads the bias, before and after scheduling, and
the kernel's sums equal `bias + sum` bit for bit (int32 wrapping included)."""
from __future__ import annotations

import numpy as np
import tvm
from qcompiler.schedules.x86.bias_init import bias_init
from qcompiler.targets.x86 import x86_target
from tvm import te


def _workload() -> tvm.tirx.PrimFunc:
    x = te.placeholder((6, 32), "int32", name="x")
    bias = te.placeholder((6,), "int32", name="bias")
    k = te.reduce_axis((0, 32), name="k")
    acc = te.compute((6,), lambda i: te.sum(x[i, k], axis=k), name="acc")
    y = te.compute((6,), lambda i: acc[i] * 3, name="y")  # a consumer of the sums
    return te.create_prim_func([x, bias, y])


def test_init_reads_the_bias_and_the_sums_include_it(rng):
    before = _workload()
    after = bias_init(before, lambda at: at[0])
    assert "acc[v_i] = 0" in before.script() and "acc[v_i] = 0" not in after.script()
    assert "acc[v_i] = bias[v_i]" in after.script()
    sch = tvm.s_tir.Schedule(after)  # the init a block apart, as the kernels schedule it
    block = sch.get_sblock("acc")
    sch.decompose_reduction(block, sch.get_loops(block)[1])
    assert "bias[" in sch.mod["main"].script().split('sblock("acc_init")')[1].split("sblock")[0]
    lib = tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr(
        "global_symbol", "main")}), tvm.target.Target(x86_target().tvm_target))
    x = rng.integers(-2**26, 2**26, (6, 32)).astype(np.int32)
    x[0] = 2**26  # a sum that wraps int32
    bias = rng.integers(-2**31, 2**31 - 1, 6).astype(np.int32)
    got = tvm.runtime.tensor(np.zeros(6, np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(bias), got)
    want = ((x.astype(np.int64).sum(1) + bias) * 3 + 2**31) % 2**32 - 2**31
    np.testing.assert_array_equal(got.numpy(), want.astype(np.int32))
