"""Autotuning: the design space replays the fixed schedule, tuning writes a database that a
second compile reuses with zero new trials, tuned libraries are bit-exact (x86 and Hexagon
under qemu), wrong candidates never enter the database, and the RPC tracker path works on
loopback."""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from conftest import (
    BUNDLED_CALIB,
    BUNDLED_MODEL,
    VNNI_TARGET,
    make_model,
    requires_cpu_for,
    save_calib,
    save_model,
    vnni_target,
)
from onnx import helper

from qcompiler.api import compile_only, write_outputs
from qcompiler.backend.emit import emit
from qcompiler.backend.runtime import CompiledModel, StandaloneModel
from qcompiler.errors import QCompileError
from qcompiler.reference import Reference
from qcompiler.tuning.tasks import Task, extract_tasks
from qcompiler.tuning.tune import Tuner, apply_tuned, database_dir, one_schedule, open_database

# TVM's worker and RPC processes start without torch (5-10 s each where it is installed)
pytestmark = pytest.mark.usefixtures("no_torch_in_subprocesses")

MODEL, CALIB = BUNDLED_MODEL, BUNDLED_CALIB


@pytest.fixture
def vnni_x86(monkeypatch):
    """Compiles for x86 with AVX-512 VNNI whatever this CPU: its dot-product kernels are the
    x86 tuning tasks (AVX2 has none). Tuning runs candidates, so the tests that tune call
    `requires_cpu_for(VNNI_TARGET)` first; the ones that only build run everywhere."""
    import qcompiler.pipeline

    real = qcompiler.pipeline.get_target
    monkeypatch.setattr(qcompiler.pipeline, "get_target",
                        lambda name: vnni_target() if name == "x86" else real(name))


def _three_convs(same: bool = True):
    """(conv -> relu) x 3, same shapes: the last two take and give ReLU outputs (zero points
    alike), so they are one task when `same`. Fixed weights and calibration: two compiles
    give the same kernels."""
    rng = np.random.default_rng(7)
    ws = {f"w{i}": (rng.standard_normal((16, 16, 3, 3)) * 0.2).astype(np.float32)
          for i in range(3)}
    nodes = []
    for i, (a, b) in enumerate([("x", "a"), ("a", "b"), ("b", "c")]):
        stride = 2 if i == 2 and not same else 1
        nodes += [helper.make_node("Conv", [a, f"w{i}"], [f"{b}0"], pads=[1] * 4,
                                   strides=[stride] * 2),
                  helper.make_node("Relu", [f"{b}0"], [b if i < 2 else "y"])]
    return make_model(nodes, {"x": (1, 16, 8, 8)}, {"y": None}, ws)


