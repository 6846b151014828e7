"""Autotuning of the dot-product kernels with MetaSchedule and its XGBoost cost model.

    tasks (one per distinct kernel) -> for each task not in the database:
        search: our tensorized schedule as the design space (`DotProduct.schedule(tunable=True)`:
                register-block tiles, columns x rows x channel blocks), evolutionary search
                guided by XGBoost, candidates built and measured by a runner (x86 time,
                Hexagon packets or AArch64 instructions under qemu, or the RPC tracker)
        accept: the best candidates re-run here on a fresh random input, bit for bit against
                `qcompiler.reference`; the first that agrees (or the fixed schedule, if it is
                as fast) enters the database with its cost
    -> every kernel with a record in the database is rebuilt from the record's trace.

The database is MetaSchedule's JSON database, one folder per target (its kind and ISA), keyed
by the unscheduled kernel: a second compile of the same model runs no new trials.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from qcompiler.backend.runtime import set_threads
from qcompiler.errors import QCompileError
from qcompiler.targets.target import Target
from qcompiler.tuning.database import (  # noqa: F401 - database_dir: the tests' path
    TuningDatabase,
    database_dir,
    open_database,
)
from qcompiler.tuning.features import Features
from qcompiler.tuning.runners import (
    CountingRunner,
    KernelBuilder,
    TimingRunner,
    expected,
    task_inputs,
)
from qcompiler.tuning.tasks import Task, extract_tasks

VERIFY_TOP = 3  # candidates re-checked and re-measured before one is accepted


@dataclass
class TaskResult:
    """One row of the final table. Costs in the runner's unit (seconds, or packets x 1e-9)."""

    task: Task
    untuned: float
    tuned: float
    trials: int  # new measurements this run (0: the database had the task)
    chosen: str  # "tuned", "fixed" (no candidate beat the fixed schedule) or "database"


@dataclass(frozen=True)
class RpcTracker:
    """Where TVM's RPC tracker listens, and the key its servers registered with."""

    host: str
    port: int
    key: str


def parse_tracker(spec: str | None) -> RpcTracker | None:
    """"host:port:key" (CompileConfig.rpc_tracker, already checked) -> RpcTracker."""
    if spec is None:
        return None
    host, port, key = spec.split(":", 2)
    return RpcTracker(host, int(port), key)


def _unit(target: Target) -> tuple[str, float, str]:
    """(unit, scale from run_secs, format)."""
    if target.runs_natively:
        return "ms", 1e3, ",.3f"
    return ("packets" if target.name == "hexagon" else "instrs"), 1e9, ",.0f"


class _Progress(ms.measure_callback.PyMeasureCallback):
    """A one-line bar per task: trials done of the budget, best cost so far."""

    def __init__(self, label: str, total: int, unit: tuple[str, float], show: bool) -> None:
        super().__init__()
        self.label, self.total, self.unit, self.show = label, total, unit, show
        self.done, self.best = 0, float("inf")

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,  # noqa: ANN001
              runner_results) -> None:
        for r in runner_results:
            self.done += 1
            if r.run_secs is not None and r.error_msg is None:
                self.best = min(self.best, float(r.run_secs[0]))
        if self.show and runner_results:
            name, scale, fmt = self.unit
            filled = min(20, 20 * self.done // max(self.total, 1))
            best = f"{self.best * scale:{fmt}} {name}" if self.best < float("inf") else "-"
            print(f"\r  {self.label} [{'#' * filled}{'.' * (20 - filled)}] "
                  f"{self.done}/{self.total} best {best}", end="", file=sys.stderr, flush=True)


Progress = derived_object(_Progress)


class Tuner:
    """Builder, runners and database for one target."""

    def __init__(self, target: Target, tvm_target: tvm.target.Target, db_root: Path,
                 folder: Path, rpc: RpcTracker | None = None, seed: int = 0) -> None:
        self.target, self.tvm_target, self.seed = target, tvm_target, seed
        self.db = open_database(db_root, target)
        emulated = not target.runs_natively
        self.builder = KernelBuilder(tvm_target, folder, target.cc if emulated else ())
        self.checker = CountingRunner(target.run_prefix) if emulated else TimingRunner()
        self.search_runner = self.checker if rpc is None else ms.runner.RPCRunner(
            ms.runner.RPCConfig(tracker_host=rpc.host, tracker_port=rpc.port,
                                tracker_key=rpc.key, session_timeout_sec=120),
            evaluator_config=ms.runner.EvaluatorConfig(number=5, repeat=3),
            max_workers=1)

    def measure(self, task: Task, trace: tvm.s_tir.Trace | None, seed: int) -> float:
        """Build a schedule (a trace, or the fixed one), run it on a fresh input, check it bit
        for bit; its cost, or QCompileError if it is wrong."""
        try:
            mod = tvm.IRModule({"main": task.build(trace)})
        except RuntimeError as err:  # a trace that does not replay here (a ScheduleError)
            raise QCompileError(f"{task.name}: a candidate failed to schedule: "
                                f"{str(err).splitlines()[0]}") from None
        (built,) = self.builder.build([ms.builder.BuilderInput(mod, self.tvm_target)])
        if built.error_msg:
            raise QCompileError(f"{task.name}: a candidate failed to build: {built.error_msg}")
        self.checker.task, self.checker.seed = task, seed
        inputs = task_inputs(task, seed)
        want = expected(task, inputs)  # the numpy reference: once, it is the slow part
        got, cost = self.checker.measure(Path(built.artifact_path), inputs, want)
        if not (got.shape == want.shape and (got == want).all()):
            raise QCompileError(f"{task.name}: candidate differs from the reference")
        return cost

    def search(self, task: Task, trials: int, progress: bool, label: str) -> list:
        """Run MetaSchedule on one task; its measured candidates, best first."""
        space = ms.space_generator.ScheduleFn(
            lambda sch: task.rule.schedule(sch, tunable=True), sch_rules=[], postprocs=[],
            mutator_probs={ms.mutator.MutateTileSize(): 1.0})
        strategy = ms.search_strategy.EvolutionarySearch(
            population_size=32, init_min_unmeasured=8, genetic_num_iters=2)
        ctx = ms.TuneContext(mod=task.search_workload, target=self.tvm_target, space_generator=space,
                             search_strategy=strategy, task_name=task.name,
                             rand_state=self.seed, num_threads=1)
        self.checker.task, self.checker.seed = task, self.seed
        scratch = ms.database.MemoryDatabase()
        bar = Progress(label, trials, _unit(self.target), progress)
        with tempfile.TemporaryDirectory() as work:
            ms.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=work,
                          max_trials_global=trials, num_trials_per_iter=min(trials, 8),
                          builder=self.builder, runner=self.search_runner, database=scratch,
                          cost_model=ms.cost_model.XGBModel(extractor=Features(),
                                                                num_tuning_cores=1),
                          measure_callbacks=[*ms.measure_callback.MeasureCallback.create(
                              "default"), bar], task_scheduler="round-robin")
        if progress:
            print(file=sys.stderr)
        self.trials = bar.done
        return scratch.get_top_k(scratch.commit_workload(task.search_workload), VERIFY_TOP)

    def tune_task(self, task: Task, trials: int, progress: bool, label: str) -> TaskResult:
        workload = task.workload
        rec = self.db.query_tuning_record(workload, self.tvm_target)
        if rec is not None:
            cost = float(rec.run_secs[0]) if rec.run_secs else float("nan")
            return TaskResult(task, cost, cost, 0, "database")
        untuned = self.measure(task, None, self.seed + 1)
        best_trace, best = task.default_trace(), untuned
        chosen = "fixed"
        for rec in self.search(task, trials, progress, label):
            try:
                cost = self.measure(task, rec.trace, self.seed + 1)
            except QCompileError:
                continue  # wrong or unbuildable: never enters the database
            if cost < best:
                best_trace, best, chosen = rec.trace, cost, "tuned"
        self.db.commit(workload, best_trace, best, self.tvm_target)
        return TaskResult(task, untuned, best, self.trials, chosen)


