"""The NCHW16c layout of x86 VNNI graphs (`passes.plan_layout`, `schedules.blocked`): every
blocked kernel equals the reference on the channel-padded layer bit for bit (padded channels
included), and whole graphs stay bit-exact with the layout changed only at their edges.

Everything is built for an explicit VNNI target, so the layout, the schedules and the code
are checked on every machine; running the code is skipped where the CPU lacks the ISA."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from conftest import AVX2_TARGET, VNNI_TARGET, make_model, requires_cpu_for, vnni_target
from onnx import helper
from qcompiler.passes.plan_layout import plan_layout
from qcompiler.schedules.x86 import blocked
from tvm import relax

from qcompiler.backend.emit import build
from qcompiler.config import CompileConfig
from qcompiler.frontend.onnx_import import graph_inputs
from qcompiler.numerics.calibrate import load_calibration
from qcompiler.numerics.weight_layout import folded_bias, pack_depthwise
from qcompiler.pipeline import compile_model
from qcompiler.reference import Reference, kernel_for, to_blocked, unblocked
from qcompiler.reference import conv2d as ref_conv2d
from qcompiler.relax_access import bindings

TARGET = tvm.target.Target(VNNI_TARGET)


def _run(func: tvm.tirx.PrimFunc, args: list, out_shape: tuple, dtype=np.uint8) -> np.ndarray:
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), TARGET)
    requires_cpu_for(VNNI_TARGET)
    out = tvm.runtime.tensor(np.zeros(out_shape, dtype))
    lib["main"](*[tvm.runtime.tensor(a) for a in args], out)
    return out.numpy()


def _layer(rng, cout, cin_g, k, channels_out):
    """Weights, bias, m0, shift of a layer, channel-padded to `channels_out` the way
    plan_layout pads them (zero weights and bias, multiplier 0)."""
    w = np.zeros((channels_out, cin_g, k, k), np.int8)
    w[:cout] = rng.integers(-127, 128, (cout, cin_g, k, k))
    bias, m0 = np.zeros(channels_out, np.int32), np.zeros(channels_out, np.int32)
    bias[:cout] = rng.integers(-20000, 20000, cout)
    m0[:cout] = rng.integers(2**30, 2**31 - 1, cout)
    shift = rng.integers(-14, -9, channels_out).astype(np.int32)
    return w, bias, m0, shift


def _attrs(k_stride, pads, dilation, groups, hi=255):
    return {"strides": [k_stride] * 2, "padding": list(pads), "dilation": [dilation] * 2,
            "groups": groups, "zp_x": 121, "zp_y": 90, "lo": 3, "hi": hi,
            "out_dtype": "uint8", "layout": blocked.LAYOUT}


# conv: (cin, cout, size, kernel, stride, pads, batch); ResNet-50 and MobileNetV2 shapes and
# channel counts that are no multiple of 4 or 16 (13, 33, 40), 1x1, 3x3, 7x7, stride 2.
CONV_CASES = [
    (64, 64, 14, 3, 1, (1, 1, 1, 1), 1),
    (64, 256, 14, 1, 1, (0, 0, 0, 0), 1),
    (256, 128, 15, 1, 2, (0, 0, 0, 0), 2),
    (33, 40, 9, 3, 2, (1, 1, 1, 1), 2),
    (13, 24, 11, 7, 2, (3, 3, 3, 3), 1),
    (144, 24, 7, 1, 1, (0, 0, 0, 0), 1),
    (48, 32, 10, 3, 1, (0, 0, 1, 1), 1),  # TF-style asymmetric padding
    (32, 48, 12, 3, 1, (2, 2, 2, 2), 1, 2),  # dilation 2
    (32, 64, 16, 3, 1, (1, 1, 1, 1), 1),  # 4 channel blocks x 4 columns: 4-column epilogue
    (40, 144, 12, 1, 1, (0, 0, 0, 0), 2),  # 9 channel blocks: 3 x 4 columns
    (16, 96, 12, 1, 1, (0, 0, 0, 0), 1),  # one input block: 2 x 4 columns
    (48, 32, 16, 1, 1, (0, 0, 0, 0), 1),  # 2 channel blocks x 8 columns
    (64, 64, 13, 3, 1, (1, 1, 1, 1), 1),  # 13 wide (no divisor 4-7): 1 block x 13 columns
]


def _check(func, ops, real, cout, hi=255):
    """The kernel against the reference of the blocked graph (padded channels included) and
    against the plain reference of the unpadded layer (`real`: its NCHW output)."""
    attrs = json.loads(str(func.attrs["qcompiler.attrs"]))
    want = kernel_for("conv2d", attrs)(*ops, attrs)
    got = _run(func, ops, want.shape)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(unblocked(got)[:, :cout], real)
    assert np.mean((real > 3) & (real < hi)) > 0.5  # the clamp does not hide the arithmetic
    assert (unblocked(got)[:, cout:] == 90).all()  # a padded channel: the clamp of zp_y


# stems: the input blocked by 4 (RGB, 1 channel, 6 channels), the output by 16
STEM_CASES = [
    (3, 64, 30, 7, 2, (3, 3, 3, 3), 1),
    (3, 32, 32, 3, 2, (0, 0, 1, 1), 2),
    (1, 16, 28, 3, 1, (1, 1, 1, 1), 1),
    (6, 40, 12, 3, 1, (1, 1, 1, 1), 1),
]


@pytest.mark.parametrize("case", CONV_CASES + STEM_CASES,
                         ids=lambda c: "c{}o{}hw{}k{}s{}".format(*c[:5]))
@pytest.mark.parametrize("shifts", ["any", "right"])
def test_blocked_conv_equals_reference(case, shifts, rng):
    """`shifts`: the int64 epilogue, or the right-shift one (`x86.requantize`)."""
    cin, cout, hw, k, s, pads, batch, *dilation = case
    block = blocked.STEM_BLOCK if case in STEM_CASES else blocked.BLOCK
    c_in, c_out = -(-cin // block) * block, blocked.padded_channels(cout)
    w, bias, m0, shift = _layer(rng, cout, cin, k, c_out)
    wp = np.zeros((c_out, c_in, k, k), np.int8)
    wp[:, :cin] = w
    # `channels` as plan_layout gives them: a 1x1 conv reads only the groups of 4 channels
    # that have real ones (40: 10 groups of the 12 in 3 blocks)
    attrs = {**_attrs(s, pads, dilation[0] if dilation else 1, 1), "channels": [cin, cout]}
    x4 = rng.integers(0, 256, (batch, cin, hw, hw)).astype(np.uint8)
    x = to_blocked(x4, {"block": block, "pad": 7})  # a padded input channel: any value
    packed, fb = blocked.BLOCKED_VNNI.pack_operands(wp, bias, attrs)
    func = blocked.BLOCKED_VNNI.build("conv2d", x.shape, "uint8", wp.shape, attrs,
                                      shifts=shifts)
    plain = {k: v for k, v in attrs.items() if k != "layout"}
    real = ref_conv2d(x4, w[:cout], bias[:cout], m0[:cout], shift[:cout], plain)
    _check(func, [x, packed, fb, m0, shift], real, cout)


@pytest.mark.parametrize("cin, k, terms", [(40, 1, 40), (24, 1, 24), (48, 1, 48), (40, 3, 432)])
def test_conv_reduces_over_the_real_channels_of_a_pointwise_layer(cin, k, terms):
    """Per output: the products the reduction takes (a 3x3 keeps whole blocks: 48 x 9)."""
    cb = -(-cin // 16)
    attrs = {**_attrs(1, (k // 2,) * 4, 1, 1), "channels": [cin, 32]}
    func = blocked.BLOCKED_VNNI.workload("conv2d", (1, cb, 8, 8, 16), "uint8",
                                         (32, cb * 16, k, k), attrs, "right")
    sch = tvm.s_tir.Schedule(func)
    acc = sch.get(sch.get_sblock("acc"))
    reduced = [int(v.dom.extent) for v in acc.iter_vars if v.iter_type == 2]
    assert int(np.prod(reduced)) == terms


# depthwise: (channels, size, kernel, stride, dilation, pads, batch, clamp hi), as in
# test_x86_kernels: MobileNetV2's channels (24, 144, 960) and ones that are no multiple of 16;
# 5x5 (two groups of 4 taps); stride 3; dilation 2 (the 32-bit form); planes larger than
# `blocked.CHUNKED_PLANE_BYTES`, padded in chunks of output rows (56: 8 rows; 66 at stride 2:
# 3 rows, a chunk that is no power of 2; an 11x11 filter: 1 row).
DEPTHWISE_CASES = [
    (24, 56, 3, 1, 1, (1, 1, 1, 1), 1, 255),
    (33, 15, 3, 2, 1, (1, 1, 1, 1), 2, 255),
    (144, 28, 3, 2, 1, (0, 0, 1, 1), 1, 140),
    (960, 7, 3, 1, 1, (1, 1, 1, 1), 2, 140),
    (5, 9, 5, 1, 1, (2, 2, 2, 2), 1, 255),
    (7, 1, 3, 1, 1, (1, 1, 1, 1), 1, 255),
    (6, 13, 3, 3, 1, (1, 1, 1, 1), 1, 255),
    (6, 12, 3, 1, 2, (2, 2, 2, 2), 1, 255),
    (40, 66, 3, 2, 1, (1, 1, 1, 1), 1, 255),
    (16, 40, 11, 1, 1, (5, 5, 5, 5), 1, 255),  # a filter taller than a chunk: 1 row
]


def test_depthwise_chunks_read_at_most_ten_input_rows():
    assert [blocked.chunk_rows(*a) for a in [(56, 1, 3), (56, 2, 3), (33, 2, 3), (37, 1, 3),
                                              (20, 1, 11)]] == [8, 4, 3, 1, 1]


@pytest.mark.parametrize("case", DEPTHWISE_CASES,
                         ids=lambda c: "c{}hw{}k{}s{}d{}".format(*c[:5]))
@pytest.mark.parametrize("form", [("any", False), ("right", False), ("right", True)],
                         ids=["int64", "right", "right-vbmi"])
def test_blocked_depthwise_equals_reference(case, form, rng):
    """`form`: the epilogue (`shifts`) and the taps' transpose (`vbmi`: one `vpermb`)."""
    shifts, vbmi = form
    c, hw, k, s, d, pads, batch, hi = case
    cp = blocked.padded_channels(c)
    w, bias, m0, shift = _layer(rng, c, 1, k, cp)
    attrs = _attrs(s, pads, d, cp, hi)
    x4 = rng.integers(0, 256, (batch, c, hw, hw)).astype(np.uint8)
    x = to_blocked(x4, {"block": 16, "pad": 121})
    func = blocked.depthwise(x.shape, "uint8", w.shape, attrs, shifts, vbmi)
    plain = {**{k: v for k, v in attrs.items() if k != "layout"}, "groups": c}
    real = ref_conv2d(x4, w[:c], bias[:c], m0[:c], shift[:c], plain)
    ops = [x, pack_depthwise(w, 16), folded_bias(w, bias, 121), m0, shift]
    _check(func, ops, real, c, hi)


