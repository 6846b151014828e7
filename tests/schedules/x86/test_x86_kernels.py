"""x86 kernels: conv/dense on `vpdpbusd` where the target has AVX-512 VNNI, and on `vpmaddwd`
(int16 pairs) on AVX2 (x86-64-v3); both bit-exact against the reference.

These are the NCHW kernels (graphs compiled with `blocked_layout=False`; on VNNI they also run
the layers a blocked graph leaves in NCHW, such as RGB stems). The blocked (NCHW16c) kernels
are tested in test_blocked_layout.py.

The VNNI kernels are built for an explicit VNNI target, so they are compiled and inspected on
every machine; running them is skipped where the CPU lacks the ISA."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tvm
from conftest import AVX2_TARGET, VNNI_TARGET, make_model, requires_cpu_for, vnni_target
from onnx import helper
from qcompiler.targets.x86 import x86_target
from tvm import relax

from qcompiler.backend.emit import build, emit
from qcompiler.backend.runtime import _DEFAULT_TVM_THREADS as DEFAULT_TVM_THREADS
from qcompiler.config import CompileConfig
from qcompiler.frontend.onnx_import import graph_inputs
from qcompiler.numerics.calibrate import load_calibration
from qcompiler.pipeline import compile_model
from qcompiler.reference import Reference

AVX2 = dataclasses.replace(x86_target(), tvm_target=AVX2_TARGET)
VNNI = vnni_target()
TARGETS = {"vnni": VNNI, "avx2": AVX2}


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
    return compile_model(model, calib, CompileConfig(batch=batch, blocked_layout=False),
                         progress=False, target=target), inputs


@pytest.mark.parametrize("target", ["vnni", "avx2"])
def test_bit_exact_on_both_isa_levels(target, tmp_path, rng):
    model, shape = _model(rng)
    compiled, inputs = _compile(model, shape, tmp_path, rng, TARGETS[target])
    # the conv and the dense layer on the ISA's dot product
    assert _schedules(compiled).count(f"x86_{target}") == 2
    _check_exact(compiled, inputs, rng)


def _schedules(compiled) -> list[str]:
    """The schedule names of the graph's kernels."""
    return [str(f.attrs.get("qcompiler.schedule", "portable"))
            for f in compiled.quantized.functions.values()
            if isinstance(f, tvm.tirx.PrimFunc) and "qcompiler.op" in f.attrs]


def _check_exact(compiled, inputs, rng, runs=3) -> None:
    """Build the graph, run the VM (where this CPU can) against the reference on random
    inputs: equal bit for bit."""
    lib = build(compiled)
    requires_cpu_for(compiled.target.tvm_target)
    vm = relax.VirtualMachine(lib, tvm.cpu())
    ref = Reference(compiled.quantized, compiled.tvm_target)
    for _ in range(runs):
        q = rng.integers(0, 256, inputs[0].shape).astype(np.uint8)
        np.testing.assert_array_equal(vm["main_int"](tvm.runtime.tensor(q)).numpy(),
                                      ref.run(q)[0])


def _dot_kernel_code(target, tmp_path, rng) -> list[str]:
    """The disassembled conv and dense kernels of `_model` compiled for `target`."""
    model, shape = _model(rng)
    compiled, _ = _compile(model, shape, tmp_path, rng, target)
    emit(compiled, None, tmp_path / "out")
    dis = subprocess.run(["objdump", "-d", str(tmp_path / "out" / "libmodel.a")],
                         capture_output=True, text=True, check=True).stdout
    bodies = dis.split("\n\n")
    conv = [b for b in bodies if "conv2d_compute_>:" in b]
    dense = [b for b in bodies if "dense_compute_>:" in b]
    assert conv and dense
    return conv + dense


def test_vnni_conv_kernel_uses_vpdpbusd(tmp_path, rng):
    assert all("vpdpbusd" in b for b in _dot_kernel_code(VNNI, tmp_path, rng))


