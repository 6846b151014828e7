"""Kernel scratch is read from the built code: a buffer at the kernel's root is held by the
calling thread for the whole kernel, one computed inside a parallel loop is held once per
task (on the calling thread on top of the root's), and the build is TVM's own."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import make_model, save_calib, save_model
from onnx import helper
from qcompiler.targets.x86 import x86_target
from tvm import te

from qcompiler.api import compile_only
from qcompiler.backend.c_binding import CLibrary
from qcompiler.backend.emit import build, emit
from qcompiler.backend.kernel_scratch import Scratch, measured_build
from qcompiler.reference import Reference


def _two_level() -> tvm.IRModule:
    """`whole` (8x1024 int32) at the root; `row` (1024 int32) inside the parallel rows."""
    a = te.placeholder((8, 1024), "int32", name="a")
    whole = te.compute((8, 1024), lambda i, j: a[i, j] - 1, name="whole")
    row = te.compute((8, 1024), lambda i, j: whole[i, j] + 1, name="row")
    out = te.compute((8, 1024), lambda i, j: row[i, 1023 - j] * 2, name="out")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, out]))
    i, _ = sch.get_loops(sch.get_sblock("out"))
    sch.parallel(i)
    sch.compute_at(sch.get_sblock("row"), i)
    return tvm.IRModule({"k": sch.mod["main"].with_attr("global_symbol", "k")})


def test_root_buffers_and_parallel_task_buffers_are_told_apart():
    lib, scratch = measured_build(_two_level(), tvm.target.Target("llvm"))
    assert scratch == {"k": Scratch(caller=8 * 1024 * 4 + 1024 * 4, task=1024 * 4)}
    x = np.arange(8 * 1024, dtype=np.int32).reshape(8, 1024)
    y = tvm.runtime.tensor(np.zeros_like(x))
    lib["k"](tvm.runtime.tensor(x), y)  # the measured build is a working build
    assert np.array_equal(y.numpy(), x[:, ::-1] * 2)


def test_small_buffers_on_the_stack_are_not_workspace():
    a = te.placeholder((64,), "int32", name="a")
    tmp = te.compute((64,), lambda i: a[i] + 1, name="tmp")  # 256 bytes: TVM uses the stack
    out = te.compute((64,), lambda i: tmp[63 - i], name="out")
    mod = tvm.IRModule({"k": te.create_prim_func([a, out]).with_attr("global_symbol", "k")})
    assert measured_build(mod, tvm.target.Target("llvm"))[1] == {"k": Scratch(0, 0)}


@pytest.mark.parametrize("threads", [1, 3])
def test_a_conv_chain_runs_in_a_workspace_of_its_planned_size(tmp_path, threads, rng):
    """Each call's scratch sits in the arena (reusing dead activations); the library runs
    bit-exact in exactly WORKSPACE_BYTES_FOR(threads), where any kernel asking for more than
    the plan gives it would fail the call."""
    w = {f"w{i}": (rng.standard_normal((16, c, 3, 3)) * 0.2).astype(np.float32)
         for i, c in enumerate((3, 16, 16))}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["b"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Conv", ["b", "w2"], ["y"], kernel_shape=[3, 3], pads=[1] * 4,
                              strides=[2, 2])]
    model = make_model(nodes, {"x": (1, 3, 32, 32)}, {"y": None}, w)
    calib = {"x": rng.standard_normal((4, 3, 32, 32)).astype(np.float32)}
    compiled = compile_only(save_model(model, tmp_path), save_calib(calib, tmp_path),
                            tmp_path / "out")
    exe = build(compiled)
    info = emit(compiled, exe, tmp_path / "out")["standalone"]
    kernel_scratch = [s.caller for s in exe.kernels.scratch.values()]
    assert max(kernel_scratch) > 0  # the convs pack their input: the test has scratch to plan
    # Scratch lives in the arena, not beside it: the arena is smaller than the activations
    # plus the largest scratch whenever a dead tensor could take it.
    assert info["arena_bytes"] < info["live_activation_bytes"] + sum(kernel_scratch)
    # On AVX2 the convs pack a row block at a time (`dot_product.packs_rows`): no whole packed
    # copy of an input (2x its bytes there), so the workspace stays near the live activations
    # (2.4x before). (A VNNI CPU compiles the blocked layout, whose packing is its own.)
    if not x86_target().has("avx512vnni"):
        assert info["workspace_bytes"] <= 1.5 * info["live_activation_bytes"]
    lib = CLibrary(tmp_path / "out", threads)  # exactly NAME_workspace_size(threads) bytes
    q = rng.integers(0, 256, (1, 3, 32, 32)).astype(np.uint8)
    want = Reference(compiled.quantized).run(q)
    assert all(np.array_equal(g, r) for g, r in zip(lib.run_int(q), want))
