"""Hexagon HVX: vrmpy in the conv kernels, no HVX float anywhere, channel counts off the vector
width bit-exact under qemu-hexagon, and the packet counter as a cost proxy."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model, save_calib, save_model
from onnx import helper

from qcompiler.api import compile_only
from qcompiler.emit import emit
from qcompiler.hexagon_cost import count_packets, per_kernel
from qcompiler.reference import Reference
from qcompiler.runtime import StandaloneModel

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