def test_avx2_conv_kernel_uses_vpmaddwd(tmp_path, rng):
    assert all("vpmaddwd" in b and "zmm" not in b for b in _dot_kernel_code(AVX2, tmp_path, rng))


# AVX2 conv/dense on `vpmaddwd`: (cin, cout, kernel, stride, dilation, pads, size, batch);
# channels no multiple of 2 or 8, 1x1 and non-square kernels, asymmetric padding, widths
# with no divisor up to the register block (13) and one column.
AVX2_CASES = [
    (3, 16, (3, 3), 2, 1, (1, 1, 1, 1), (17, 13), 1),
    (13, 40, (3, 3), 1, 1, (1, 1, 1, 1), (9, 9), 2),
    (64, 24, (1, 1), 1, 1, (0, 0, 0, 0), (14, 14), 1),
    (7, 9, (1, 3), 1, 2, (0, 2, 1, 0), (6, 11), 1),
    (32, 8, (3, 3), 3, 1, (1, 1, 1, 1), (1, 1), 1),
    (1, 16, (3, 3), 1, 1, (1, 1, 1, 1), (28, 28), 1),  # one channel block: a row's packing
    (96, 130, (3, 3), 1, 1, (1, 1, 1, 1), (8, 8), 1),  # weights past ROW_PACKING_WEIGHTS
]


@pytest.mark.parametrize("row_packing", [True, False], ids=["rows", "whole"])
@pytest.mark.parametrize("case", AVX2_CASES,
                         ids=lambda c: f"c{c[0]}o{c[1]}k{c[2][0]}{c[2][1]}s{c[3]}")
def test_avx2_conv_kernel_equals_reference_at_the_extremes(case, row_packing, rng):
    """Activations and weights at the ends of their ranges (255 x -128 pairs, whose 16-bit
    pair sums `vpmaddubsw` would saturate) as well as random ones: bit-exact at 1 and 2
    threads, with the input packed a row block at a time (where `packs_rows`: inside the
    threads' loop) or whole."""
    from qcompiler.schedules.x86.dot import X86_AVX2

    from qcompiler.backend.runtime import set_threads
    from qcompiler.reference import conv2d as ref_conv2d

    cin, cout, k, s, d, pads, hw, batch = case
    rule = dataclasses.replace(X86_AVX2, row_packing=row_packing)
    x_shape, w_shape = (batch, cin, *hw), (cout, cin, *k)
    attrs = {"strides": [s, s], "padding": list(pads), "dilation": [d, d], "groups": 1,
             "zp_x": 7, "zp_y": 0, "lo": -128, "hi": 127, "out_dtype": "int8"}
    x = rng.integers(0, 256, x_shape).astype(np.uint8)
    x[..., ::2] = 255
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    w[::2] = -128
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    ops = [x, w, bias, rng.integers(2**30, 2**31 - 1, cout).astype(np.int32),
           np.full(cout, -14, np.int32)]
    want = ref_conv2d(*ops, attrs)
    wp, folded = rule.pack_operands(w, bias, attrs)
    func = rule.build("conv2d", x_shape, "uint8", w_shape, attrs)
    packs = row_packing and hw[0] > 4 and cout * cin * k[0] * k[1] < 64 * 1024
    sch = tvm.s_tir.Schedule(func)  # row packing: the packing inside the threads' loop
    outer = [sch.get(sch.get_loops(sch.get_sblock(b))[0]) for b in ("x_packed", "acc_init")]
    assert outer[0].same_as(outer[1]) == packs
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         tvm.target.Target(AVX2.tvm_target))
    requires_cpu_for(AVX2.tvm_target)
    assert 0.2 < np.mean((want > -128) & (want < 127))  # the clamp does not hide the sums
    try:
        for n in (1, 2):
            set_threads(n)
            out = tvm.runtime.tensor(np.zeros(want.shape, np.int8))
            lib["main"](*[tvm.runtime.tensor(a) for a in (x, wp, folded, *ops[3:])], out)
            np.testing.assert_array_equal(out.numpy(), want)
    finally:
        set_threads(None)


