"""The tuning database outside the process that wrote it (issue 24): records replay in a new
process for every target (the intrinsics their traces name are registered from the names),
records that no longer replay are skipped and counted, a corrupt file or a folder that cannot
be a database is a one-line error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from conftest import save_calib, save_model, vnni_target
from qcompiler.targets import get_target
from test_tuning import _three_convs
from tvm.s_tir import meta_schedule as ms
from tvm.script import tirx as T

from qcompiler.api import compile_only
from qcompiler.backend.runtime import StandaloneModel
from qcompiler.errors import QCompileError
from qcompiler.reference import Reference
from qcompiler.tuning.database import open_database
from qcompiler.tuning.tasks import extract_tasks

# TVM's worker processes and a compile in a new process start without torch (5-10 s each
# where it is installed)
pytestmark = pytest.mark.usefixtures("no_torch_in_subprocesses")
TESTS = Path(__file__).resolve().parents[1]

# The second compile, in a new Python process: the kernels it built (by layer, the sha1 of
# their TVMScript, symbol left out), the trials it ran and what the database skipped, as one
# JSON line.
SECOND = """
import hashlib, json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import conftest, qcompiler.pipeline as pipeline
if {vnni!r}:
    pipeline.get_target = lambda name: conftest.vnni_target()
from qcompiler.api import compile_only
from qcompiler.backend.emit import emit
from qcompiler.tuning.tasks import extract_tasks
from qcompiler.tuning.tune import open_database
c = compile_only(Path({model!r}), Path({calib!r}), Path({out!r}), **{options!r})
kernels = {{gv.name_hint: hashlib.sha1(
    c.quantized[gv].without_attr("global_symbol").script().encode()).hexdigest()
           for t in extract_tasks(c.quantized, c.target) for gv in t.kernels}}
db = open_database(Path({options!r}["tuning_db"]), c.target)
if {emit!r}:
    emit(c, None, Path({out!r}))
print(json.dumps({{"kernels": kernels, "trials": [r.trials for r in c.tuning],
                  "chosen": [r.chosen for r in c.tuning], "skipped": db.skipped}}))