def tune(mod: tvm.IRModule, target: Target, tvm_target: tvm.target.Target, trials: int,
         db_root: Path, rpc: RpcTracker | None = None, progress: bool = True
         ) -> list[TaskResult]:
    """Tune every dot-product kernel of a scheduled module the database does not know yet."""
    tasks = extract_tasks(mod, target)
    if progress:
        print(f"\ntuning {len(tasks)} kernel(s), up to {trials} trials each; database "
              f"{database_dir(db_root, target)}", file=sys.stderr)
    set_threads(1)  # x86 kernels are timed on one core (the pool is per process)
    try:
        with tempfile.TemporaryDirectory(prefix="qcompiler-tune-") as folder:
            tuner = Tuner(target, tvm_target, db_root, Path(folder), rpc)
            return [tuner.tune_task(t, trials, progress, f"task {i + 1}/{len(tasks)} {t.name}")
                    for i, t in enumerate(tasks)]
    finally:
        set_threads(None)  # back to TVM's default, one worker per core


def apply_tuned(mod: tvm.IRModule, target: Target, tvm_target: tvm.target.Target,
                db_root: Path) -> tvm.IRModule:
    """The module with every kernel that has a database record rebuilt from its trace (same
    operands, so the graph and the reference are unchanged)."""
    db = open_database(db_root, target, write=False)
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for task in extract_tasks(mod, target):
        rec = db.query_tuning_record(task.workload, tvm_target)
        if rec is None:
            continue
        try:
            func = task.build(rec.trace)
        except Exception as exc:  # noqa: BLE001 - replayed on the workload, not on the kernel
            db.skip(f"{task.name}: its record does not rebuild the kernel "
                              f"({str(exc).strip().splitlines()[-1][:120]})")
            continue  # the fixed schedule stays
        for gv in task.kernels:
            symbol = mod[gv].attrs["global_symbol"]
            out.update_func(gv, func.with_attr("global_symbol", symbol))
    return out


def table(results: list[TaskResult], target: Target) -> str:
    """Per task: calls, untuned and tuned cost, speed-up; and the weighted whole."""
    name, scale, fmt = _unit(target)
    rows = [f"{'task':44s} {'calls':>5s} {'trials':>6s} {'untuned ' + name:>16s} "
            f"{'tuned ' + name:>16s} {'speed-up':>8s}  chosen"]
    total_u = total_t = 0.0
    for r in results:
        total_u += r.untuned * r.task.calls
        total_t += r.tuned * r.task.calls
        rows.append(f"{r.task.name[:44]:44s} {r.task.calls:5d} {r.trials:6d} "
                    f"{r.untuned * scale:16{fmt}} {r.tuned * scale:16{fmt}} "
                    f"{r.untuned / r.tuned:7.2f}x  {r.chosen}")
    if results:
        rows.append(f"{'all kernels (x calls)':44s} {'':5s} {'':6s} {total_u * scale:16{fmt}} "
                    f"{total_t * scale:16{fmt}} {total_u / total_t:7.2f}x")
    return "\n".join(rows)
