"""The final choice between a task's best candidates, made in the model.

A candidate is searched and checked alone (`TimingRunner`: its weights flushed, its input
warm), but what counts is its time inside the model, between the kernels around it, with
the caches as they leave them. MobileNetV2 showed how far apart the two can be: a depthwise
conv 1.37x faster alone was as fast as the fixed schedule in the model, a 1x1 conv 1.33x
faster alone gained 1.08x. So, on a target that runs here, the tuner builds the whole model
a few times, every task's kernels once per variant (the fixed schedule, its best candidate,
its second best), times each kernel inside the model (the VM's instrument hook around every
kernel call, the fastest of a few rounds, the variants alternating), and keeps for each
task the variant that is fastest there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from qcompiler.backend.kernel_build import build_vm
from qcompiler.relax_access import dtype_of, shape_of
from qcompiler.tuning.tasks import Task, with_kernels

ROUNDS = 5  # rounds of timing, the variants alternating; a kernel's time is its fastest
CALLS = 4  # model runs per variant and round
ENTRY = "main_int"  # the quantized graph's entry (integer inputs and outputs)
# A candidate replaces the fixed schedule only if it is at least this much faster in the
# model (below it, which is faster is the timing's noise: a few percent on a 2 us kernel).
MARGIN = 0.02


@dataclass
class Candidates:
    """A task's schedules to choose from: the fixed one (None) first, then the best
    candidates that were checked alone, fastest first."""

    task: Task
    traces: list  # tvm.s_tir.Trace | None


def model_inputs(mod: tvm.IRModule, seed: int = 0) -> list[np.ndarray]:
    """Random integer inputs of the quantized entry."""
    rng = np.random.default_rng(seed)
    out = []
    for p in mod[ENTRY].params:
        info = np.iinfo(dtype_of(p))
        out.append(rng.integers(info.min, info.max + 1, shape_of(p), dtype=dtype_of(p)))
    return out


def kernel_times(exes: list, inputs: list[np.ndarray]) -> list[dict[str, float]]:
    """Per executable, the fastest time of each kernel (by symbol, summed over its calls in
    one run), timed around each call inside whole runs of the model."""
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in inputs]
    vms = [relax.VirtualMachine(exe, dev) for exe in exes]
    best: list[dict[str, float]] = [{} for _ in vms]
    run: dict[str, float] = {}  # this run's time per kernel
    start = [0.0]

    def hook(_func, name, before, _ret, *_args) -> int:  # the VM's instrument
        if before:
            start[0] = time.perf_counter()
        else:
            run[name] = run.get(name, 0.0) + time.perf_counter() - start[0]
        return 0

    for _ in range(ROUNDS):
        for vm, fastest in zip(vms, best):
            vm.set_instrument(hook)
            for _ in range(CALLS):
                run.clear()
                vm[ENTRY](*args)
                for name, t in run.items():
                    fastest[name] = min(fastest.get(name, t), t)
            vm.set_instrument(None)
    return best


def choose(mod: tvm.IRModule, tvm_target: tvm.target.Target, tasks: list[Candidates]
           ) -> list[tuple[int, list[float]]]:
    """Per task: the index of its fastest schedule in the model (0, the fixed one, unless
    another is `MARGIN` faster) and each schedule's time there (seconds per model run, all
    its calls)."""
    depth = max(len(c.traces) for c in tasks)
    exes = []
    for k in range(depth):
        variant = mod
        for c in tasks:
            trace = c.traces[min(k, len(c.traces) - 1)]
            variant = with_kernels(variant, c.task, c.task.build(trace))
        exes.append(build_vm(variant, tvm_target))
    times = kernel_times(exes, model_inputs(mod))
    out = []
    for c in tasks:
        symbols = [str(mod[gv].attrs["global_symbol"]) for gv in c.task.kernels]
        per = [sum(times[k].get(s, 0.0) for s in symbols) for k in range(len(c.traces))]
        k = int(np.argmin(per))
        out.append((k if per[k] < per[0] * (1 - MARGIN) else 0, per))
    return out
