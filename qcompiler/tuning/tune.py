"""Autotuning of the dot-product kernels with MetaSchedule and its XGBoost cost model.

    tasks (one per distinct kernel) -> for each task not in the database:
        search: our tensorized schedules as the design spaces (`DotProduct.design_spaces`:
                register-block tiles, columns x rows x channel blocks; for the blocked
                convs also the reduction's loop order and unrolling, a space each; for the
                blocked depthwise convs the columns and padded rows), evolutionary search
                guided by XGBoost, each candidate's trace replayed on the real kernel and
                built as kernels are (`candidates`, `DotProduct.finish`), measured by a
                runner (x86 time with the weights cold, Hexagon packets or AArch64
                instructions under qemu, or the RPC tracker); a one-schedule space is not
                searched (`one_schedule`)
        accept: the best candidates re-run here on a fresh random input, bit for bit against
                `qcompiler.reference`; those that agree and beat the fixed schedule alone
                (the two fastest) are its options
    -> choose: where candidates run here (x86, no RPC), the whole model is built once per
               option and each task keeps the one fastest inside the model (`in_model`);
               elsewhere the fastest alone (packet and instruction counts do not depend
               on the kernels around). The choice enters the database with its cost.
    -> every kernel with a record in the database is rebuilt from the record's trace.

The database is MetaSchedule's JSON database, one folder per target (its kind and ISA), keyed
by the unscheduled kernel: a second compile of the same model runs no new trials.
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import tvm
from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from qcompiler.backend.runtime import set_threads
from qcompiler.errors import QCompileError
from qcompiler.schedules.intrinsics import stub_package
from qcompiler.targets.target import Target
from qcompiler.tuning import in_model
from qcompiler.tuning.candidates import RecordingSearch, Traces
from qcompiler.tuning.database import database_dir, open_database
from qcompiler.tuning.features import Features
from qcompiler.tuning.runners import (
    CountingRunner,
    KernelBuilder,
    TimingRunner,
)
from qcompiler.tuning.tasks import Task, extract_tasks, with_kernels

VERIFY_TOP = 3  # candidates re-checked and re-measured before one is accepted
MODEL_CANDIDATES = 2  # of those, the fastest alone that the model chooses between (+ fixed)


@dataclass
class TaskResult:
    """One row of the final table. Costs in the runner's unit (seconds, or packets x 1e-9)."""

    task: Task
    untuned: float
    tuned: float
    trials: int  # new measurements this run (0: the database had the task)
    chosen: str  # "tuned", "fixed" (no candidate beat the fixed schedule) or "database"
    choice: int = 0  # which of `Tuner.tune_task`'s options is chosen (0: the fixed schedule)
    measured: str = "alone"  # where the costs were measured: "alone" or "in model"

    def __post_init__(self) -> None:
        if self.chosen == "tuned":
            self.choice = 1  # the fastest candidate alone, until the model says otherwise


@dataclass(frozen=True)
class RpcTracker:
    """Where TVM's RPC tracker listens, and the key its servers registered with."""

    host: str
    port: int
    key: str


# What TVM's RPC tracker and servers import and TVM does not declare (pyproject declares
# them): checked before tuning, so a missing one is one line, not a server that dies later.
RPC_PACKAGES = ("tornado", "cloudpickle")


def check_rpc_packages() -> None:
    for name in RPC_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise QCompileError(f"rpc_tracker: the Python package {name} is missing (TVM's "
                                f"RPC tracker and servers import it): pip install {name}"
                                ) from None


def parse_tracker(spec: str | None) -> RpcTracker | None:
    """"host:port:key" (CompileConfig.rpc_tracker, already checked) -> RpcTracker; the
    packages the tracker needs checked first (`check_rpc_packages`)."""
    if spec is None:
        return None
    check_rpc_packages()
    host, port, key = spec.split(":", 2)
    return RpcTracker(host, int(port), key)


def _unit(target: Target) -> tuple[str, float, str]:
    """(unit, scale from run_secs, format)."""
    if target.runs_natively:
        return "us", 1e6, ",.1f"
    return ("packets" if target.name == "hexagon" else "instrs"), 1e9, ",.0f"