def test_threads_split_the_work_and_keep_every_bit(tmp_path, rng):
    """The kernels' parallel loops give the same integers with 1 and 2 worker threads."""
    from qcompiler.backend.runtime import CompiledModel, set_threads

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
            assert os.environ["TVM_NUM_THREADS"] == str(n)  # TVM's concurrency (set_threads)
    finally:
        set_threads(None)
    assert os.environ.get("TVM_NUM_THREADS") == DEFAULT_TVM_THREADS
    with pytest.raises(Exception, match="threads must be a positive integer"):
        set_threads(0)


def test_threads_take_tvms_direct_path_at_one_and_the_pool_after():
    """At one thread TVM calls parallel loops directly (its concurrency, TVM_NUM_THREADS, is
    1); threads raised again afterwards get a pool of that many workers: the pool is sized
    once, when first used, so the first `set_threads` must not create it with one. In a
    fresh process, where no pool exists yet."""
    script = (
        "import os, tvm\n"
        "from qcompiler.backend.runtime import set_threads\n"
        "workers = tvm.get_global_func('runtime.NumThreads')\n"
        "set_threads(1)\n"
        "print(os.environ['TVM_NUM_THREADS'], workers())\n"
        "set_threads(2)\n"
        "print(os.environ['TVM_NUM_THREADS'], workers())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["1", "1", "2", "2"], out


# Depthwise: (channels, size, kernel, stride, dilation, pads, batch, clamp hi); MobileNetV2's
# channel counts, some no multiple of 4, 16 or 64; rows of 1, 7, 14 and 56 columns (vector
# tails); a 5x5 (two groups of 4 taps on VNNI); stride 3 and dilation 2 (plain vector code).
DEPTHWISE_CASES = [
    (24, 56, 3, 1, 1, (1, 1, 1, 1), 1, 255),
    (33, 15, 3, 2, 1, (1, 1, 1, 1), 2, 255),
    (144, 28, 3, 2, 1, (0, 0, 1, 1), 1, 140),  # TF-style asymmetric padding, ReLU6-like clamp
    (960, 7, 3, 1, 1, (1, 1, 1, 1), 2, 140),
    (5, 9, 5, 1, 1, (2, 2, 2, 2), 1, 255),
    (7, 1, 3, 1, 1, (1, 1, 1, 1), 1, 255),  # one pixel: every tap but the centre is padding
    (6, 13, 3, 3, 1, (1, 1, 1, 1), 1, 255),
    (6, 12, 3, 1, 2, (2, 2, 2, 2), 1, 255),
    # taps that all read one column phase of a strided row (a 1x1, or a dilation that the
    # stride divides): the phase loop is gone after compute_at (fuzz: depthwise_1x1_...)
    (2, 8, 1, 2, 2, (0, 0, 0, 0), 1, 255),
    (5, 9, 1, 2, 1, (0, 0, 0, 0), 2, 255),
    (6, 12, 3, 2, 2, (2, 2, 2, 2), 1, 255),
    # stride 2, phases of 33 and 18 columns (whole 16-byte deinterleaves and a tail)
    (16, 57, 3, 2, 1, (1, 1, 1, 1), 1, 255),
    (24, 14, 5, 2, 1, (1, 2, 2, 1), 1, 255),
]


@pytest.mark.parametrize("isa", ["vnni", "avx2"])
@pytest.mark.parametrize("case", DEPTHWISE_CASES,
                         ids=lambda c: f"c{c[0]}hw{c[1]}k{c[2]}s{c[3]}d{c[4]}")
def test_depthwise_kernel_equals_reference(case, isa, rng):
    from qcompiler.schedules.x86.depthwise import DEPTHWISE, DEPTHWISE_VNNI

    from qcompiler.reference import conv2d as ref_conv2d

    rule = DEPTHWISE_VNNI if isa == "vnni" else DEPTHWISE
    c, hw, k, s, d, pads, batch, hi = case
    x_shape, w_shape = (batch, c, hw, hw), (c, 1, k, k)
    attrs = {"strides": [s, s], "padding": list(pads), "dilation": [d, d], "groups": c,
             "zp_x": 121, "zp_y": 90, "lo": 3, "hi": hi, "out_dtype": "uint8"}
    assert rule.applies("conv2d", attrs, "uint8") and rule.fits(x_shape, w_shape, attrs)
    ops = [rng.integers(0, 256, x_shape).astype(np.uint8),
           rng.integers(-127, 128, w_shape).astype(np.int8),
           rng.integers(-20000, 20000, c).astype(np.int32),
           rng.integers(2**30, 2**31 - 1, c).astype(np.int32),
           rng.integers(-12, -7, c).astype(np.int32)]
    want = ref_conv2d(*ops, attrs)
    func = rule.build("conv2d", x_shape, "uint8", w_shape, attrs)
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         tvm.target.Target(TARGETS[isa].tvm_target))
    requires_cpu_for(TARGETS[isa].tvm_target)
    out = tvm.runtime.tensor(np.zeros(want.shape, np.uint8))
    lib["main"](*[tvm.runtime.tensor(a) for a in ops], out)
    assert np.mean((want > 3) & (want < hi)) > 0.5  # the clamp does not hide the arithmetic
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.mark.parametrize(("k", "stride", "dilation", "split"),
                         [(3, 2, 1, True), (5, 2, 1, True), (3, 3, 1, False), (1, 2, 1, False)])