def _blocked_kinds():
    """Each kind of blocked kernel a VNNI graph tunes: a 3x3 conv (-> ReLU), a depthwise 3x3
    (-> ReLU), a 1x1 conv whose only reader is a table (sigmoid), and a 1x1 conv whose only
    reader is an add (with the block's input). Fixed weights."""
    rng = np.random.default_rng(9)
    ws = {"w0": rng.standard_normal((32, 16, 3, 3)) * 0.2,
          "w1": rng.standard_normal((32, 1, 3, 3)) * 0.5,
          "w2": rng.standard_normal((16, 32, 1, 1)) * 0.3,
          "w3": rng.standard_normal((16, 16, 1, 1)) * 0.3}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a0"], pads=[1] * 4),
             helper.make_node("Relu", ["a0"], ["a"]),
             helper.make_node("Conv", ["a", "w1"], ["b0"], pads=[1] * 4, group=32),
             helper.make_node("Relu", ["b0"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c0"]),
             helper.make_node("Sigmoid", ["c0"], ["c"]),
             helper.make_node("Conv", ["c", "w3"], ["d"]),
             helper.make_node("Add", ["d", "x"], ["y"])]
    return make_model(nodes, {"x": (1, 16, 8, 8)}, {"y": None}, ws)


def _compile(tmp: Path, model=None, **options):
    tmp.mkdir(parents=True, exist_ok=True)
    if model is None:
        model_path, calib_path = MODEL, CALIB
    else:
        model_path = save_model(model, tmp)
        calib = np.random.default_rng(8).standard_normal((4, 16, 8, 8)).astype(np.float32)
        calib_path = save_calib({"x": calib}, tmp)
    return compile_only(model_path, calib_path, tmp / "out", **options)


def _task(tmp: Path) -> tuple:
    compiled = _compile(tmp, _three_convs())
    return compiled, extract_tasks(compiled.quantized, compiled.target)


@pytest.mark.usefixtures("vnni_x86")
def test_layers_computing_the_same_kernel_share_one_task(tmp_path):
    compiled, tasks = _task(tmp_path)
    assert [t.calls for t in tasks] == [1, 2]
    other = _compile(tmp_path / "b", _three_convs(same=False))
    assert [t.calls for t in extract_tasks(other.quantized, other.target)] == [1, 1, 1]


@pytest.mark.usefixtures("vnni_x86")
def test_design_space_starts_at_the_fixed_schedule(tmp_path, rng):
    _, (_, task) = _task(tmp_path)
    assert tvm_ffi.structural_equal(task.build(task.default_trace()), task.build())


@pytest.mark.usefixtures("vnni_x86")
def test_tune_then_reuse_with_zero_trials_bit_exact_x86(tmp_path, rng):
    requires_cpu_for(VNNI_TARGET)  # (tuning runs the candidates)
    db = tmp_path / "db"
    first = _compile(tmp_path / "a", None, tune_trials=3, tuning_db=str(db))
    # every task searched but one whose space is one schedule (the dense layer's one block)
    searched = [r.trials >= 1 for r in first.tuning]
    assert any(searched) and searched == [not one_schedule(r.task.rule.design_spaces(
        tvm.s_tir.Schedule(r.task.search_workload))) for r in first.tuning]
    assert all(r.chosen in ("tuned", "fixed") for r in first.tuning)
    records = database_dir(db, first.target) / "records.json"
    assert len(records.read_text().splitlines()) == len(first.tuning)
    second = _compile(tmp_path / "b", None, tune_trials=3, tuning_db=str(db))
    assert [r.trials for r in second.tuning] == [0] * len(first.tuning)
    assert {r.chosen for r in second.tuning} == {"database"}
    assert records.read_text().count("\n") == len(first.tuning)  # nothing new written
    # The tuned kernels are the database's traces, and the library is bit-exact.
    for task in extract_tasks(second.quantized, second.target):
        rec = open_database(db, second.target).query_tuning_record(
            task.workload, second.tvm_target, "main")
        for gv in task.kernels:
            assert tvm_ffi.structural_equal(
                second.quantized[gv].without_attr("global_symbol"),
                task.build(rec.trace).without_attr("global_symbol"))
    write_outputs(second, tmp_path / "b" / "out")
    lib, ref = CompiledModel(tmp_path / "b" / "out"), Reference(second.quantized)
    q = np.random.default_rng(1).integers(0, 256, (1, 1, 28, 28)).astype(np.uint8)
    np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])


def sampled(task: Task, space: tvm.s_tir.Trace) -> tvm.s_tir.Trace:
    """A design space's trace with its decisions drawn anew (as the search's first
    population draws them): the first draw that builds."""
    for seed in range(1, 40):
        sch = tvm.s_tir.Schedule(task.workload, seed=seed)
        try:
            tvm.s_tir.Trace(space.insts, {}).apply_to_schedule(sch, remove_postproc=False)
            task.build(sch.trace)
        except Exception:  # noqa: BLE001, S112 - a draw the instruction sequence cannot take
            continue
        return sch.trace
    raise AssertionError(f"{task.name}: no draw of the design space builds")


@pytest.mark.usefixtures("vnni_x86")
def test_blocked_kernels_are_tasks_and_every_design_space_is_exact(tmp_path):
    """Every kind of blocked kernel is a tuning task: conv, depthwise, and the convs fused
    with a table or an add (a random second operand). The first design space is the fixed
    kernel; the 3x3 conv has one space per loop order and unrolling (6), a 1x1 per unrolling
    (2); a draw from every space is bit-exact (`Tuner.measure` checks it)."""
    compiled = _compile(tmp_path, _blocked_kinds())
    tasks = extract_tasks(compiled.quantized, compiled.target)
    assert [(t.rule.name, t.op) for t in tasks] == [
        ("x86_vnni_blocked", "conv2d"), ("x86_blocked_depthwise", "conv2d"),
        ("x86_vnni_blocked", "conv2d_lut"), ("x86_vnni_blocked", "conv2d_add")]
    spaces = [t.rule.design_spaces(tvm.s_tir.Schedule(t.workload)) for t in tasks]
    assert [len(s) for s in spaces] == [6, 1, 2, 2]
    for task, task_spaces in zip(tasks, spaces):
        assert tvm_ffi.structural_equal(task.build(task_spaces[0].trace), task.build())
    requires_cpu_for(VNNI_TARGET)  # (measuring runs the candidates)
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    for task, task_spaces in zip(tasks, spaces):
        for k, space in enumerate(task_spaces):
            assert tuner.measure(task, sampled(task, space.trace), seed=k) > 0