class _Progress(ms.measure_callback.PyMeasureCallback):
    """One bar per task (tqdm): trials done of the budget, best cost so far, and the ETA
    (tqdm's, from the trials' pace; under a time budget, the budget bounds it)."""

    def __init__(self, label: str, total: int, unit: tuple[str, float, str], show: bool,
                 deadline: float | None = None, stream: TextIO = sys.stderr) -> None:
        super().__init__()
        self.unit, self.deadline = unit, deadline
        self.done, self.best = 0, float("inf")
        self.bar = tqdm(total=total, desc=f"  {label}", unit="trial", file=stream,
                        disable=not show, leave=True, dynamic_ncols=True,
                        bar_format="{desc} {bar:20} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
                                   "{postfix}")

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,  # noqa: ANN001
              runner_results) -> None:
        for r in runner_results:
            self.done += 1
            if r.run_secs is not None and r.error_msg is None:
                self.best = min(self.best, float(r.run_secs[0]))
        if runner_results:
            name, scale, fmt = self.unit
            best = f"{self.best * scale:{fmt}} {name}" if self.best < float("inf") else "-"
            left = "" if self.deadline is None else \
                f", {max(0.0, self.deadline - time.monotonic()) / 60:.1f} min of budget left"
            self.bar.set_postfix_str(f"best {best}{left}", refresh=False)
            self.bar.update(len(runner_results))

    def close(self) -> None:
        self.bar.close()


Progress = derived_object(_Progress)


