"""The ARM `sdot` rule's intrinsic (`schedules/arm/sdot.py`): one expression, no named
temporaries, so a kernel asks the runtime for workspace only for its packed input, not around
every tensorized call (TVM's own `sdot` intrinsic: six more allocations in the parallel body).
Bit-exactness under qemu is the fuzzer's and the library tests' (`tests/test_fuzz.py`,
`tests/backend`)."""
from __future__ import annotations

import pytest
import tvm
from qcompiler.schedules.arm.dot import ARM_SDOT
from qcompiler.targets.arm import ARM

ATTRS = {"strides": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1,
         "zp_x": 3, "zp_y": -2, "lo": -128, "hi": 127, "out_dtype": "int8"}


def _llvm_ir(func: tvm.tirx.PrimFunc) -> str:
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "kernel")})
    return tvm.tirx.build(mod, target=tvm.target.Target(ARM.tvm_target)).inspect_source("ll")


@pytest.mark.parametrize(("op", "x_shape", "w_shape", "allocations"), [
    ("conv2d", (1, 16, 14, 14), (32, 16, 3, 3), 1),  # the packed input
    ("dense", (2, 64), (40, 64), 0),  # (its packed input is small: on the stack)
])
def test_sdot_kernels_allocate_only_their_packed_input(op, x_shape, w_shape, allocations):
    attrs = {k: v for k, v in ATTRS.items() if op == "conv2d" or k in
             ("zp_x", "zp_y", "lo", "hi", "out_dtype")}
    ir = _llvm_ir(ARM_SDOT.build(op, x_shape, "int8", w_shape, attrs))
    calls = [line for line in ir.splitlines()
             if "load ptr, ptr @__TVMBackendAllocWorkspace" in line]
    assert len(calls) == allocations
    assert "llvm.aarch64.neon.sdot.v4i32.v16i8" in ir