"""


def _files(tmp: Path, model=None) -> tuple[Path, Path]:
    model = save_model(model or _three_convs(), tmp)
    calib = np.random.default_rng(8).standard_normal((4, 16, 8, 8)).astype(np.float32)
    return model, save_calib({"x": calib}, tmp)


def _second_process(tmp: Path, model: Path, calib: Path, vnni: bool = False,
                    emit: bool = False, **options: object) -> dict:
    code = SECOND.format(tests=str(TESTS), vnni=vnni, model=str(model), calib=str(calib),
                         out=str(tmp / "second"), options=options, emit=emit)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _sha1(func: tvm.tirx.PrimFunc) -> str:
    import hashlib

    return hashlib.sha1(func.without_attr("global_symbol").script().encode()).hexdigest()


def _other_tiles(task) -> tvm.s_tir.Trace:
    """The fixed schedule's trace with one tile decision changed to another that builds: a
    record whose kernel differs from the fixed one."""
    trace = task.default_trace()
    for inst in trace.insts:
        if inst.kind.name != "SamplePerfectTile":
            continue
        outer, inner = (int(v) for v in trace.decisions[inst])
        extent = outer * inner
        for d in sorted((d for d in range(1, extent + 1) if extent % d == 0 and d != inner),
                        reverse=True):
            other = trace.with_decision(inst, [extent // d, d], remove_postproc=False)
            try:
                task.build(other)
                return other
            except Exception:  # noqa: BLE001, S110 - a split the schedule cannot take
                pass
    raise AssertionError(f"{task.name}: no other tile decision builds")


def _other_schedule(task) -> tvm.s_tir.Trace:
    """A schedule other than the fixed one: from the last design space where there are
    several (another loop order or unrolling), else other tiles."""
    spaces = task.rule.design_spaces(tvm.s_tir.Schedule(task.workload))
    return spaces[-1].trace if len(spaces) > 1 else _other_tiles(task)


@pytest.mark.parametrize("model", ["three_convs", "blocked_kinds"])
def test_vnni_record_replays_in_a_new_process(tmp_path, monkeypatch, model):
    """x86 VNNI (built, not run, on any CPU): records committed by hand with a made-up cost
    and schedules of their own; a new process builds exactly those kernels, 0 trials. Every
    kind of blocked kernel (conv, depthwise, conv + table, conv + add)."""
    from test_tuning import _blocked_kinds

    import qcompiler.pipeline

    monkeypatch.setattr(qcompiler.pipeline, "get_target", lambda name: vnni_target())
    model, calib = _files(tmp_path, _blocked_kinds() if model == "blocked_kinds" else None)
    db = tmp_path / "db"
    first = compile_only(model, calib, tmp_path / "a")
    tasks = extract_tasks(first.quantized, first.target)
    assert {t.rule.name for t in tasks} >= {"x86_vnni_blocked"}
    assert any(t.shifts == "right" for t in tasks)  # traces name a requantize intrinsic
    want = {}
    database = open_database(db, first.target)
    for task in tasks:
        trace = _other_schedule(task)
        database.commit(task.workload, trace, 1e-3, first.tvm_target)
        built = task.build(trace)
        assert _sha1(built) != _sha1(task.build())
        want.update({gv.name_hint: _sha1(built) for gv in task.kernels})
    records = (database.folder / "records.json").read_text()
    assert "qcompiler_requantize_right_x16_" in records
    got = _second_process(tmp_path, model, calib, vnni=True, tuning_db=str(db))
    assert got["kernels"] == want and got["skipped"] == []
    # MetaSchedule's own reader takes our files (the same format), once the intrinsics are in.
    ms.database.JSONDatabase(str(database.folder / "workloads.json"),
                             str(database.folder / "records.json"))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm", "hexagon"])
def test_emulated_records_replay_in_a_new_process_bit_exact(tmp_path, rng, target):
    """Tune 2 trials here; a new process finds every kernel (0 trials), builds the same
    kernels, and its library is bit-exact under qemu."""
    model, calib = _files(tmp_path)
    db = tmp_path / "db"
    first = compile_only(model, calib, tmp_path / "a", target=target, tune_trials=2,
                         tuning_db=str(db))
    assert first.tuning and all(r.trials >= 1 for r in first.tuning)
    want = {gv.name_hint: _sha1(first.quantized[gv])
            for t in extract_tasks(first.quantized, first.target) for gv in t.kernels}
    got = _second_process(tmp_path, model, calib, emit=True, target=target, tune_trials=2,
                          tuning_db=str(db))
    assert got["trials"] == [0] * len(first.tuning)
    assert set(got["chosen"]) == {"database"} and got["skipped"] == []
    assert got["kernels"] == want
    lib, ref = StandaloneModel(tmp_path / "second"), Reference(first.quantized)
    info = np.iinfo(first.target.activation_dtype)
    q = rng.integers(info.min, info.max + 1, (1, 16, 8, 8)).astype(info.dtype)
    np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])


@T.prim_func(s_tir=True)
def _add_one(a: T.Buffer((64,), "int32"), b: T.Buffer((64,), "int32")) -> None:
    for i in range(64):
        with T.sblock("add"):
            vi = T.axis.spatial(64, i)
            b[vi] = a[vi] + 1


def _small_database(tmp: Path) -> tuple[Path, list]:
    """A database of one workload and one record (a split of its loop); its records.json
    line as JSON."""
    mod = tvm.IRModule({"main": _add_one})
    sch = tvm.s_tir.Schedule(mod)
    (loop,) = sch.get_loops(sch.get_sblock("add"))
    sch.split(loop, [None, 16])
    db = open_database(tmp, get_target("arm"))
    db.commit(mod, sch.trace, 1.0, tvm.target.Target(get_target("arm").tvm_target))
    path = db.folder / "records.json"
    return path, json.loads(path.read_text())


def test_records_that_do_not_replay_are_skipped_and_counted(tmp_path):
    path, (index, rec) = _small_database(tmp_path)
    insts = rec[0][0]
    unknown = [*insts, ["Tensorize", [insts[-1][3][0]], ["no_such_intrin_x4", True], []]]
    moved = [["GetSBlock", [], ["no_such_block", "main"], ["b0"]]] + insts[1:]
    lines = [[index, [[unknown, *rec[0][1:]], *rec[1:]]], [index, [[moved, *rec[0][1:]],
                                                                   *rec[1:]]]]
    with open(path, "a") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))
    db = open_database(tmp_path, get_target("arm"))
    assert len(db) == 1
    assert len(db.skipped) == 2
    assert "unknown tensor intrinsic no_such_intrin_x4" in db.skipped[0]
    assert "line 3: does not replay" in db.skipped[1]


@pytest.mark.parametrize("corrupt", ["{not json\n", "[1, 2, 3]\n"])
def test_a_corrupt_database_file_is_a_one_line_error(tmp_path, corrupt):
    path, _ = _small_database(tmp_path)
    with open(path, "a") as f:
        f.write(corrupt)
    with pytest.raises(QCompileError, match=f"{path}: line 2 ") as err:
        open_database(tmp_path, get_target("arm"))
    assert "\n" not in str(err.value)


def test_tuning_db_that_cannot_be_a_database_fails_before_any_work(tmp_path):
    model, calib = _files(tmp_path)
    a_file = tmp_path / "db.txt"
    a_file.write_text("")
    (tmp_path / "db" / "x86-0123456789").mkdir(parents=True)
    cases = [(a_file, "a file, not a folder"),
             (tmp_path / "db" / "x86-0123456789", "one target's folder")]
    if os.geteuid() != 0:  # (root writes anywhere)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((locked / "db", "is not writable"))
    for db, message in cases:
        with pytest.raises(QCompileError, match=message) as err:
            compile_only(model, calib, tmp_path / "out", target="arm", tune_trials=1,
                         tuning_db=str(db))
        assert "\n" not in str(err.value)
        assert not (tmp_path / "out").exists()  # (before any work)


def test_missing_rpc_package_is_one_line_before_tuning(monkeypatch):
    import importlib

    from qcompiler.tuning import tune

    real = importlib.import_module

    def without_cloudpickle(name: str, *args: object) -> object:
        if name == "cloudpickle":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_cloudpickle)
    with pytest.raises(QCompileError, match="package cloudpickle is missing") as err:
        tune.parse_tracker("127.0.0.1:9190:key")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("options", "message"), [
    ({"tune_minutes": 1.0}, "give tune_trials too"),
    ({"tune_trials": 4, "tune_minutes": 0}, "tune_minutes must be"),
])
def test_tune_minutes_is_checked(options, message):
    from qcompiler.config import CompileConfig

    with pytest.raises(QCompileError, match=message):
        CompileConfig(**options)


@pytest.mark.slow
def test_a_time_budget_stops_the_search(tmp_path):
    """A deadline already past: one round of candidates (8), not the 64 trials asked."""
    import time

    from qcompiler.tuning.tune import Tuner

    model, calib = _files(tmp_path)
    compiled = compile_only(model, calib, tmp_path / "a", target="arm")
    task = extract_tasks(compiled.quantized, compiled.target)[0]
    tuner = Tuner(compiled.target, compiled.tvm_target, tmp_path / "db", tmp_path / "work")
    tuner.search(task, 64, False, "t", deadline=time.monotonic())
    assert 1 <= tuner.trials <= 8