@contextlib.contextmanager
def native_log(path: Path) -> Iterator[TextIO]:
    """TVM's native log lines (MetaSchedule warns once for each sampled schedule that does
    not apply, `Trace replay failed`: hundreds per task, expected where a sampled tile does
    not fit the instruction) go to `path`, not to the terminal; yields a stream on the real
    standard error for the progress bars."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        with os.fdopen(os.dup(saved), "w") as real:
            yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def one_schedule(spaces: list[tvm.s_tir.Schedule]) -> bool:
    """Whether design spaces hold a single schedule: one space whose every sampled tile has
    one value (a loop of 1, or of a prime beyond the innermost bound), as a 2x2 depthwise
    plane's or a dense layer's single channel block (MetaSchedule would measure it TRIALS
    times: Hexagon's 1x48 -> 10 dense layer, 32 trials, ~10 minutes)."""
    if len(spaces) != 1:
        return False
    trace = spaces[0].trace
    for inst in trace.insts:
        if inst.kind.name.startswith("Sample"):
            if inst.kind.name != "SamplePerfectTile" or int(inst.attrs[0]) != 2:
                return False
            extent = math.prod(int(v) for v in trace.decisions[inst])
            bound = int(inst.attrs[1]) if int(inst.attrs[1]) > 0 else extent
            if sum(1 for d in range(1, min(bound, extent) + 1) if extent % d == 0) > 1:
                return False
    return True


class Tuner:
    """Builder, runners and database for one target."""

    def __init__(self, target: Target, tvm_target: tvm.target.Target, db_root: Path,
                 folder: Path, rpc: RpcTracker | None = None, seed: int = 0) -> None:
        self.target, self.tvm_target, self.seed = target, tvm_target, seed
        stub_package()  # (MetaSchedule's TuneContext imports all of TVM's intrinsics)
        self.stream = sys.stderr  # where the progress bars go (`native_log`)
        self.db = open_database(db_root, target)
        emulated = not target.runs_natively
        self.builder = KernelBuilder(tvm_target, folder, target.cc if emulated else ())
        self.checker = CountingRunner(target.run_prefix) if emulated else TimingRunner()
        self.search_runner = self.checker if rpc is None else ms.runner.RPCRunner(
            ms.runner.RPCConfig(tracker_host=rpc.host, tracker_port=rpc.port,
                                tracker_key=rpc.key, session_timeout_sec=120),
            evaluator_config=ms.runner.EvaluatorConfig(number=1, repeat=30,
                                                       enable_cpu_cache_flush=True),
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
        inputs, want = self.checker.data(task, seed)
        got, cost = self.checker.measure(Path(built.artifact_path), inputs, want)
        if not (got.shape == want.shape and (got == want).all()):
            raise QCompileError(f"{task.name}: candidate differs from the reference")
        return cost

    def search(self, task: Task, trials: int, progress: bool, label: str,
               deadline: float | None = None) -> list:
        """Run MetaSchedule on one task, up to `trials` candidates (and, given a `deadline`
        on `time.monotonic()`, until then); its measured candidates, best first. A task
        whose design space is one schedule (`one_schedule`) has nothing to search: none."""
        if one_schedule(task.rule.design_spaces(tvm.s_tir.Schedule(task.search_workload))):
            self.trials = 0
            return []
        space = ms.space_generator.ScheduleFn(
            task.rule.design_spaces, sch_rules=[], postprocs=[],
            mutator_probs={ms.mutator.MutateTileSize(): 1.0})
        self.checker.task, self.checker.seed = task, self.seed
        # candidates built from the real workload, finished as kernels are (`candidates`)
        self.builder.task, self.builder.traces = task, Traces()
        scratch = ms.database.MemoryDatabase()  # (shared by the rounds: they start from it)
        model = ms.cost_model.XGBModel(extractor=Features(), num_tuning_cores=1)
        bar = Progress(label, trials, _unit(self.target), progress, deadline, self.stream)
        try:
            # Without a deadline one search of `trials`; with one, rounds of a batch each
            # (MetaSchedule stops at a trial count, not a time), until either runs out.
            rounds = 0
            while bar.done < trials and (rounds == 0 or deadline is None
                                         or time.monotonic() < deadline):
                batch = trials - bar.done if deadline is None else min(trials - bar.done, 8)
                strategy = RecordingSearch(self.builder.traces, population_size=32,
                                           init_min_unmeasured=8, genetic_num_iters=2)
                ctx = ms.TuneContext(mod=task.search_workload, target=self.tvm_target,
                                     space_generator=space, search_strategy=strategy,
                                     task_name=task.name, rand_state=self.seed + rounds,
                                     num_threads=1)
                before, rounds = bar.done, rounds + 1
                with tempfile.TemporaryDirectory() as work:
                    ms.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=work,
                                  max_trials_global=batch, num_trials_per_iter=min(batch, 8),
                                  builder=self.builder, runner=self.search_runner,
                                  database=scratch, cost_model=model,
                                  measure_callbacks=[*ms.measure_callback.MeasureCallback
                                                     .create("default"), bar],
                                  task_scheduler="round-robin")
                if bar.done == before:
                    break  # the design space has nothing left to measure
        finally:
            bar.close()
            self.builder.task = None
        self.trials = bar.done
        return scratch.get_top_k(scratch.commit_workload(task.search_workload), VERIFY_TOP)

    def tune_task(self, task: Task, trials: int, progress: bool, label: str,
                  deadline: float | None = None) -> tuple[TaskResult, list]:
        """Search a task the database does not know: its result (by the costs alone) and its
        options, (trace, cost) pairs: the fixed schedule (trace None) first, then the
        checked candidates faster than it alone, fastest first, at most
        `MODEL_CANDIDATES`. Nothing is committed here (`commit`)."""
        rec = self.db.query_tuning_record(task.workload, self.tvm_target)
        if rec is not None:
            cost = float(rec.run_secs[0]) if rec.run_secs else float("nan")
            return TaskResult(task, cost, cost, 0, "database"), []
        untuned = self.measure(task, None, self.seed + 1)
        better = []
        for rec in self.search(task, trials, progress, label, deadline):
            try:
                cost = self.measure(task, rec.trace, self.seed + 1)
            except QCompileError:
                continue  # wrong or unbuildable: never enters the database
            if cost < untuned:
                better.append((cost, len(better), rec.trace))
        better = sorted(better, key=lambda b: b[:2])[:MODEL_CANDIDATES]
        best = better[0][0] if better else untuned
        result = TaskResult(task, untuned, best, self.trials, "tuned" if better else "fixed")
        return result, [(None, untuned), *((trace, cost) for cost, _, trace in better)]

    def commit(self, task: Task, trace: tvm.s_tir.Trace | None, cost: float) -> None:
        """Record a task's chosen schedule (None: the fixed one) with its cost."""
        self.db.commit(task.workload, trace or task.default_trace(), cost, self.tvm_target)


def tune(mod: tvm.IRModule, target: Target, tvm_target: tvm.target.Target, trials: int,
         db_root: Path, rpc: RpcTracker | None = None, progress: bool = True,
         minutes: float | None = None) -> list[TaskResult]:
    """Tune every dot-product kernel of a scheduled module the database does not know yet:
    up to `trials` candidates each and, given `minutes`, within that time in all (shared out
    evenly among the kernels still to tune, what one leaves going to the next)."""
    tasks = extract_tasks(mod, target)
    budget = "" if minutes is None else f", {minutes:g} min in all"
    if progress:
        print(f"\ntuning {len(tasks)} kernel(s), up to {trials} trials each{budget}; database "
              f"{database_dir(db_root, target)}", file=sys.stderr)
    end = None if minutes is None else time.monotonic() + 60.0 * minutes
    set_threads(1)  # x86 kernels are timed on one core (the pool is per process)
    try:
        with tempfile.TemporaryDirectory(prefix="qcompiler-tune-") as folder, \
                native_log(Path(folder) / "tvm.log") as stream:
            tuner = Tuner(target, tvm_target, db_root, Path(folder), rpc)
            tuner.stream = stream
            results, choices = [], []
            try:
                for i, t in enumerate(tasks):
                    deadline = None if end is None else \
                        time.monotonic() + (end - time.monotonic()) / (len(tasks) - i)
                    result, options = tuner.tune_task(
                        t, trials, progress, f"task {i + 1}/{len(tasks)} {t.name}", deadline)
                    results.append(result)
                    if options:
                        choices.append((result, options))
                # Where the candidates run here, the final choice is made in the model.
                if rpc is None and target.runs_natively and \
                        any(len(options) > 1 for _, options in choices):
                    if progress:
                        print("  choosing between the best candidates in the model",
                              file=stream, flush=True)
                    _choose_in_model(mod, tvm_target, choices)
            finally:  # (an interrupted run keeps what it measured alone)
                for result, options in choices:
                    trace, cost = options[result.choice]
                    tuner.commit(result.task, trace, cost)
            return results
    finally:
        set_threads(None)  # back to TVM's default, one worker per core


def _choose_in_model(mod: tvm.IRModule, tvm_target: tvm.target.Target,
                     choices: list[tuple[TaskResult, list]]) -> None:
    """Each task's schedule that is fastest inside the model (`in_model.choose`): its result
    and its options' costs become those times (seconds per call)."""
    picks = in_model.choose(mod, tvm_target, [
        in_model.Candidates(r.task, [trace for trace, _ in options]) for r, options in choices])
    for (result, options), (k, per) in zip(choices, picks):
        calls = result.task.calls
        options[:] = [(trace, t / calls) for (trace, _), t in zip(options, per)]
        result.choice, result.measured = k, "in model"
        result.untuned, result.tuned = per[0] / calls, per[k] / calls
        result.chosen = "tuned" if k else "fixed"


def apply_tuned(mod: tvm.IRModule, target: Target, tvm_target: tvm.target.Target,
                db_root: Path) -> tvm.IRModule:
    """The module with every kernel that has a database record rebuilt from its trace (same
    operands, so the graph and the reference are unchanged)."""
    db = open_database(db_root, target, write=False)
    out = mod
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
        out = with_kernels(out, task, func)
    return out


def table(results: list[TaskResult], target: Target) -> str:
    """Per task: calls, untuned and tuned cost, speed-up; and the weighted whole. The costs
    of a task chosen in the model (`in_model`) are its kernels' times there."""
    name, scale, fmt = _unit(target)
    rows = [f"{'task':44s} {'calls':>5s} {'trials':>6s} {'untuned ' + name:>16s} "
            f"{'tuned ' + name:>16s} {'speed-up':>8s}  chosen"]
    total_u = total_t = 0.0
    for r in results:
        total_u += r.untuned * r.task.calls
        total_t += r.tuned * r.task.calls
        rows.append(f"{r.task.name[:44]:44s} {r.task.calls:5d} {r.trials:6d} "
                    f"{r.untuned * scale:16{fmt}} {r.tuned * scale:16{fmt}} "
                    f"{r.untuned / r.tuned:7.2f}x  {r.chosen}"
                    + (" (in model)" if r.measured == "in model" else ""))
    if results:
        rows.append(f"{'all kernels (x calls)':44s} {'':5s} {'':6s} {total_u * scale:16{fmt}} "
                    f"{total_t * scale:16{fmt}} {total_u / total_t:7.2f}x")
    return "\n".join(rows)


def database_summary(db_root: Path, target: Target, mod: tvm.IRModule) -> list[str]:
    """The compile summary's lines on the database: how many of the module's kernels its
    records gave, and the records it skipped (they no longer replay), with the first reason."""
    db = open_database(db_root, target, write=False)
    tvm_target = tvm.target.Target(target.tvm_target)
    tasks = extract_tasks(mod, target)
    found = sum(db.query_tuning_record(t.workload, tvm_target) is not None for t in tasks)
    lines = [(f"  tuning db:  {found} of {len(tasks)} tunable kernel(s) from its {len(db)} "
              f"record(s), {db.folder}")]
    if db.skipped:
        more = " ..." if len(db.skipped) > 1 else ""
        lines.append(f"  note:       {len(db.skipped)} tuning record(s) skipped (they no longer "
                     f"replay here; those kernels keep the fixed schedule): {db.skipped[0]}"
                     f"{more}")
    return lines
