"""The ARM `sdot` rule's intrinsics (`schedules/arm/sdot.py`): one expression, no named
temporaries, so a kernel asks the runtime for workspace only for its packed input, not around
every tensorized call (TVM's own `sdot` intrinsic: six more allocations in the parallel body);
four output columns a call where the input's columns are adjacent, bit-exact under qemu.
Whole models under qemu are the fuzzer's and the library tests' (`tests/test_fuzz.py`,
`tests/backend`)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
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


def _equals_reference_under_qemu(func: tvm.tirx.PrimFunc, reference: Callable,
                                 x_shape: tuple, w_shape: tuple, attrs: dict, shift: int, tmp_path: Path,
                                 rng: np.random.Generator) -> None:
    """The kernel built for aarch64 and run under qemu on random int8 operands (bias,
    multipliers and `shift` such that the clamp does not hide the sums) equals `reference`."""
    from qcompiler.tuning.runners import CountingRunner, KernelBuilder

    cout = w_shape[0]
    x = rng.integers(-128, 128, x_shape).astype("int8")
    w = rng.integers(-128, 128, w_shape).astype("int8")
    bias = rng.integers(-20000, 20000, cout).astype("int32")
    m0 = rng.integers(2**30, 2**31 - 1, cout).astype("int32")
    shifts = np.full(cout, shift, "int32")
    want = reference(x, w, bias, m0, shifts, attrs)
    assert 0.2 < np.mean((want > -128) & (want < 127))
    wp, folded = ARM_SDOT.pack_operands(w, bias, attrs)
    target = tvm.target.Target(ARM.tvm_target)
    (built,) = KernelBuilder(target, tmp_path, ARM.cc).build(
        [tvm.s_tir.meta_schedule.builder.BuilderInput(tvm.IRModule({"main": func}), target)])
    assert built.error_msg is None
    got, _ = CountingRunner(ARM.run_prefix).measure(Path(built.artifact_path),
                                                    [x, wp, folded, m0, shifts], want)
    np.testing.assert_array_equal(got, want)


# (x shape, w shape, stride, dilation, padding): adjacent input columns (stride 1, or a
# folded stem) take four output columns a call; the others one column a call.
CASES = [
    ((1, 16, 16, 16), (32, 16, 3, 3), 1, 1, (1, 1, 1, 1), True),  # J = 16
    ((2, 24, 8, 8), (20, 24, 1, 1), 1, 1, (0, 0, 0, 0), True),  # batch 2, channel tails
    ((1, 8, 12, 12), (8, 8, 3, 3), 1, 2, (2, 2, 2, 2), True),  # dilated: J = 12
    ((1, 1, 28, 28), (16, 1, 3, 3), 1, 1, (1, 1, 1, 1), True),  # folded stem: J = 4
    ((1, 3, 17, 18), (16, 3, 3, 3), 2, 1, (1, 1, 1, 1), False),  # strided
    ((1, 16, 14, 14), (32, 16, 3, 3), 1, 1, (1, 1, 1, 1), True),  # 14 columns: 16 computed
    ((1, 8, 7, 5), (8, 8, 3, 3), 1, 1, (1, 1, 1, 1), True),  # 5 columns: 8 computed
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_four_columns_a_call_where_the_columns_are_adjacent(case, tmp_path, rng):
    """Four output columns a call (one 16-byte load, lane-indexed `sdot`) where the packed
    input's columns are adjacent (the accumulators' width rounded up to 4, the extra columns
    computed on the padding and dropped); bit-exact under qemu-aarch64 against the reference
    either way."""
    from qcompiler.reference import conv2d as ref_conv2d

    x_shape, w_shape, s, d, pads, four = case
    attrs = {**ATTRS, "strides": [s, s], "dilation": [d, d], "padding": list(pads)}
    func = ARM_SDOT.build("conv2d", x_shape, "int8", w_shape, attrs)
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "kernel")})
    asm = tvm.tirx.build(mod, target=tvm.target.Target(ARM.tvm_target)).inspect_source("s")
    assert (".4b[" in asm) == four  # `sdot v.4s, w.16b, x.4b[c]`: a column's word by lane
    _equals_reference_under_qemu(func, ref_conv2d, x_shape, w_shape, attrs, -12, tmp_path, rng)