def test_input_packing_by_row_blocks_is_a_second_design_space(tmp_path):
    """A dot-product conv with small weights and rows to share (`packs_rows`) has the other
    packing of its input as a second space: on ARM (which packs whole inputs) the space that
    packs row blocks, so a strided 1x1 conv packs only the rows it reads (the bundled
    model's: 29,098 -> 14,635 instructions); a draw from it is bit-exact under qemu (`measure`
    checks it). A conv whose weights are too large for row packing has one space."""
    from qcompiler.schedules.dot_product import ROW_PACKED

    rng = np.random.default_rng(3)
    ws = {"w0": rng.standard_normal((32, 16, 1, 1)) * 0.3,
          "w1": rng.standard_normal((256, 32, 3, 3)) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], strides=[2, 2]),
             helper.make_node("Conv", ["a", "w1"], ["y"], pads=[1] * 4)]
    compiled = _compile(tmp_path, make_model(nodes, {"x": (1, 16, 8, 8)}, {"y": None}, ws),
                        target="arm")
    tasks = extract_tasks(compiled.quantized, compiled.target)
    spaces = [t.rule.design_spaces(tvm.s_tir.Schedule(t.workload)) for t in tasks]
    assert [len(s) for s in spaces] == [2, 1]  # (the 3x3's weights: 72 KiB packed)

    def row_packed(space: tvm.s_tir.Schedule) -> bool:
        return ROW_PACKED in space.get(space.get_sblock("x_packed")).annotations

    assert [row_packed(s) for s in spaces[0]] == [False, True]
    task = tasks[0]
    assert tvm_ffi.structural_equal(task.build(spaces[0][0].trace), task.build())
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    assert tuner.measure(task, sampled(task, spaces[0][1].trace), seed=1) > 0


def test_depthwise_conv_is_a_task_on_arm(tmp_path):
    """On ARM the depthwise conv per channel (`channel_local`) is a tuning task beside the
    dot-product convs: its design space (the requantize's chunk of pixels) starts at the
    fixed kernel, a draw from it is bit-exact under qemu (`measure` checks it), and a record
    of it rebuilds the model's kernel."""
    compiled = _compile(tmp_path, _blocked_kinds(), target="arm")
    tasks = extract_tasks(compiled.quantized, compiled.target)
    assert [t.rule.name for t in tasks].count("channel_local") == 1
    (task,) = [t for t in tasks if t.rule.name == "channel_local"]
    assert task.name.startswith("dwconv 1x32x8x8 -> 32 k3x3") and task.calls == 1
    (space,) = task.rule.design_spaces(tvm.s_tir.Schedule(task.workload))
    assert tvm_ffi.structural_equal(task.build(space.trace), task.build())
    assert [i.kind.name for i in space.trace.insts].count("SamplePerfectTile") == 1
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    draw = sampled(task, space.trace)
    assert tuner.measure(task, draw, seed=1) > 0
    tuner.commit(task, draw, 1e-6)
    tuned = apply_tuned(compiled.quantized, compiled.target, compiled.tvm_target,
                        tmp_path / "db")
    (gv,) = task.kernels
    assert tvm_ffi.structural_equal(tuned[gv].without_attr("global_symbol"),
                                    task.build(draw).without_attr("global_symbol"))


