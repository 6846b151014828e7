"""One LLVM build for both outputs: `model.so` and the C library's kernels are byte for byte
what `tvm.compile` + `export_library` and a separate build of the library's kernels give."""
from __future__ import annotations

import numpy as np
import tvm
from conftest import make_model, save_calib, save_model
from onnx import helper

from qcompiler.api import compile_only
from qcompiler.backend.emit import build
from qcompiler.backend.kernel_build import VMBuild, export_vm
from qcompiler.backend.standalone import build_standalone


def _compiled(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, {"x": (1, 3, 8, 8)}, {"y": None}, {"w": w})
    calib = {"x": rng.standard_normal((4, 3, 8, 8)).astype(np.float32)}
    return compile_only(save_model(model, tmp_path), save_calib(calib, tmp_path),
                        tmp_path / "out")


def test_model_so_and_library_kernels_are_what_separate_builds_give(tmp_path, monkeypatch):
    compiled = _compiled(tmp_path)
    exe = build(compiled)
    assert isinstance(exe, VMBuild) and exe.kernels is not None
    with tvm.transform.PassContext(opt_level=3):
        plain = tvm.compile(compiled.quantized, compiled.tvm_target)
    export_vm(exe, tmp_path / "shared.so")
    plain.export_library(str(tmp_path / "plain.so"))
    assert (tmp_path / "shared.so").read_bytes() == (tmp_path / "plain.so").read_bytes()

    built = []  # the library builds no kernel of its own when model.so's serve
    real_build = tvm.tirx.build
    monkeypatch.setattr(tvm.tirx, "build", lambda *a, **k: built.append(a) or real_build(*a, **k))
    for name, kernels in (("shared", exe.kernels), ("alone", None)):
        (tmp_path / name).mkdir()
        build_standalone(compiled, tmp_path / name, "m", tmp_path / name, kernels)
    assert len(built) == 1  # "alone"
    assert (tmp_path / "shared" / "kernels.o").read_bytes() == \
        (tmp_path / "alone" / "kernels.o").read_bytes()