def _stores(stmt, buffer: str, runs: int = 1) -> int:
    """How many elements of `buffer` the scheduled `stmt` stores (loops times their stores)."""
    if isinstance(stmt, tvm.s_tir.SBlockRealize):
        return _stores(stmt.block, buffer, runs)
    if isinstance(stmt, tvm.s_tir.SBlock):
        if isinstance(stmt.body, tvm.tirx.BufferStore):
            return runs * (stmt.body.buffer.name == buffer)
        return _stores(stmt.body, buffer, runs)
    if isinstance(stmt, tvm.tirx.For):
        return _stores(stmt.body, buffer, runs * int(stmt.extent))
    if isinstance(stmt, tvm.tirx.SeqStmt):
        return sum(_stores(s, buffer, runs) for s in stmt)
    return 0


# (channels, size, stride, pads, output rows a chunk (0: the whole plane), columns padded)
PAD_CASES = [(24, 56, 1, (1, 1, 1, 1), 8, 59), (40, 66, 2, (1, 1, 1, 1), 3, 68),
             (960, 7, 1, (1, 1, 1, 1), 0, 10), (6, 13, 1, (0, 0, 1, 1), 0, 15)]


@pytest.mark.parametrize("case", PAD_CASES, ids=lambda c: "c{}hw{}s{}".format(*c[:3]))
def test_depthwise_padding_stores_each_byte_once(case):
    """The padded copy is a fill of its border and a copy of its interior, not a fill of the
    whole region with the interior copied over it (which stored most bytes twice)."""
    c, hw, s, pads, chunk, columns = case
    attrs = _attrs(s, pads, 1, c)
    cp = blocked.padded_channels(c)
    func = blocked.depthwise((1, cp // 16, hw, hw, 16), "uint8", (cp, 1, 3, 3), attrs,
                             "right", True)
    out = (hw + pads[0] + pads[2] - 3) // s + 1
    rows_per_chunk = (chunk - 1) * s + 3 if chunk else hw + pads[0] + pads[2]
    chunks = out // chunk if chunk else 1
    assert _stores(func.body, "x_pad") == cp // 16 * chunks * rows_per_chunk * columns * 16


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[6], STEM_CASES[0]],
                         ids=lambda c: "c{}o{}hw{}k{}s{}".format(*c[:5]))