def test_depthwise_stride2_rows_split_by_vector_deinterleave(k, stride, dilation, split):
    """At stride 2 with both column phases read, each padded row is split into its phases by
    the vector deinterleave (16 bytes per shuffle), not byte by byte; other strides and a
    1x1 (one phase) keep the byte copy."""
    from qcompiler.schedules.x86.depthwise import DEPTHWISE

    attrs = {"strides": [stride, stride], "padding": [1, 1, 1, 1],
             "dilation": [dilation, dilation], "groups": 8, "zp_x": 3, "zp_y": 0, "lo": 0,
             "hi": 255, "out_dtype": "uint8"}
    text = DEPTHWISE.build("conv2d", (1, 8, 56, 56), "uint8", (8, 1, k, k), attrs).script()
    assert ("T.Shuffle" in text) == split


def test_deinterleave_intrinsic_registers_from_its_name_in_a_new_process():
    """As every intrinsic a schedule names (`intrinsics.register_named`): a trace naming it
    replays anywhere."""
    script = ("from qcompiler.schedules.intrinsics import register_named as r\n"
              "print(r('qcompiler_deinterleave_2x33_uint8', 'x86'),"
              " r('qcompiler_deinterleave_2x9_int16', 'x86'),"
              " r('qcompiler_deinterleave_2x9_float32', 'x86'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True", "False"]


@pytest.mark.parametrize("x_dtype", ["int16", "int8"])
def test_depthwise_stride2_deinterleave_of_other_dtypes_equals_reference(x_dtype, rng):
    """16-bit activations (a 16-bit layer) and int8 ones split by the same deinterleave."""
    from qcompiler.schedules.x86.depthwise import DEPTHWISE

    from qcompiler.reference import conv2d as ref_conv2d

    c, hw = 6, 37
    attrs = {"strides": [2, 2], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": c,
             "zp_x": 11, "zp_y": 5, "lo": -100, "hi": 120, "out_dtype": "int8"}
    info = np.iinfo(x_dtype)
    ops = [rng.integers(info.min // 2 if x_dtype == "int16" else info.min, info.max,
                        (1, c, hw, hw)).astype(x_dtype),
           rng.integers(-127, 128, (c, 1, 3, 3)).astype(np.int8),
           rng.integers(-20000, 20000, c).astype(np.int32),
           rng.integers(2**30, 2**31 - 1, c).astype(np.int32),
           np.full(c, -18 if x_dtype == "int16" else -10, np.int32)]
    want = ref_conv2d(*ops, attrs)
    func = DEPTHWISE.build("conv2d", ops[0].shape, x_dtype, (c, 1, 3, 3), attrs)
    assert "T.Shuffle" in func.script()
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         tvm.target.Target(TARGETS["avx2"].tvm_target))
    out = tvm.runtime.tensor(np.zeros(want.shape, np.int8))
    lib["main"](*[tvm.runtime.tensor(a) for a in ops], out)
    assert np.mean((want > -100) & (want < 120)) > 0.5
    np.testing.assert_array_equal(out.numpy(), want)


