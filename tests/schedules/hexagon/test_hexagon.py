"""Hexagon HVX: vrmpy in the conv kernels, vector pools and add, no HVX float anywhere, every
integer op (channel counts off the vector width too) bit-exact under qemu-hexagon, the
plain-vectorized comparison variant, and the packet counter as a cost proxy."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from conftest import make_model, save_calib, save_model
from onnx import helper, numpy_helper

from qcompiler.api import compile_only
from qcompiler.backend.emit import emit
from qcompiler.backend.hexagon_cost import count_packets, per_kernel
from qcompiler.backend.runtime import StandaloneModel
from qcompiler.reference import Reference

HVX_FLOAT = re.compile(r"\.(sf|hf|qf16|qf32)\b")


def _conv_model(cin, cout, k, hw, rng, groups=1):
    w = (rng.standard_normal((cout, cin // groups, k, k)) * 0.3).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k],
                            pads=[k // 2] * 4, group=groups)
    return make_model([node, helper.make_node("Relu", ["c"], ["y"])],
                      {"x": (1, cin, hw, hw)}, {"y": None},
                      {"w": w, "b": rng.standard_normal(cout).astype(np.float32)})


def _build(model, tmp: Path, rng, cin_shape, **kw):
    calib = {"x": rng.standard_normal((4, *cin_shape)).astype(np.float32)}
    compiled = compile_only(save_model(model, tmp), save_calib(calib, tmp), tmp / "out",
                            target="hexagon", **kw)
    emit(compiled, None, tmp / "out")
    return compiled, StandaloneModel(tmp / "out")


def _disassembly(lib: Path) -> str:
    return subprocess.run(["llvm-objdump", "-d", "--triple=hexagon", "--mcpu=hexagonv68",
                           "--mattr=+hvxv68,+hvx-length128b", str(lib)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize("cin,cout,k,hw,groups", [
    (40, 33, 3, 6, 1),    # neither channel count a multiple of 32
    (130, 70, 1, 4, 1),   # reduction past 128
    (33, 33, 3, 5, 33),   # depthwise, 33 channels
    (3, 129, 3, 5, 1),    # 129 outputs: five 32-lane blocks, the last nearly empty
])
def test_off_width_channel_counts_bit_exact(cin, cout, k, hw, groups, tmp_path, rng):
    compiled, lib = _build(_conv_model(cin, cout, k, hw, rng, groups), tmp_path, rng,
                           (cin, hw, hw))
    ref = Reference(compiled.quantized)
    for _ in range(2):
        q = rng.integers(0, 256, (1, cin, hw, hw)).astype(np.uint8)
        np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])


def test_conv_kernel_uses_vrmpy_and_no_hvx_float(tmp_path, rng):
    _, lib = _build(_conv_model(16, 32, 3, 8, rng), tmp_path, rng, (16, 8, 8))
    dis = _disassembly(tmp_path / "out" / "libmodel.a")
    bodies = dis.split("\n\n")
    conv = [b for b in bodies if re.search(r"<q\d+_conv2d_compute_>:", b)]
    assert conv and all("vrmpy" in b for b in conv)
    kernels = [b for b in bodies if re.search(r"<q\d+_\w+_compute_>:", b)]
    assert not [b.splitlines()[0] for b in kernels if HVX_FLOAT.search(b)]


def test_packet_counts_are_deterministic_and_vrmpy_beats_portable(tmp_path, rng):
    model = _conv_model(16, 32, 3, 10, rng)
    q = rng.integers(0, 256, (1, 16, 10, 10)).astype(np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _build(model, tmp_path / "a", rng, (16, 10, 10))
    _build(model, tmp_path / "b", rng, (16, 10, 10), schedules=False)
    first = per_kernel(count_packets(tmp_path / "a" / "out", q))
    again = per_kernel(count_packets(tmp_path / "a" / "out", q))
    portable = per_kernel(count_packets(tmp_path / "b" / "out", q))
    assert first == again
    conv = next(k for k in first if k.endswith("conv2d"))
    assert 0 < first[conv] * 5 < portable[conv]
    assert first["<total>"] < portable["<total>"]


def _graph(nodes, in_shape, tmp: Path, rng, inits=None, outputs=("y",), rules=None):
    """Compile a graph for hexagon (the target's kernels, or portable kernels then `rules`);
    the runtime-free library under qemu equals the reference on two random inputs."""
    from qcompiler.schedules import apply_schedules

    model = make_model(nodes, {"x": in_shape}, {o: None for o in outputs}, inits)
    calib = {"x": rng.standard_normal((4, *in_shape[1:])).astype(np.float32)}
    compiled = compile_only(save_model(model, tmp), save_calib(calib, tmp), tmp / "out",
                            target="hexagon", schedules=rules is None)
    if rules is not None:
        compiled.quantized = apply_schedules(compiled.quantized, compiled.target, rules)
    emit(compiled, None, tmp / "out")
    lib, ref = StandaloneModel(tmp / "out"), Reference(compiled.quantized)
    for _ in range(2):
        q = rng.integers(0, 256, in_shape).astype(np.uint8)
        for got, want in zip(lib.run_int(q), ref.run(q), strict=True):
            np.testing.assert_array_equal(got, want)
    return compiled, lib


def _schedules(compiled) -> dict[str, set[str]]:
    """op -> the schedules its kernels were built with ("portable" for none)."""
    out: dict[str, set[str]] = {}
    for func in compiled.quantized.functions.values():
        if isinstance(func, tvm.tirx.PrimFunc) and "qcompiler.op" in func.attrs:
            out.setdefault(str(func.attrs["qcompiler.op"]), set()).add(
                str(func.attrs.get("qcompiler.schedule", "portable")))
    return out


def _kernel_bodies(lib_path: Path, op: str) -> list[str]:
    return [b for b in _disassembly(lib_path).split("\n\n")
            if re.search(rf"<q\d+_{op}_compute_>:", b)]


def _const(name: str, values, dtype=np.int64):  # noqa: ANN001
    return helper.make_node("Constant", [], [name],
                            value=numpy_helper.from_array(np.array(values, dtype)))


@pytest.mark.parametrize("shape", [(1, 33, 5, 7), (1, 130, 3, 4)])
def test_elementwise_and_table_ops_bit_exact(shape, tmp_path, rng):
    """Every elementwise integer op (tables, mul, add, requantize) in one graph. A 1x1 max pool
    gives the Add and the second Mul two different tensors: elementwise math on one tensor is
    a single table (`passes.fuse_elementwise`), which would leave no add or mul kernel."""
    c = shape[1]
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]),
             helper.make_node("MaxPool", ["x"], ["xp"], kernel_shape=[1, 1]),
             helper.make_node("Tanh", ["xp"], ["t"]),
             helper.make_node("Add", ["s", "t"], ["a"]),
             helper.make_node("LeakyRelu", ["a"], ["l"], alpha=0.1),
             helper.make_node("HardSwish", ["l"], ["h"]),
             helper.make_node("PRelu", ["h", "slope"], ["p"]),
             helper.make_node("HardSigmoid", ["p"], ["g"]),
             helper.make_node("Mul", ["g", "k"], ["m"]),
             helper.make_node("Mul", ["m", "xp"], ["mm"]),
             helper.make_node("Clip", ["mm", "lo", "hi"], ["y"])]
    inits = {"slope": rng.uniform(0.05, 0.3, (c, 1, 1)), "k": rng.uniform(-2, 2, (c, 1, 1)),
             "lo": np.array(0.0), "hi": np.array(0.5)}
    compiled, lib = _graph(nodes, shape, tmp_path, rng, inits)
    assert all(layer["status"] == "integer" for layer in lib.meta["layers"])
    assert {"lut", "add", "mul", "requantize"} <= set(_schedules(compiled))
    assert _schedules(compiled)["add"] == {"hvx_vector"}


@pytest.mark.parametrize("shape", [(1, 33, 8, 10), (1, 130, 6, 6)])
def test_spatial_ops_bit_exact(shape, tmp_path, rng):
    """Pad, pools, concat, resize (nearest and bilinear), transposed conv and the mean."""
    c = shape[1]
    nodes = [_const("pads", [0, 0, 1, 1, 0, 0, 1, 1]),
             helper.make_node("Pad", ["x", "pads"], ["pd"]),
             helper.make_node("MaxPool", ["pd"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Concat", ["mp", "ap"], ["cc"], axis=1),
             _const("sc", [1.0, 1.0, 2.0, 2.0], np.float32),
             helper.make_node("Resize", ["cc", "", "sc"], ["rn"], mode="nearest"),
             helper.make_node("Resize", ["cc", "", "sc"], ["rl"], mode="linear"),
             helper.make_node("Add", ["rn", "rl"], ["y"]),
             helper.make_node("ConvTranspose", ["cc", "wt"], ["ct"], strides=[2, 2],
                              kernel_shape=[2, 2]),  # the conv of its phases, interleaved
             helper.make_node("ConvTranspose", ["cc", "wg"], ["cg"], strides=[2, 2],
                              kernel_shape=[3, 3], group=2),  # zero-inserted
             helper.make_node("ReduceMean", ["cc"], ["rm"], axes=[2, 3], keepdims=1)]
    inits = {"wt": rng.standard_normal((2 * c, 7, 2, 2)) * 0.2,
             "wg": rng.standard_normal((2 * c, 3, 3, 3)) * 0.2}
    compiled, lib = _graph(nodes, shape, tmp_path, rng, inits, outputs=("y", "ct", "cg", "rm"))
    assert all(layer["status"] == "integer" for layer in lib.meta["layers"])
    assert {"max_pool2d", "avg_pool2d", "resize_nearest", "resize_bilinear",
            "conv2d_transpose", "reduce_mean", "add"} <= set(_schedules(compiled))


@pytest.mark.parametrize("k,hidden,out", [(37, 45, 33), (130, 129, 10)])
def test_dense_layers_bit_exact(k, hidden, out, tmp_path, rng):
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["g"], transB=1),
             helper.make_node("Relu", ["g"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    inits = {"w1": rng.standard_normal((hidden, k)) * 0.2, "b1": rng.standard_normal(hidden),
             "w2": rng.standard_normal((out, hidden)) * 0.2, "b2": rng.standard_normal(out)}
    compiled, _ = _graph(nodes, (3, k), tmp_path, rng, inits)
    assert _schedules(compiled)["dense"] == {"hexagon_vrmpy"}


def test_plain_vectorized_variant_bit_exact_without_hvx_float(tmp_path, rng):
    """The comparison baseline (`hexagon.plain`): conv, depthwise and dense on int32 lanes."""
    from qcompiler.schedules.hexagon.plain import PLAIN_VECTOR_RULES

    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "dw"], ["d"], kernel_shape=[3, 3], pads=[1] * 4,
                              group=33),
             helper.make_node("Flatten", ["d"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = {"w": rng.standard_normal((33, 40, 3, 3)) * 0.2, "b": rng.standard_normal(33),
             "dw": rng.standard_normal((33, 1, 3, 3)) * 0.3,
             "fw": rng.standard_normal((37, 33 * 36)) * 0.05, "fb": rng.standard_normal(37)}
    compiled, _ = _graph(nodes, (1, 40, 6, 6), tmp_path, rng, inits, rules=PLAIN_VECTOR_RULES)
    kinds = _schedules(compiled)
    # The depthwise conv's rows (6 int32 lanes) are too short for `hexagon.plain`: it takes the
    # whole-plane kernel every hexagon compile uses (`hexagon.depthwise`).
    assert kinds["conv2d"] == {"hvx_plain", "hvx_vector"} and kinds["dense"] == {"hvx_plain"}
    lib = tmp_path / "out" / "libmodel.a"
    bodies = _kernel_bodies(lib, "conv2d")[:1] + _kernel_bodies(lib, "dense")
    assert bodies and all(re.search(r"v\d+\.w \+?= vmpyi", b) for b in bodies)
    assert not [b.splitlines()[0] for b in bodies if HVX_FLOAT.search(b)]
    assert not any("vrmpy" in b for b in bodies)


def test_ceil_mode_pools_on_hvx_vectors(tmp_path, rng):
    """ceil_mode=1 pools of row stride 2 (the rows' grown padding) with rows of 64+ bytes:
    HVX vector code, bit-exact under qemu."""
    nodes = [helper.make_node("MaxPool", ["x"], ["mx"], kernel_shape=[3, 3], strides=[2, 1],
                              pads=[1] * 4, ceil_mode=1),
             helper.make_node("AveragePool", ["mx"], ["y"], kernel_shape=[3, 3], strides=[2, 1],
                              pads=[0, 1, 0, 1], ceil_mode=1, count_include_pad=1)]
    compiled, lib = _graph(nodes, (1, 2, 10, 70), tmp_path, rng)
    assert all(_schedules(compiled)[op] == {"hvx_vector"} for op in ("max_pool2d", "avg_pool2d"))
    # rows: 10 -> ceil(9 / 2) + 1 = 6 (floor: 5) -> ceil(3 / 2) + 1 = 3 (floor: 2)
    assert tuple(lib.outputs[0]["shape"]) == (1, 2, 3, 70)


def test_pools_and_add_on_hvx_vectors(tmp_path, rng):
    """Stride-1 pools with rows of 64+ bytes and the add: HVX vector code, bit-exact, no HVX
    float, and a fraction of the portable kernels' packets."""
    nodes = [helper.make_node("MaxPool", ["x"], ["mx"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("AveragePool", ["x"], ["av"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Add", ["mx", "av"], ["y"])]
    shape = (1, 3, 8, 130)  # 3120 outputs: 24 vectors of 128 and a scalar tail of 48
    (tmp_path / "hvx").mkdir()
    (tmp_path / "portable").mkdir()
    compiled, lib = _graph(nodes, shape, tmp_path / "hvx", rng)
    kinds = _schedules(compiled)
    assert all(kinds[op] == {"hvx_vector"} for op in ("max_pool2d", "avg_pool2d", "add"))
    archive = tmp_path / "hvx" / "out" / "libmodel.a"
    vector_op = {"max_pool2d": r"v\d+\.ub = vmax\(", "avg_pool2d": r"v\d+(:\d+)?\.w = vadd\(",
                 "add": r"v\d+(:\d+)?(\.w)? \+?= vmpy[eo]\("}
    for op, pattern in vector_op.items():
        bodies = _kernel_bodies(archive, op)
        assert bodies and all(re.search(pattern, b) for b in bodies), op
        assert not any(HVX_FLOAT.search(b) for b in bodies), op
    _graph(nodes, shape, tmp_path / "portable", rng, rules=[])
    q = rng.integers(0, 256, shape).astype(np.uint8)
    hvx = per_kernel(count_packets(tmp_path / "hvx" / "out", q))
    portable = per_kernel(count_packets(tmp_path / "portable" / "out", q))
    for op in vector_op:
        name = next(k for k in hvx if k.endswith(op))
        assert hvx[name] * 5 < portable[name], (op, hvx[name], portable[name])


@pytest.mark.parametrize("c,hw,k,dilation", [(31, 9, 3, 1), (16, 12, 5, 2),
                                            (16, 24, 1, 1)])  # (1x1: no tap loops)
def test_depthwise_on_whole_planes(c, hw, k, dilation, tmp_path, rng):
    """Stride-1 depthwise convs of fewer than 32 channels run on HVX vectors over the padded
    plane, bit-exact, with one channel's planes as scratch (not the layer's)."""
    pad = dilation * (k // 2)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], group=c,
                              pads=[pad] * 4, dilations=[dilation] * 2)]
    inits = {"w": rng.standard_normal((c, 1, k, k)) * 0.3, "b": rng.standard_normal(c)}
    compiled, _ = _graph(nodes, (1, c, hw, hw), tmp_path, rng, inits)
    assert _schedules(compiled)["conv2d"] == {"hvx_vector"}
    bodies = _kernel_bodies(tmp_path / "out" / "libmodel.a", "conv2d")
    assert bodies and all(re.search(r"v\d+\.w \+?= vmpyie", b) for b in bodies)
    assert not any(HVX_FLOAT.search(b) for b in bodies)
    # the plane-sized buffers are one channel's: 1.4-1.8x the live bytes (all channels': 5x)
    lib = json.loads((tmp_path / "out" / "model.json").read_text())["standalone"]
    assert lib["workspace_bytes"] < 2 * lib["live_activation_bytes"], lib


@pytest.mark.parametrize("c,hw,k,stride,dilation", [
    (33, 9, 3, 1, 1),   # a second block of one channel
    (64, 7, 3, 2, 1),   # strided
    (40, 10, 5, 1, 2),  # dilated
])
def test_depthwise_with_channels_in_lanes(c, hw, k, stride, dilation, tmp_path, rng):
    """Depthwise convs of 32 channels or more run with the channels in the HVX lanes
    (`hexagon.depthwise_lanes`), any stride and dilation, bit-exact under qemu."""
    pad = dilation * (k // 2)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], group=c,
                              pads=[pad] * 4, dilations=[dilation] * 2, strides=[stride] * 2)]
    inits = {"w": rng.standard_normal((c, 1, k, k)) * 0.3, "b": rng.standard_normal(c)}
    compiled, _ = _graph(nodes, (1, c, hw, hw), tmp_path, rng, inits)
    assert _schedules(compiled)["conv2d"] == {"hvx_channel_lanes"}
    bodies = _kernel_bodies(tmp_path / "out" / "libmodel.a", "conv2d")
    assert bodies and not any(HVX_FLOAT.search(b) for b in bodies)


def test_small_planes_take_fewer_packets_with_channels_in_lanes(tmp_path, rng):
    """A 4x4 plane (mobilenet_v3_small's late layers at 64x64): the channels-in-lanes kernel
    against the plane kernel it replaces, same graph, packets under qemu."""
    from qcompiler.schedules.hexagon.depthwise_lanes import HVX_CHANNEL_LANES
    from qcompiler.schedules.hexagon.vector import HVX_VECTOR

    c, hw = 64, 4
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[5, 5], group=c,
                              pads=[2] * 4)]
    inits = {"w": rng.standard_normal((c, 1, 5, 5)) * 0.3, "b": rng.standard_normal(c)}
    packets = {}
    for name, rules in (("lanes", [HVX_CHANNEL_LANES]), ("plane", [HVX_VECTOR])):
        (tmp_path / name).mkdir()
        _graph(nodes, (1, c, hw, hw), tmp_path / name, rng, inits, rules=rules)
        q = rng.integers(0, 256, (1, c, hw, hw)).astype(np.uint8)
        counts = per_kernel(count_packets(tmp_path / name / "out", q))
        packets[name] = next(v for k, v in counts.items() if k.endswith("conv2d"))
    assert packets["lanes"] * 3 < packets["plane"] * 2, packets  # (1.79x when written)


def test_vrmpy_convs_of_large_inputs_pack_a_row_block_at_a_time(tmp_path, rng):
    """Where the whole packed input would take HEXAGON_ROW_PACKING_FROM bytes or more (the
    workspace's largest part otherwise) each task packs the rows it reads; below, the input
    is packed whole (fewer packets). A row-packed conv equals the reference under qemu."""
    import dataclasses

    from qcompiler.schedules.dot_product import ROW_PACKED
    from qcompiler.schedules.hexagon.dot import HEXAGON_VRMPY

    attrs = {"strides": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1,
             "zp_x": 3, "zp_y": 5, "lo": 0, "hi": 255, "out_dtype": "uint8"}

    def packs_rows(rule, hw: tuple) -> bool:
        sch = tvm.s_tir.Schedule(rule.workload("conv2d", (1, 16, *hw), "uint8", (32, 16, 3, 3),
                                               attrs))
        rule.schedule(sch)
        return ROW_PACKED in sch.mod.script()

    assert packs_rows(HEXAGON_VRMPY, (170, 200))  # 16 x 172 x 202 bytes packed: 556 KB
    assert not packs_rows(HEXAGON_VRMPY, (12, 12))
    rows = dataclasses.replace(HEXAGON_VRMPY, row_packing_from=0)
    assert packs_rows(rows, (12, 12))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
    inits = {"w": rng.standard_normal((32, 16, 3, 3)) * 0.2, "b": rng.standard_normal(32)}
    compiled, _ = _graph(nodes, (1, 16, 12, 12), tmp_path, rng, inits, rules=[rows])
    assert _schedules(compiled)["conv2d"] == {"hexagon_vrmpy"}