def test_conv_padding_stores_each_byte_once(case):
    cin, cout, hw, k, s, pads, batch = case
    lanes = blocked.STEM_BLOCK if case in STEM_CASES else blocked.BLOCK
    shape = (batch, -(-cin // lanes), hw, hw, lanes)
    func = blocked.BLOCKED_VNNI.build("conv2d", shape, "uint8",
                                      (blocked.padded_channels(cout), shape[1] * lanes, k, k),
                                      _attrs(s, pads, 1, 1), shifts="right")
    padded = (hw + pads[0] + pads[2]) * (hw + pads[1] + pads[3])
    assert _stores(func.body, "x_pad") == batch * shape[1] * padded * lanes


def _residual_model(rng, cin=3, c=24):
    """stem conv (cin -> c) -> ReLU -> max pool -> [conv 3x3 -> ReLU -> depthwise 3x3 ->
    conv 1x1] + skip -> ReLU -> global average pool -> Gemm; and a second output taken
    from the middle (a blocked tensor that leaves the graph)."""
    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p0", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], kernel_shape=[3, 3], pads=[1] * 4,
                         group=c),
        helper.make_node("Conv", ["cd", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c2", "p0"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p1"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1] * 4),
        helper.make_node("GlobalAveragePool", ["p1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    inits = {"w0": w(c, cin, 3, 3), "b0": w(c), "w1": w(c, c, 3, 3), "b1": w(c),
             "wd": w(c, 1, 3, 3), "bd": w(c), "w2": w(c, c, 1, 1), "b2": w(c),
             "fw": w(10, c), "fb": w(10)}
    return make_model(nodes, {"x": ("N", cin, 16, 16)}, {"y": None, "r1": None}, inits)


def _compile(model, tmp_path, rng, cin, target=None, size=16, **options):
    path = tmp_path / "c.npz"  # one calibration set for every build of the test
    if not path.exists():
        np.savez(path, x=rng.standard_normal((4, cin, size, size)).astype(np.float32))
    inputs = graph_inputs(model, 2)
    calib = load_calibration(path, inputs)
    return compile_model(model, calib, CompileConfig(batch=2, **options), progress=False,
                         target=target or vnni_target()), inputs


def _kernels(mod: tvm.IRModule) -> list[tuple[str, str]]:
    """(op, schedule) of every kernel the graph calls, in order."""
    out = []
    for b in bindings(mod["main_int"]):
        if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir":
            f = mod[b.value.args[0]]
            if "qcompiler.op" in f.attrs:
                out.append((str(f.attrs["qcompiler.op"]),
                            str(f.attrs.get("qcompiler.schedule", "portable"))))
    return out


def test_layout_changes_only_at_the_region_edges_and_every_bit_is_kept(tmp_path, rng):
    """One conversion in (the RGB input, blocked by 4 for the stem, with the stem conv's
    padding: that conv makes no padded copy of its input); every conv, depthwise,
    add, max pool and the global average pool blocked, the 1x1 conv fused with the add it
    feeds; one conversion out for each tensor that leaves (the pool's 1x1 output, which the
    Gemm reads flat, and the graph's second output). The outputs equal the reference and the
    NCHW build's; the reference's tensors include the fused conv's own (per-layer reports)."""
    model = _residual_model(rng)
    compiled, inputs = _compile(model, tmp_path, rng, 3)
    flat, _ = _compile(model, tmp_path, rng, 3, blocked_layout=False)
    kernels = _kernels(compiled.quantized)
    ops = [op for op, _ in kernels]
    assert ops.count("to_blocked") == 1 and ops.count("from_blocked") == 2, kernels
    assert ops[0] == "to_blocked"
    stem_in = next(f for f in compiled.quantized.functions.values()
                   if isinstance(f, tvm.tirx.PrimFunc)
                   and str(f.attrs.get("qcompiler.op", "")) == "to_blocked")
    stem_attrs = json.loads(str(stem_in.attrs["qcompiler.attrs"]))
    assert stem_attrs["block"] == blocked.STEM_BLOCK and stem_attrs["spatial"] == [1, 1, 1, 1]
    stem_conv = next(f for f in compiled.quantized.functions.values()
                     if isinstance(f, tvm.tirx.PrimFunc) and "qcompiler.attrs" in f.attrs
                     and json.loads(str(f.attrs["qcompiler.attrs"])).get("channels") == [3, 24])
    assert "x_pad" not in stem_conv.script()
    blocked_ops = [(op, s) for op, s in kernels if s.startswith("x86_") and "blocked" in s]
    assert sorted(op for op, _ in blocked_ops) == ["conv2d", "conv2d", "conv2d", "conv2d_add",
                                                   "max_pool2d", "max_pool2d",
                                                   "reduce_mean"], kernels
    assert ops[ops.index("reduce_mean") + 1] == "from_blocked"
    lib, lib_flat = build(compiled), build(flat)
    requires_cpu_for(VNNI_TARGET)
    vm = relax.VirtualMachine(lib, tvm.cpu())
    vm_flat = relax.VirtualMachine(lib_flat, tvm.cpu())
    ref = Reference(compiled.quantized, compiled.tvm_target)
    for _ in range(3):
        q = rng.integers(0, 256, inputs[0].shape).astype(np.uint8)
        got = [t.numpy() for t in vm["main_int"](tvm.runtime.tensor(q))]
        want = ref.run(q)
        flat_out = [t.numpy() for t in vm_flat["main_int"](tvm.runtime.tensor(q))]
        tensors, flat_tensors = ref.run_all(q), Reference(flat.quantized).run_all(q)
        for name, t in flat_tensors.items():  # every layer's, the fused conv's included
            np.testing.assert_array_equal(tensors[name], t)
        assert [g.shape for g in got] == [(2, 10), (2, 24, 8, 8)]
        for g, w, f in zip(got, want, flat_out):
            np.testing.assert_array_equal(g, w)
            np.testing.assert_array_equal(g, f)


def _equals_reference_and_nchw(compiled, flat, inputs, rng, runs: int = 2) -> None:
    """The blocked build's one output equals the reference's and the NCHW build's on `runs`
    random inputs, and is not a constant the clamp made (built everywhere, run where the
    CPU has VNNI)."""
    lib, lib_flat = build(compiled), build(flat)
    requires_cpu_for(VNNI_TARGET)
    vm = relax.VirtualMachine(lib, tvm.cpu())
    vm_flat = relax.VirtualMachine(lib_flat, tvm.cpu())
    ref = Reference(compiled.quantized, compiled.tvm_target)
    for _ in range(runs):
        q = rng.integers(0, 256, inputs[0].shape).astype(np.uint8)
        got = vm["main_int"](tvm.runtime.tensor(q)).numpy()  # one output: a tensor, no tuple
        np.testing.assert_array_equal(got, ref.run(q)[0])
        np.testing.assert_array_equal(got, vm_flat["main_int"](tvm.runtime.tensor(q)).numpy())
    assert len(np.unique(got)) > 20


def test_add_of_two_convs_fuses_one(tmp_path, rng):
    """A projection shortcut (a conv of the block's input, beside its conv -> ReLU -> conv):
    both operands of the add are convs read by it alone. One is fused with the add, the other
    runs first; the output equals the reference's and the NCHW build's."""
    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "wa", "ba"], ["ca"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["ca"], ["ra"]),
        helper.make_node("Conv", ["ra", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Conv", ["r0", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c1", "c2"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    inits = {"w0": w(24, 3, 3, 3), "b0": w(24), "w1": w(40, 24, 3, 3), "b1": w(40),
             "w2": w(40, 24, 1, 1), "b2": w(40), "wa": w(24, 24, 3, 3), "ba": w(24)}
    model = make_model(nodes, {"x": ("N", 3, 16, 16)}, {"y": None}, inits)
    compiled, inputs = _compile(model, tmp_path, rng, 3)
    flat, _ = _compile(model, tmp_path, rng, 3, blocked_layout=False)
    ops = [op for op, s in _kernels(compiled.quantized) if "blocked" in s]
    assert ops == ["to_blocked", "conv2d", "conv2d", "conv2d", "conv2d_add", "from_blocked"], \
        ops
    _equals_reference_and_nchw(compiled, flat, inputs, rng, 1)


def _se_model(rng, c=24):
    """An EfficientNet block as exported: conv -> SiLU written out (x * Sigmoid(x)) ->
    depthwise -> hard-swish written out -> SE (global pool, 1x1 conv, ReLU, 1x1 conv,
    Sigmoid, the gate's Mul of the map) -> 1x1 conv."""
    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Sigmoid", ["c0"], ["g0"]),
        helper.make_node("Mul", ["c0", "g0"], ["a0"]),
        helper.make_node("Conv", ["a0", "wd", "bd"], ["cd"], kernel_shape=[3, 3], pads=[1] * 4,
                         group=c),
        helper.make_node("Add", ["cd", "three"], ["h0"]),
        helper.make_node("Clip", ["h0", "zero", "six"], ["h1"]),
        helper.make_node("Mul", ["cd", "h1"], ["h2"]),
        helper.make_node("Div", ["h2", "six"], ["a1"]),
        helper.make_node("GlobalAveragePool", ["a1"], ["p"]),
        helper.make_node("Conv", ["p", "ws", "bs"], ["s0"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["s0"], ["s1"]),
        helper.make_node("Conv", ["s1", "we", "be"], ["s2"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["s2"], ["gate"]),
        helper.make_node("Mul", ["a1", "gate"], ["m"]),
        helper.make_node("Conv", ["m", "w1", "b1"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = {"w0": w(c, 16, 3, 3), "b0": w(c), "wd": w(c, 1, 3, 3), "bd": w(c),
             "ws": w(8, c, 1, 1), "bs": w(8), "we": w(c, 8, 1, 1), "be": w(c),
             "w1": w(40, c, 1, 1), "b1": w(40), "three": np.array(3.0), "zero": np.array(0.0),
             "six": np.array(6.0)}
    return make_model(nodes, {"x": ("N", 16, 16, 16)}, {"y": None}, inits)


@pytest.mark.parametrize("vbmi", [True, False], ids=["vbmi", "no-vbmi"])
def test_tables_and_the_gate_stay_blocked(vbmi, tmp_path, rng):
    """Written-out activations (one table each) and an SE block's gate multiply run on the
    blocked tensors: one conversion in, one out, and the output equals the reference's and
    the NCHW build's bit for bit. Each table takes a conv's output (the 3x3, the depthwise,
    the SE block's expanding 1x1), so it is applied in that conv's epilogue: on `vpermi2b`
    with AVX-512 VBMI, else a byte gather (VNNI without VBMI: Cascade Lake)."""
    import dataclasses

    model = _se_model(rng)
    target = vnni_target() if vbmi else dataclasses.replace(
        vnni_target(), tvm_target={**VNNI_TARGET, "mattr": ["+avx512vnni"]})
    compiled, inputs = _compile(model, tmp_path, rng, 16, target=target)
    flat, _ = _compile(model, tmp_path, rng, 16, blocked_layout=False, target=target)
    fused = [f for f in compiled.quantized.functions.values()
             if isinstance(f, tvm.tirx.PrimFunc)
             and str(f.attrs.get("qcompiler.op")) == "conv2d_lut"]
    assert len(fused) == 3
    assert all(("vpermi2var" in f.script()) == vbmi for f in fused)
    assert sorted(json.loads(str(f.attrs["qcompiler.attrs"]))["lut"]["fn"] for f in fused) \
        == ["elementwise", "elementwise", "sigmoid"]
    kernels = _kernels(compiled.quantized)
    ops = [op for op, _ in kernels]
    assert ops.count("to_blocked") == 1 and ops.count("from_blocked") == 1, kernels
    assert ops[0] == "to_blocked" and ops[-1] == "from_blocked", kernels
    assert "lut" not in ops and ("mul", "x86_blocked") in kernels, kernels
    _equals_reference_and_nchw(compiled, flat, inputs, rng, 3)


@pytest.mark.parametrize("width, channels, k, stride, size", [
    (8, 104, 3, 1, 16),  # RegNet-Y: 13 groups of 8 (7 blocks, the last half padding)
    (4, 32, 3, 2, 16),  # ResNeXt's narrowest groups, stride 2
    (16, 48, 1, 1, 16),  # one block per group
    (32, 64, 3, 1, 16),  # two blocks per group
    (24, 48, 3, 1, 16),  # groups across blocks: stays NCHW
    (8, 48, 3, 2, 48),  # a plane beyond CHUNKED_PLANE_BYTES: each task pads its rows
    (16, 32, 3, 1, 48),
])
def test_grouped_conv_runs_on_whole_blocks(width, channels, k, stride, size, tmp_path, rng):
    """A grouped conv (as many channels in as out per group) between two 1x1 convs runs on
    the blocked layout where its groups tile the 16-channel blocks, bit-exact against the
    reference and the NCHW build; other group widths keep their NCHW kernel. On a large
    plane the padded input is made a few rows at a time by each parallel task."""
    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "wg", "bg"], ["cg"], kernel_shape=[k, k],
                         pads=[k // 2] * 4, strides=[stride] * 2, group=channels // width),
        helper.make_node("Relu", ["cg"], ["rg"]),
        helper.make_node("Conv", ["rg", "w1", "b1"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = {"w0": w(channels, 16, 1, 1), "b0": w(channels), "wg": w(channels, width, k, k),
             "bg": w(channels), "w1": w(24, channels, 1, 1), "b1": w(24)}
    model = make_model(nodes, {"x": ("N", 16, size, size)}, {"y": None}, inits)
    compiled, inputs = _compile(model, tmp_path, rng, 16, size=size)
    flat, _ = _compile(model, tmp_path, rng, 16, size=size, blocked_layout=False)
    ops = [op for op, s in _kernels(compiled.quantized) if "blocked" in s]
    grouped = [f for f in compiled.quantized.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
               and str(f.attrs.get("qcompiler.schedule", "")) == "x86_vnni_blocked"
               and json.loads(str(f.attrs["qcompiler.attrs"])).get("groups", 1) > 1]
    if k > 1 and grouped:  # the padded copy in a parallel loop of its own, or in the conv's
        plane = (size + 2) ** 2 * 16 > blocked.CHUNKED_PLANE_BYTES
        assert grouped[0].script().count("T.parallel(") == (1 if plane else 2)
    tiles = 16 % width == 0 or width % 16 == 0
    assert ops == (["to_blocked", "conv2d", "conv2d", "conv2d", "from_blocked"] if tiles else
                   ["to_blocked", "conv2d", "from_blocked", "to_blocked", "conv2d",
                    "from_blocked"]), ops
    _equals_reference_and_nchw(compiled, flat, inputs, rng, 2)


@pytest.mark.parametrize("first, second", [(32, 24), (24, 16)])
def test_concat_of_whole_blocks_stays_blocked(first, second, tmp_path, rng):
    """A fire module: two convs of one input concatenated along channels (each writing the
    concat's qparams itself: `calibrate.concat_inputs_shared`), then a conv. Where the first
    branch's channels fill whole blocks the concat joins the blocked tensors (no conversion);
    else it runs in NCHW. Bit-exact against the reference and the NCHW build either way."""
    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Concat", ["r0", "r1"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w2", "b2"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = {"w0": w(first, 16, 1, 1), "b0": w(first), "w1": w(second, 16, 3, 3) * 2,
             "b1": w(second), "w2": w(24, first + second, 1, 1), "b2": w(24)}
    model = make_model(nodes, {"x": ("N", 16, 16, 16)}, {"y": None}, inits)
    compiled, inputs = _compile(model, tmp_path, rng, 16)
    flat, _ = _compile(model, tmp_path, rng, 16, blocked_layout=False)
    kernels = _kernels(compiled.quantized)
    ops = [op for op, _ in kernels]
    whole = first % 16 == 0
    assert ops.count("from_blocked") == (1 if whole else 3), kernels
    assert ops.count("to_blocked") == (1 if whole else 2), kernels
    assert "requantize" not in ops and "lut" not in ops, kernels  # (the branches: on its grid)
    if whole:
        assert ops == ["to_blocked", "conv2d", "conv2d", "conv2d", "from_blocked"], kernels
    _equals_reference_and_nchw(compiled, flat, inputs, rng, 2)


def test_pass_leaves_graphs_without_vnni_alone(tmp_path, rng):
    """On AVX2 (no vpdpbusd) the pass returns the module unchanged."""
    import dataclasses

    model = _residual_model(rng)
    compiled, _ = _compile(model, tmp_path, rng, 3, schedules=False)
    avx2 = dataclasses.replace(vnni_target(), tvm_target=AVX2_TARGET)
    assert plan_layout(avx2)(compiled.quantized).same_as(compiled.quantized)
    after = plan_layout(vnni_target())(compiled.quantized)
    assert sum(op == "to_blocked" for op, _ in _kernels(after)) == 1


def test_blocked_graph_in_the_libraries_at_one_and_two_threads(tmp_path, rng):
    """The runtime-free C library and the TVM library (1 and 2 worker threads: the blocked
    kernels' parallel loops split disjoint outputs) give the reference's integers."""
    from qcompiler.backend.emit import emit
    from qcompiler.backend.runtime import CompiledModel, StandaloneModel, set_threads

    model = _residual_model(rng, cin=16)
    compiled, _ = _compile(model, tmp_path, rng, 16)
    assert [op for op, _ in _kernels(compiled.quantized)][:2] == ["to_blocked", "conv2d"]
    emit(compiled, build(compiled), tmp_path / "out")
    requires_cpu_for(VNNI_TARGET)
    ref = Reference(compiled.quantized, compiled.tvm_target)
    standalone = StandaloneModel(tmp_path / "out")
    q = rng.integers(0, 256, standalone.inputs[0]["shape"]).astype(np.uint8)
    want = ref.run(q)
    for got, w in zip(standalone.run_int(q), want):
        np.testing.assert_array_equal(got, w)
    try:
        for n in (1, 2):
            lib = CompiledModel(tmp_path / "out", threads=n)
            for got, w in zip(lib.run_int(q), want):
                np.testing.assert_array_equal(got, w)
    finally:
        set_threads(None)


# add: (m0_a, shift_a, m0_b, shift_b, k, zero points); the first two rescale with one 32-bit
# multiply, the next with m0 split in halves (t <= 16 and t > 16), as ResNet-50's residual
# adds (k = 16); the last needs the 64-bit form (its result does not fit in int32).
ADD_CASES = [
    (1518500250, 8, 1317922825, 7, 8, (128, 3, 131)),
    (2000000000, 4, 1100000000, 3, 4, (0, 255, 77)),
    (2081898306, 16, 1120354395, 13, 16, (0, 0, 17)),
    (1987092630, 12, 1504148371, 10, 13, (163, 201, 128)),
    (2147000000, 30, 2147000000, 30, 0, (128, 128, 128)),
]


@pytest.mark.parametrize("case", ADD_CASES, ids=["one", "one-zp", "split-low", "split-high",
                                                  "int64"])
def test_blocked_add_equals_reference(case, rng):
    from qcompiler.reference import add as ref_add

    m0_a, sh_a, m0_b, sh_b, k, (zp_a, zp_b, zp_y) = case
    attrs = {"m0_a": m0_a, "shift_a": sh_a, "m0_b": m0_b, "shift_b": sh_b, "k": k,
             "zp_a": zp_a, "zp_b": zp_b, "zp_y": zp_y, "lo": 0, "hi": 255,
             "out_dtype": "uint8"}
    form = blocked.rescale_form(m0_a, sh_a, np.arange(256) - zp_a, zp_a)
    kind = "int64" if form is None else "split" if form.split else "one"
    assert kind == {0: "one", 1: "one", 2: "split", 3: "split", 4: "int64"}[
        ADD_CASES.index(case)]
    shape = (1, 16, 16, 16, 16)  # every (a, b) pair of bytes
    a = np.repeat(np.arange(256), 256).astype(np.uint8).reshape(shape)
    b = np.tile(np.arange(256), 256).astype(np.uint8).reshape(shape)
    func = blocked.add(shape, "uint8", "uint8", attrs)
    want = ref_add(a, b, attrs)
    np.testing.assert_array_equal(_run(func, [a, b], shape), want)
    if kind != "int64":  # (a result too wide for int32 saturates)
        assert len(np.unique(want)) > 20  # the clamp does not hide the arithmetic


@pytest.mark.parametrize("m0, shift, shifts", [(1518500250, -8, "right"),
                                               (2147483647, -2, "right"),
                                               (1073741824, -22, "right"),
                                               (1518500250, 1, "any")])
@pytest.mark.parametrize("gate", [True, False], ids=["gate", "same-shape"])
def test_blocked_mul_equals_reference(m0, shift, shifts, gate, rng):
    """Every pair of bytes through the multiply, in the right-shift form (the shift's range
    ends included) and the general one, with a 1x1 gate broadcast over a map or two tensors
    of one shape."""
    from qcompiler.reference import mul as ref_mul

    attrs = {"zp_a": 3, "zp_b": 131, "zp_y": 77, "lo": 0, "hi": 255, "out_dtype": "uint8",
             "layout": blocked.LAYOUT}
    shape = (1, 16, 16, 16, 16)  # b: every byte at every gate value
    b = np.tile(np.arange(256), 256).astype(np.uint8).reshape(shape)
    if gate:
        a = np.arange(256).astype(np.uint8).reshape(1, 16, 1, 1, 16)
    else:
        a = np.repeat(np.arange(256), 256).astype(np.uint8).reshape(shape)
    m = [np.array([[[[v]]]], np.int32) for v in (m0, shift)]
    func = blocked.mul(shape, a.shape, "uint8", shape, "uint8", (1, 1, 1, 1), attrs, shifts)
    want = to_blocked(ref_mul(unblocked(a), unblocked(b), *m, attrs), {"block": 16, "pad": 0})
    np.testing.assert_array_equal(_run(func, [a, b, *m], shape), want)
    if shift > -12:  # (a product of bytes times 2^-23 rounds to 0 everywhere)
        assert len(np.unique(want)) > 20


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_blocked_global_mean_equals_reference(dtype, rng):
    """The mean over h and w (a global average pool) on NCHW16c, 7x5 planes of 3 channel
    blocks at batch 2: the reference's sums and rounding, every lane."""
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    attrs = {"axes": [2, 3], "keepdims": True, "zp_x": 9 if dtype == "uint8" else -3,
             "zp_y": 4, "m0": 1518500250, "shift": -5, "lo": lo, "hi": hi, "out_dtype": dtype}
    x = rng.integers(lo, hi + 1, (2, 3, 7, 5, 16)).astype(dtype)
    x[0, 0, :, :, 0], x[0, 0, :, :, 1] = lo, hi  # the extreme sums
    func = blocked.global_mean(x.shape, dtype, attrs)
    want = kernel_for("reduce_mean", {**attrs, "layout": blocked.LAYOUT})(
        x, {**attrs, "layout": blocked.LAYOUT})
    assert want.shape == (2, 3, 1, 1, 16) and len(np.unique(want)) > 20
    np.testing.assert_array_equal(_run(func, [x], want.shape, dtype), want)


# conv fused with the add it feeds: (cin, cout, size, kernel, stride, pads, conv side, add
# case of ADD_CASES): ResNet-50's 1x1 expansion (the split form), a 3x3 with channel counts
# off 16, the conv as the add's second operand, the 64-bit add.
CONV_ADD_CASES = [
    (64, 256, 16, 1, 1, (0, 0, 0, 0), "a", 2),
    (33, 40, 9, 3, 1, (1, 1, 1, 1), "b", 0),
    (32, 24, 8, 1, 1, (0, 0, 0, 0), "a", 4),
]


@pytest.mark.parametrize("case", CONV_ADD_CASES, ids=lambda c: "c{}o{}k{}{}".format(
    c[0], c[1], c[3], c[6]))
@pytest.mark.parametrize("shifts", ["any", "right"])
def test_blocked_conv_fused_with_add_equals_reference(case, shifts, rng):
    """The conv's bytes, then the add, in one kernel: equal to the blocked reference (padded
    channels included) and to the unfused reference's conv then add."""
    from qcompiler.reference import add as ref_add

    cin, cout, hw, k, s, pads, side, add_case = case
    m0_a, sh_a, m0_b, sh_b, kk, (zp_a, zp_b, zp_y) = ADD_CASES[add_case]
    add_attrs = {"m0_a": m0_a, "shift_a": sh_a, "m0_b": m0_b, "shift_b": sh_b, "k": kk,
                 "zp_a": zp_a, "zp_b": zp_b, "zp_y": zp_y, "lo": 0, "hi": 255,
                 "out_dtype": "uint8"}
    c_in, c_out = blocked.padded_channels(cin), blocked.padded_channels(cout)
    w, bias, m0, shift = _layer(rng, cout, cin, k, c_out)
    wp = np.zeros((c_out, c_in, k, k), np.int8)
    wp[:, :cin] = w
    conv = _attrs(s, pads, 1, 1)
    conv["zp_y"] = zp_a if side == "a" else zp_b
    attrs = {**conv, "add": add_attrs, "conv_side": side, "skip_dtype": "uint8",
             "conv_tensor": "c"}
    x4 = rng.integers(0, 256, (1, cin, hw, hw)).astype(np.uint8)
    x = to_blocked(x4, {"block": 16, "pad": 7})
    oh = (hw + pads[0] + pads[2] - k) // s + 1
    skip4 = rng.integers(0, 256, (1, cout, oh, oh)).astype(np.uint8)
    skip = to_blocked(skip4, {"block": 16, "pad": zp_b if side == "a" else zp_a})
    packed, fb = blocked.BLOCKED_VNNI.pack_operands(wp, bias, conv)
    func = blocked.BLOCKED_VNNI.build("conv2d_add", x.shape, "uint8", wp.shape, attrs,
                                      shifts=shifts)
    assert str(func.attrs["qcompiler.schedule"]).endswith("_add")  # not a tuning task
    ops = [x, packed, fb, m0, shift, skip]
    fattrs = json.loads(str(func.attrs["qcompiler.attrs"]))
    want = kernel_for("conv2d_add", fattrs)(*ops, fattrs)
    got = _run(func, ops, want.shape)
    np.testing.assert_array_equal(got, want)
    plain = {k: v for k, v in conv.items() if k != "layout"}
    y = ref_conv2d(x4, w[:cout], bias[:cout], m0[:cout], shift[:cout], plain)
    real = ref_add(y, skip4, add_attrs) if side == "a" else ref_add(skip4, y, add_attrs)
    np.testing.assert_array_equal(unblocked(got)[:, :cout], real)
    if add_case != 4:  # (the 64-bit case's result is too wide: it saturates)
        assert len(np.unique(real)) > 20  # the clamps do not hide the arithmetic


# conv fused with the table that takes its output: (cin, cout, size, kernel, stride, groups)
# with register blocks of 4 columns (whole 64-byte lookups), 7 (64 + 48 bytes), 13 (one block:
# 3 x 64 + 16), a stem (RGB by 4), and depthwise convs of 14 and 7 columns.
CONV_LUT_CASES = [
    (32, 64, 16, 1, 1, 1),
    (40, 48, 14, 3, 1, 1),
    (64, 64, 13, 3, 1, 1),
    (3, 32, 18, 3, 2, 1),
    (48, 48, 14, 3, 1, 48),
    (32, 32, 14, 5, 2, 32),
]


@pytest.mark.parametrize("case", CONV_LUT_CASES, ids=lambda c: "c{}o{}hw{}k{}s{}g{}".format(*c))
@pytest.mark.parametrize("x_dtype, out_dtype", [("uint8", "uint8"), ("int8", "int8"),
                                                ("uint8", "int8")])
@pytest.mark.parametrize("lookup", ["vbmi", "gather"])
def test_blocked_conv_fused_with_table_equals_reference(case, x_dtype, out_dtype, lookup, rng):
    """The conv's bytes, then the table, in the conv's epilogue (`table_stage`): equal to the
    blocked reference (padded channels included) and to the unfused reference's conv then
    table; with VBMI the lookups are `vpermi2b` over whole and part-filled 64-byte runs."""
    from qcompiler.numerics import lut
    from qcompiler.numerics.qparams import QParams
    from qcompiler.reference import lut as ref_lut

    cin, cout, hw, k, s, groups = case
    stem = cin < 16
    block = blocked.STEM_BLOCK if stem else blocked.BLOCK
    c_in, c_out = -(-cin // block) * block, blocked.padded_channels(cout)
    depthwise = groups > 1
    w, bias, m0, shift = _layer(rng, cout, 1 if depthwise else cin, k, c_out)
    if depthwise:  # 9 or 25 taps: a larger multiplier spreads the outputs as widely
        shift = np.full(c_out, -6, np.int32)
    lo, hi = (-128, 127) if x_dtype == "int8" else (0, 255)
    conv = {**_attrs(s, (k // 2,) * 4, 1, c_out if depthwise else 1, hi),
            "zp_y": lo + 90, "lo": lo, "hi": hi, "out_dtype": x_dtype, "channels": [cin, cout]}
    silu = {"steps": [{"op": "silu", "args": ["%0"]}]}
    table_attrs = lut.lut_attrs("elementwise", [silu], 0, QParams(0.04, lo + 90, x_dtype),
                                QParams(0.02, -100 if out_dtype == "int8" else 30, out_dtype))
    attrs = {**conv, "lut": table_attrs, "conv_tensor": "c"}
    if lookup == "vbmi":
        attrs["table_lookup"] = "vbmi"
    x4 = rng.integers(0, 256, (1, cin, hw, hw)).astype(np.uint8)
    x = to_blocked(x4, {"block": block, "pad": 7})
    if depthwise:
        func = blocked.depthwise(x.shape, "uint8", w.shape, attrs, "right", True)
        ops = [x, pack_depthwise(w, 16), folded_bias(w, bias, 121), m0, shift]
    else:
        wp = np.zeros((c_out, c_in, k, k), np.int8)
        wp[:, :cin] = w
        packed, fb = blocked.BLOCKED_VNNI.pack_operands(wp, bias, conv)
        func = blocked.BLOCKED_VNNI.build("conv2d_lut", x.shape, "uint8", wp.shape, attrs,
                                          shifts="right")
        ops = [x, packed, fb]
        ops += [m0, shift]
    assert str(func.attrs["qcompiler.op"]) == "conv2d_lut"
    assert ("vpermi2var" in func.script()) == (lookup == "vbmi")
    ops.append(lut.tables(table_attrs))
    fattrs = json.loads(str(func.attrs["qcompiler.attrs"]))
    want = kernel_for("conv2d_lut", fattrs)(*ops, fattrs)
    np.testing.assert_array_equal(_run(func, ops, want.shape, want.dtype), want)
    plain = {k: v for k, v in conv.items() if k != "layout"}
    if depthwise:
        plain["groups"] = cout
    y = ref_conv2d(x4, w[:cout], bias[:cout], m0[:cout], shift[:cout], plain)
    real = ref_lut(y, lut.tables(table_attrs), table_attrs)
    np.testing.assert_array_equal(unblocked(want)[:, :cout], real)
    assert len(np.unique(y)) > 100 and len(np.unique(real)) > 40  # every part of the table