def test_a_design_space_of_one_schedule_is_not_searched(tmp_path):
    """A task whose design space holds one schedule (ARM's depthwise conv on a 2x2 plane: no
    chunk to choose; a dense layer of one channel block) runs no trials; one with a choice
    (the 4x4 plane's chunk) is searched."""
    ws = {"w0": np.random.default_rng(1).standard_normal((16, 1, 3, 3)),
          "w1": np.random.default_rng(2).standard_normal((16, 1, 3, 3))}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], group=16, pads=[1] * 4,
                              strides=[2, 2]),
             helper.make_node("Conv", ["a", "w1"], ["y"], group=16, pads=[1] * 4,
                              strides=[2, 2])]
    compiled = _compile(tmp_path, make_model(nodes, {"x": (1, 16, 8, 8)}, {"y": None}, ws),
                        target="arm")
    tasks = extract_tasks(compiled.quantized, compiled.target)
    assert [t.name.split(" -> ")[0] for t in tasks] == ["dwconv 1x16x8x8", "dwconv 1x16x4x4"]
    spaces = [t.rule.design_spaces(tvm.s_tir.Schedule(t.workload)) for t in tasks]
    assert [one_schedule(s) for s in spaces] == [False, True]
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    assert tuner.search(tasks[1], 8, progress=False, label="") == [] and tuner.trials == 0
    assert tuner.search(tasks[0], 2, progress=False, label="") and tuner.trials == 2


@pytest.mark.usefixtures("vnni_x86")
def test_the_final_choice_is_made_in_the_model(tmp_path, monkeypatch):
    """Candidates faster alone are built into the whole model, one variant each, and timed
    there: a task keeps the schedule that is fastest in the model, which the database then
    records. The model's times are rigged after a real run: the fixed schedule wins for the
    first two tasks, the candidate for the other two."""
    requires_cpu_for(VNNI_TARGET)  # (the model variants run)
    from qcompiler.tuning import in_model
    from qcompiler.tuning.tune import TaskResult, _choose_in_model

    compiled = _compile(tmp_path, _blocked_kinds())
    tasks = extract_tasks(compiled.quantized, compiled.target)
    choices = []
    for task in tasks:
        space = task.rule.design_spaces(tvm.s_tir.Schedule(task.workload))[-1]
        choices.append((TaskResult(task, 2e-6, 1e-6, 1, "tuned"),
                        [(None, 2e-6), (sampled(task, space.trace), 1e-6)]))
    real = in_model.kernel_times
    ran = []

    def rigged(exes: list, inputs: list) -> list:
        times = real(exes, inputs)
        ran.append([sorted(t) for t in times])
        for i, task in enumerate(tasks):
            for gv in task.kernels:
                symbol = str(compiled.quantized[gv].attrs["global_symbol"])
                assert symbol in times[0] and symbol in times[1]
                times[0][symbol], times[1][symbol] = 3e-6, (4e-6 if i < 2 else 1e-6)
        return times

    monkeypatch.setattr(in_model, "kernel_times", rigged)
    _choose_in_model(compiled.quantized, compiled.tvm_target, choices)
    assert len(ran) == 1 and len(ran[0]) == 2  # one model per option, timed together
    got = [(r.chosen, r.choice, r.measured, r.untuned, r.tuned) for r, _ in choices]
    assert got == [("fixed", 0, "in model", 3e-6, 3e-6)] * 2 \
        + [("tuned", 1, "in model", 3e-6, 1e-6)] * 2
    assert [[cost for _, cost in options] for _, options in choices] == \
        [[3e-6, 4e-6]] * 2 + [[3e-6, 1e-6]] * 2


def test_native_log_keeps_tvm_lines_off_the_terminal(tmp_path, capfd):
    """MetaSchedule's warnings (one per sampled schedule that does not apply) go to the log
    file; the progress bars' stream still reaches standard error."""
    from qcompiler.tuning.tune import native_log

    with native_log(tmp_path / "tvm.log") as stream:
        os.write(2, b"Trace replay failed\n")
        stream.write("task 1/1 best 3.0 us\n")
    err = capfd.readouterr().err
    assert "best 3.0 us" in err and "Trace replay failed" not in err
    assert "Trace replay failed" in (tmp_path / "tvm.log").read_text()
    os.write(2, b"after\n")
    assert "after" in capfd.readouterr().err


