"""The search's candidates as traces, so the builder can build each one from the real kernel.

MetaSchedule searches `Task.search_workload`, the kernel without `Let` expressions (its FLOP
estimate rejects them), and hands the builder only the scheduled module. On HVX and NEON that
copy is not the kernel: without the `Let`, TVM's simplifier splits the requantize's
`int64(a + b)` and LLVM multiplies in 64-bit lanes (`schedules/fixed_point32.py`), so the
search would rank candidates by an epilogue the kernel does not have (Hexagon, the bundled
model's first conv: 99,929 packets searched, 27,847 built). `RecordingSearch` keeps every
candidate's trace by its scheduled module; `KernelBuilder` replays it on `Task.workload`.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy


class Traces:
    """Candidates' traces by their scheduled module (structural equality)."""

    def __init__(self) -> None:
        self._by_hash: dict[int, list[tuple[tvm.IRModule, tvm.s_tir.Trace]]] = {}

    def add(self, mod: tvm.IRModule, trace: tvm.s_tir.Trace) -> None:
        self._by_hash.setdefault(tvm_ffi.structural_hash(mod), []).append((mod, trace))

    def find(self, mod: tvm.IRModule) -> tvm.s_tir.Trace | None:
        for known, trace in self._by_hash.get(tvm_ffi.structural_hash(mod), []):
            if tvm_ffi.structural_equal(known, mod):
                return trace
        return None


@derived_object
class RecordingSearch(PySearchStrategy):
    """An `EvolutionarySearch` (its arguments) that records its candidates' traces in
    `traces` as it hands them out."""

    def __init__(self, traces: Traces, **evolutionary: object) -> None:
        super().__init__()
        self.traces, self.evolutionary = traces, evolutionary
        self.inner = ms.search_strategy.EvolutionarySearch(**evolutionary)

    def _initialize_with_tune_context(self, context: ms.TuneContext) -> None:
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(self, max_trials: int, num_trials_per_iter: int, design_spaces: list,
                   database: ms.database.Database | None = None,
                   cost_model: ms.cost_model.CostModel | None = None) -> None:
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database,
                              cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self) -> list | None:
        candidates = self.inner.generate_measure_candidates()
        for c in candidates or []:
            self.traces.add(c.sch.mod, c.sch.trace)
        return candidates

    def notify_runner_results(self, measure_candidates: list, results: list) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self) -> RecordingSearch:
        return RecordingSearch(self.traces, **self.evolutionary)