def test_depthwise_rule_takes_only_depthwise_convs():
    from qcompiler.schedules import rules_for
    from qcompiler.schedules.x86.depthwise import DEPTHWISE, DEPTHWISE_VNNI
    from qcompiler.schedules.x86.dot import X86_AVX2
    from qcompiler.schedules.x86.rows import X86_ROWS

    assert DEPTHWISE_VNNI in rules_for(VNNI)
    assert rules_for(AVX2) == [X86_AVX2, DEPTHWISE, X86_ROWS]  # rows: what the others leave
    assert not DEPTHWISE.applies("conv2d", {"groups": 1}, "uint8")
    assert not DEPTHWISE.applies("dense", {}, "uint8")
    assert DEPTHWISE.fits((1, 8, 5, 5), (8, 1, 3, 3), {})
    assert not DEPTHWISE.fits((1, 8, 5, 5), (16, 1, 3, 3), {})   # depth multiplier 2
    assert not DEPTHWISE.fits((1, 8, 5, 5), (4, 2, 3, 3), {})    # grouped, 2 channels a group


def _depthwise_model(rng, c=24, hw=14):
    """1x1 expand -> depthwise 3x3 stride 2 + ReLU6 -> 1x1 project (MobileNetV2)."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["ar"]),
             helper.make_node("Conv", ["ar", "wd", "bd"], ["d"], kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1] * 4, group=4 * c),
             helper.make_node("Clip", ["d", "lo", "hi"], ["dr"]),
             helper.make_node("Conv", ["dr", "w2"], ["y"], kernel_shape=[1, 1])]
    inits = {"w1": rng.standard_normal((4 * c, c, 1, 1)).astype(np.float32) * 0.3,
             "wd": rng.standard_normal((4 * c, 1, 3, 3)).astype(np.float32) * 0.5,
             "bd": rng.standard_normal(4 * c).astype(np.float32),
             "w2": rng.standard_normal((c, 4 * c, 1, 1)).astype(np.float32) * 0.2,
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    return make_model(nodes, {"x": ("N", c, hw, hw)}, {"y": None}, inits), (c, hw, hw)


@pytest.mark.parametrize("target", ["vnni", "avx2"])
def test_depthwise_block_bit_exact_on_both_isa_levels(target, tmp_path, rng):
    from qcompiler.backend.runtime import StandaloneModel

    model, shape = _depthwise_model(rng)
    compiled, inputs = _compile(model, shape, tmp_path, rng, TARGETS[target])
    # the 14-wide expansion has columns in the lanes, the 7-wide projection channels
    want = ["x86_vnni", "x86_vnni_columns", "x86_vnni_depthwise"] if target == "vnni" \
        else ["depthwise", "x86_avx2", "x86_avx2"]
    assert sorted(s for s in _schedules(compiled) if s != "portable") == want
    _check_exact(compiled, inputs, rng, runs=2)
    emit(compiled, None, tmp_path / "out")  # the runtime-free C library runs them too
    lib, ref = StandaloneModel(tmp_path / "out"), Reference(compiled.quantized)
    q = rng.integers(0, 256, lib.inputs[0]["shape"]).astype(np.uint8)
    np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])


# Column-lane convs: (cin, size, cout, kernel, stride, pad, batch); channel tails, a 14-wide
# row padded to 16, a stride that halves a 1x1's rows and columns, output channels that 15
# divides; stems of 3 channels (3x3 and 7x7, stride 2: the columns split by phase).
COLUMNS_CASES = [(64, 28, 256, 1, 1, 0, 1), (33, 14, 40, 1, 1, 0, 2), (96, 56, 30, 1, 2, 0, 1),
                 (6, 16, 7, 1, 1, 0, 1), (3, 32, 32, 3, 2, 1, 1), (3, 30, 16, 7, 2, 3, 1),
                 (16, 14, 8, 3, 1, 1, 2)]


@pytest.mark.parametrize("case", COLUMNS_CASES,
                         ids=lambda c: f"{c[0]}to{c[2]}hw{c[1]}k{c[3]}s{c[4]}")
def test_columns_kernel_equals_reference(case, rng):
    from qcompiler.schedules.x86.columns import X86_VNNI_COLUMNS

    from qcompiler.reference import conv2d as ref_conv2d

    cin, hw, cout, k, s, pad, batch = case
    x_shape, w_shape = (batch, cin, hw, hw), (cout, cin, k, k)
    attrs = {"strides": [s, s], "padding": [pad] * 4, "dilation": [1, 1], "groups": 1,
             "zp_x": 37, "zp_y": 100, "lo": 0, "hi": 255, "out_dtype": "uint8"}
    assert X86_VNNI_COLUMNS.applies("conv2d", attrs, "uint8")
    assert X86_VNNI_COLUMNS.fits(x_shape, w_shape, attrs)
    x = rng.integers(0, 256, x_shape).astype(np.uint8)
    w = rng.integers(-127, 128, w_shape).astype(np.int8)
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    m0 = rng.integers(2**30, 2**31 - 1, cout).astype(np.int32)
    shift = np.full(cout, -9 - int(np.log2(cin * k * k)) // 2, np.int32)
    want = ref_conv2d(x, w, bias, m0, shift, attrs)
    wp, folded = X86_VNNI_COLUMNS.pack_operands(w, bias, attrs)
    func = X86_VNNI_COLUMNS.build("conv2d", x_shape, "uint8", w_shape, attrs)
    packed_attrs = json.loads(str(func.attrs["qcompiler.attrs"]))
    np.testing.assert_array_equal(ref_conv2d(x, wp, folded, m0, shift, packed_attrs), want)
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         tvm.target.Target(VNNI_TARGET))
    requires_cpu_for(VNNI_TARGET)
    out = tvm.runtime.tensor(np.zeros(want.shape, np.uint8))
    lib["main"](*[tvm.runtime.tensor(a) for a in (x, wp, folded, m0, shift)], out)
    assert np.mean((want > 0) & (want < 255)) > 0.5  # the clamp does not hide the arithmetic
    np.testing.assert_array_equal(out.numpy(), want)


def test_columns_rule_takes_few_macs_per_output_on_wide_rows():
    from qcompiler.schedules.x86.columns import X86_VNNI_COLUMNS as rule

    plain = {"strides": [1, 1], "padding": [0] * 4, "dilation": [1, 1], "groups": 1}
    assert rule.fits((1, 8, 14, 14), (16, 8, 1, 1), plain)
    assert not rule.fits((1, 8, 7, 7), (16, 8, 1, 1), plain)       # 7 of 16 lanes used
    assert not rule.fits((1, 8, 14, 14), (16, 8, 1, 1), {**plain, "strides": [2, 2]})
    assert rule.fits((1, 8, 14, 14), (16, 8, 3, 3), {**plain, "padding": [1] * 4})
    assert not rule.fits((1, 32, 14, 14), (16, 32, 3, 3), {**plain, "padding": [1] * 4})
    assert not rule.fits((1, 512, 14, 14), (16, 512, 1, 1), plain)  # dot products dominate
    assert rule.fits((1, 512, 28, 28), (16, 512, 1, 1), {**plain, "strides": [2, 2]})
    assert not rule.applies("conv2d", {**plain, "groups": 8}, "uint8")
    assert not rule.applies("conv2d", plain, "int8")