@pytest.mark.usefixtures("vnni_x86")
def test_a_wrong_candidate_never_enters_the_database(tmp_path, rng, monkeypatch):
    compiled, (_, task) = _task(tmp_path)
    requires_cpu_for(VNNI_TARGET)  # (measuring runs the candidate)
    right = Task.build

    def wrong(self: Task, trace=None):  # noqa: ANN001, ANN202 - tuned traces pad with zp_x + 1
        if trace is None:  # (zp_x: the epilogue's intrinsic, in the trace, names zp_y)
            return right(self, None)
        bad = dataclasses.replace(self, attrs={**self.attrs, "zp_x": self.attrs["zp_x"] + 1})
        return right(bad, trace)

    monkeypatch.setattr(Task, "build", wrong)
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    with pytest.raises(QCompileError, match="differs from the reference"):
        tuner.measure(task, task.default_trace(), seed=3)
    result, options = tuner.tune_task(task, 2, False, "t")
    assert result.chosen == "fixed" and [trace for trace, _ in options] == [None]
    tuner.commit(task, *options[result.choice])
    rec = open_database(tmp_path / "db", compiled.target).query_tuning_record(
        task.workload, compiled.tvm_target, "main")
    monkeypatch.setattr(Task, "build", right)
    assert tvm_ffi.structural_equal(task.build(rec.trace), task.build())


@pytest.mark.usefixtures("vnni_x86")
def test_a_trace_that_does_not_replay_is_a_clear_error(tmp_path, rng):
    """A record's trace names the epilogue intrinsic of its kernel's zero point and clamp: on
    a kernel with another one it does not replay, and `measure` says so (no traceback)."""
    compiled, (_, task) = _task(tmp_path)
    assert task.shifts == "right"  # the kernel's epilogue is the tensorized one
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    other = dataclasses.replace(task, attrs={**task.attrs, "zp_y": task.attrs["zp_y"] + 1})
    with pytest.raises(QCompileError, match="failed to schedule"):
        tuner.measure(other, task.default_trace(), seed=3)


@pytest.mark.usefixtures("vnni_x86")
def test_search_runner_rejects_a_mismatching_candidate(tmp_path, rng):
    """The runner itself checks: a kernel with another zero point gets an error, no cost."""
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    compiled, (_, task) = _task(tmp_path)
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    bad = dataclasses.replace(task, attrs={**task.attrs, "zp_y": task.attrs["zp_y"] + 1})
    results = []
    for t in (task, bad):
        (b,) = tuner.builder.build([BuilderInput(tvm.IRModule({"main": t.build()}),
                                                 compiled.tvm_target)])
        tuner.checker.task = task
        requires_cpu_for(VNNI_TARGET)
        (fut,) = tuner.checker.run([RunnerInput(b.artifact_path, "cpu", [])])
        results.append(fut.result())
    assert results[0].error_msg is None and results[0].run_secs[0] > 0
    assert results[1].run_secs is None and "differs" in results[1].error_msg


@pytest.mark.slow
@pytest.mark.parametrize("target", ["hexagon", "arm"])
def test_tune_emulated_target_counts_reuse_and_bit_exact_under_qemu(tmp_path, rng, target):
    """Hexagon (packets) and AArch64 (instructions) tune on qemu's deterministic counts."""
    db = tmp_path / "db"
    first = _compile(tmp_path / "a", _three_convs(), target=target, tune_trials=2,
                     tuning_db=str(db))
    assert len(first.tuning) == 2 and all(r.trials >= 1 for r in first.tuning)
    task = extract_tasks(first.quantized, first.target)[1]
    tuner = Tuner(first.target, first.tvm_target, tmp_path / "db2", tmp_path / "work")
    counts = [tuner.measure(task, None, seed=5) for _ in range(2)]
    assert counts[0] == counts[1] > 0  # the same run counts the same, to the packet
    second = _compile(tmp_path / "b", _three_convs(), target=target, tune_trials=2,
                      tuning_db=str(db))
    assert [r.trials for r in second.tuning] == [0, 0]
    emit(second, None, tmp_path / "b" / "out")
    lib, ref = StandaloneModel(tmp_path / "b" / "out"), Reference(second.quantized)
    info = np.iinfo(second.target.activation_dtype)
    q = rng.integers(info.min, info.max + 1, (1, 16, 8, 8)).astype(info.dtype)
    np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])


