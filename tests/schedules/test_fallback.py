"""A target rule that raises on a layer: the layer keeps its portable kernel, the compile goes on,
stays bit-exact, and the summary and model.json name the layer (`schedules._plan`,
`passes.plan_layout`, `graph_meta.schedule_fallbacks`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from conftest import make_model, save_calib, save_model, vnni_target
from onnx import helper
from qcompiler.schedules.dot_product import DotProduct
from qcompiler.schedules.x86 import blocked
from qcompiler.schedules.x86.depthwise import Depthwise
from tvm import relax

from qcompiler.config import CompileConfig
from qcompiler.graph_meta import graph_meta, layer_label, schedule_fallbacks
from qcompiler.pipeline import compile_model
from qcompiler.relax_access import bindings, op_name


def _model(rng: np.random.Generator):
    """A 3x3 depthwise conv (ReLU) then a 1x1 conv: one layer per rule kind."""
    nodes = [helper.make_node("Conv", ["x", "wd", "bd"], ["d"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], group=16),
             helper.make_node("Relu", ["d"], ["r"]),
             helper.make_node("Conv", ["r", "wp", "bp"], ["y"], kernel_shape=[1, 1])]
    inits = {"wd": rng.standard_normal((16, 1, 3, 3)), "bd": rng.standard_normal(16) * .1,
             "wp": rng.standard_normal((24, 16, 1, 1)) / 4, "bp": rng.standard_normal(24) * .1}
    return make_model(nodes, {"x": ("N", 16, 9, 9)}, {"y": None}, inits)


def _raise(*_args, **_kwargs):
    raise tvm.s_tir.ScheduleError("injected: the rule cannot schedule this\nsecond line")


def test_a_rule_that_raises_leaves_the_portable_kernel_and_the_summary_says_so(
        tmp_path, monkeypatch, capsys):
    from qcompiler.cli import main

    rng = np.random.default_rng(0)
    model = save_model(_model(rng), tmp_path)
    calib = save_calib({"x": rng.standard_normal((8, 16, 9, 9)).astype(np.float32)}, tmp_path)
    monkeypatch.setattr(Depthwise, "build", _raise)  # x86 NCHW (AVX2 and VNNI) depthwise
    monkeypatch.setattr(blocked, "depthwise", _raise)  # and blocked (VNNI hosts)
    out = tmp_path / "out"
    # exit 0: the library equals qcompiler.reference bit for bit ("bit-exact: yes")
    assert main([str(model), "--calib", str(calib), "-o", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "bit-exact:  yes" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("schedules:"))
    layer = json.loads((out / "model.json").read_text())["layers"][0]
    vnni = "x86-64-v4" in text  # (the host's ISA): the blocked form fails first, then NCHW's
    rules = ["blocked_conv2d", "x86_vnni_depthwise"] if vnni else ["depthwise"]
    assert (layer["name"], layer["fused"]) == ("Conv_0", ["Relu_1 (Relu)"])  # ONNX nodes
    causes = "; ".join(f"{rule}: schedule error: ScheduleError: injected: the rule cannot "
                       "schedule this" for rule in rules)
    assert f"1 layer off their target kernel: Conv_0 (Conv) {layer['op']} ({causes})" in line
    assert "portable kernel" in layer["detail"] and "injected" in layer["detail"]


def _compile(model, rng, target, **options):
    calib = {"x": rng.standard_normal((4, 16, 9, 9)).astype(np.float32)}
    return compile_model(model, calib, CompileConfig(batch=1, **options), progress=False,
                         target=target)


def test_no_fallback_without_a_failure():
    rng = np.random.default_rng(1)
    compiled = _compile(_model(rng), rng, None)
    assert schedule_fallbacks(compiled.quantized) == []
    assert "schedule_fallbacks" not in graph_meta(compiled.quantized)  # model.json as before


@pytest.mark.parametrize("blocked_layout", [False, True], ids=["nchw", "blocked"])
def test_vnni_rules_that_raise_fall_back_per_layer(monkeypatch, blocked_layout):
    """Built for VNNI whatever this CPU is (the portable kernels run anywhere: the graph is
    checked against the reference only through its metadata here)."""
    rng = np.random.default_rng(2)
    monkeypatch.setattr(DotProduct, "build", _raise)  # the 1x1 conv's channel-lane kernel
    monkeypatch.setattr(Depthwise, "build", _raise)
    monkeypatch.setattr(blocked, "depthwise", _raise)  # the blocked forms (plan_layout)
    monkeypatch.setattr(blocked.BLOCKED_VNNI.__class__, "build", _raise)
    compiled = _compile(_model(rng), rng, vnni_target(), blocked_layout=blocked_layout)
    found = schedule_fallbacks(compiled.quantized)
    layers = graph_meta(compiled.quantized)["layers"]
    assert {f.layer for f in found} == {layer_label(x) for x in layers}
    assert all(f.error.startswith("ScheduleError: injected") for f in found)
    rules = {f.rule for f in found}
    assert rules >= ({"blocked_conv2d"} if blocked_layout else {"x86_vnni_depthwise"})
    for b in bindings(compiled.quantized["main_int"]):  # every kernel portable
        if not isinstance(b.value, relax.Call) or op_name(b.value) != "relax.call_tir":
            continue
        func = compiled.quantized[b.value.args[0]]
        assert "qcompiler.schedule" not in func.attrs, b.var.name


def test_an_interrupt_is_not_a_fallback(monkeypatch):
    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Depthwise, "build", interrupt)
    monkeypatch.setattr(blocked, "depthwise", interrupt)  # (VNNI hosts: the blocked form)
    rng = np.random.default_rng(3)
    with pytest.raises(KeyboardInterrupt):
        _compile(_model(rng), rng, None)


def _code_llvm_rejects(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """`func` and a call LLVM's verifier rejects (an intrinsic given the wrong types: what a
    rule with a bug in its vector code emits, as the HVX dense packing once did)."""
    bad = tvm.tirx.Evaluate(tvm.tirx.call_llvm_intrin(
        "int32x8", "llvm.x86.avx2.pmadd.wd", tvm.tirx.const(0, "int32"),
        tvm.tirx.const(0, "int32")))
    return func.with_body(tvm.tirx.SeqStmt([func.body, bad]))


def test_a_kernel_llvm_rejects_is_rebuilt_portable_and_named(tmp_path, monkeypatch):
    """The error comes only when the whole module is built, after the rules ran: the API
    finds the kernel by building each alone and compiles again with it portable."""
    from qcompiler.api import compile_to_dir
    from qcompiler.reference import Reference
    from qcompiler.schedules.x86 import rows

    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "x"], ["y"], name="residual")]
    inits = {"w": rng.standard_normal((8, 8, 1, 1)) / 3, "b": rng.standard_normal(8) * .1}
    model = save_model(make_model(nodes, {"x": ("N", 8, 6, 6)}, {"y": None}, inits), tmp_path)
    calib = save_calib({"x": rng.standard_normal((8, 8, 6, 6)).astype(np.float32)}, tmp_path)
    real = rows.schedule_rows
    monkeypatch.setattr(rows, "schedule_rows", lambda f: _code_llvm_rejects(real(f)))
    out = tmp_path / "out"
    lib, compiled = compile_to_dir(model, calib, out, blocked_layout=False)
    found = schedule_fallbacks(compiled.quantized)
    assert [(f.layer, f.op, f.rule) for f in found] == [("residual (Add)", "add", "x86_rows")]
    assert found[0].error.startswith("CodegenError: LLVM module verification failed")
    layer = next(x for x in json.loads((out / "model.json").read_text())["layers"]
                 if x["op"] == "add")
    assert "portable kernel" in layer["detail"]
    q = rng.integers(0, 256, (1, 8, 6, 6)).astype(np.uint8)
    np.testing.assert_array_equal(lib.run_int(q)[0], Reference(compiled.quantized).run(q)[0])