@pytest.mark.parametrize("target", ["hexagon", "arm"])
def test_the_search_measures_the_kernel_it_builds(tmp_path, target):
    """MetaSchedule searches a copy of the kernel without `Let` (`Task.search_workload`), which
    on HVX and NEON requantizes in 64-bit lanes; each candidate is built from its trace on the
    real kernel (`candidates.RecordingSearch`), so what the search ranks by is the kernel's
    cost: every candidate it measured costs, to the packet, what `measure` finds for its
    trace. (Before, the bundled model's first conv: 99,929 packets searched, 27,847 real.)"""
    compiled = _compile(tmp_path, _three_convs(same=False), target=target)
    task = extract_tasks(compiled.quantized, compiled.target)[0]
    assert not tvm_ffi.structural_equal(task.search_workload, task.workload)
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    found = tuner.search(task, 4, progress=False, label=task.name)
    assert len(found) >= 2
    for rec in found:
        assert float(rec.run_secs[0]) == pytest.approx(tuner.measure(task, rec.trace,
                                                                     tuner.seed), rel=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fail_if_exited(procs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    """Fail at once, with the process's own stderr, when one of `procs` has exited."""
    for name, (proc, log) in procs.items():
        if proc.poll() is not None:
            pytest.fail(f"the RPC {name} exited with code {proc.returncode}; its stderr:\n"
                        f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)


@pytest.fixture
def rpc_tracker(tmp_path):
    """TVM's tracker and two servers on loopback; yields "host:port:key". Polls the
    processes while waiting (TVM's own `connect_tracker` retries a refused port for minutes),
    so a process that dies fails the test within a second, with its stderr."""
    port = _free_port()
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(name: str, args: list[str]) -> None:
        log = tmp_path / f"rpc_{name.replace(' ', '_')}.stderr"
        with open(log, "wb") as err:
            procs[name] = (subprocess.Popen([sys.executable, "-m", *args],
                                            stdout=subprocess.DEVNULL, stderr=err), log)

    def wait(ready: Callable[[], bool], what: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if ready():
                    return
            except Exception:
                _fail_if_exited(procs)  # (a dead tracker's socket: its stderr says why)
                raise
            _fail_if_exited(procs)
            if time.monotonic() > deadline:
                pytest.fail(f"{what} within {seconds:.0f} s", pytrace=False)
            time.sleep(0.2)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        from tvm import rpc

        start("tracker", ["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                          "--port-end", str(port + 1)])
        wait(listening, "the RPC tracker did not listen", 120)  # (it imports TVM first)
        tracker = rpc.connect_tracker("127.0.0.1", port)
        for i in range(2):
            free = _free_port()
            start(f"server {i}", ["tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
                                  "--key", "qcompiler-test", "--host", "127.0.0.1",
                                  "--port", str(free), "--port-end", str(free + 50)])
        wait(lambda: tracker.summary()["queue_info"].get("qcompiler-test", {}).get("free") == 2,
             "the two RPC servers did not register with the tracker", 120)
        yield f"127.0.0.1:{port}:qcompiler-test"
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.usefixtures("vnni_x86")
def test_tuning_through_the_rpc_tracker_on_loopback(tmp_path, rng, rpc_tracker):
    requires_cpu_for(VNNI_TARGET)  # (the servers run the candidates; the fixture ran first)
    db = tmp_path / "db"
    compiled = _compile(tmp_path, _three_convs(), tune_trials=2, tuning_db=str(db),
                        rpc_tracker=rpc_tracker)
    assert len(compiled.tuning) == 2
    assert all(r.trials >= 1 and r.chosen in ("tuned", "fixed") for r in compiled.tuning)
    assert (database_dir(db, compiled.target) / "records.json").read_text().strip()
    write_outputs(compiled, tmp_path / "out")
    lib, ref = CompiledModel(tmp_path / "out"), Reference(compiled.quantized)
    q = rng.integers(0, 256, (1, 16, 8, 8)).astype(np.uint8)
    np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])


def test_database_records_apply_without_tuning(tmp_path, rng):
    """`--tuning-db` alone uses the records (a deployment build from a tuned database)."""
    db = tmp_path / "db"
    tuned = _compile(tmp_path / "a", _three_convs(), tune_trials=2, tuning_db=str(db))
    plain = _compile(tmp_path / "b", _three_convs())
    again = apply_tuned(plain.quantized, plain.target, plain.tvm_target, db)
    for task in extract_tasks(tuned.quantized, tuned.target):
        for gv in task.kernels:
            assert tvm_ffi.structural_equal(again[gv.name_hint], tuned.quantized[gv])
