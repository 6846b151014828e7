"""MetaSchedule builders and runners for our kernels, one per way of measuring a target.

    x86      in-process build, real executions timed by TVM's `time_evaluator` (1 thread,
             weights cold and the input warm, as in a model)
    hexagon  kernel object + `run_kernel.c` linked by zig, run under qemu-hexagon; the cost is
             the packets executed inside the kernel (the TCG plugin), so tuning is deterministic
    arm      the same under qemu-aarch64, counting instructions
    rpc      the x86 build sent to TVM's RPC tracker, timed on whichever server it hands out

The local runners run each candidate on the task's real operands and a random input and
compare the result with `qcompiler.reference`: a candidate that differs gets an error instead
of a cost, so the search never ranks it.
"""
from __future__ import annotations

import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerInput, RunnerResult

from qcompiler.backend.hexagon_cost import function_ranges, plugin_path
from qcompiler.errors import TargetError
from qcompiler.reference import kernel_for
from qcompiler.tuning.candidates import Traces
from qcompiler.tuning.tasks import Activation, Task

KERNEL_SYMBOL = "qc_kernel_under_test"
RUN_KERNEL = Path(__file__).parent.parent / "backend" / "c" / "run_kernel.c"
COUNT_SECONDS = 1e-9  # a packet / instruction is one nanosecond in MetaSchedule's run_secs


def task_inputs(task: Task, seed: int) -> list[np.ndarray]:
    """The kernel's operands, output excluded: a random input, the task's constants, and
    random values for its other activations."""
    rng = np.random.default_rng(seed)

    def draw(shape: tuple, dtype: str) -> np.ndarray:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, shape, dtype=dtype)

    return [draw(task.x_shape, task.x_dtype),
            *(draw(a.shape, a.dtype) if isinstance(a, Activation) else a
              for a in task.operands)]


def expected(task: Task, inputs: list[np.ndarray]) -> np.ndarray:
    """The reference's output for the packed kernel (it unpacks the operands exactly)."""
    return kernel_for(task.op, task.kernel_attrs)(*inputs, task.kernel_attrs)


def _with_symbol(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.IRModule({KERNEL_SYMBOL: mod["main"].with_attr("global_symbol", KERNEL_SYMBOL)})


def _mismatch(got: np.ndarray, want: np.ndarray) -> str | None:
    if got.shape == want.shape and np.array_equal(got, want):
        return None
    bad = int(np.sum(got != want)) if got.shape == want.shape else got.size
    return f"differs from qcompiler.reference at {bad} of {want.size} elements: rejected"


class _Done(PyRunnerFuture):
    def __init__(self, result: RunnerResult) -> None:
        self._result = result

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return self._result


Done = derived_object(_Done)


@derived_object
class KernelBuilder(PyBuilder):
    """Builds candidates in this process into `folder` (x86: a shared library; emulated
    targets: a static `run_kernel` executable). While `task` is set (a search), each
    candidate is the task's kernel built from the candidate's trace (`traces`, recorded by
    `candidates.RecordingSearch`): the real workload, not the search's copy of it, finished
    as kernels are (`DotProduct.finish`), so it is measured as it would run."""

    def __init__(self, target: tvm.target.Target, folder: Path, cc: tuple[str, ...] = ()
                 ) -> None:
        super().__init__()
        self.target, self.folder, self.cc = target, Path(folder), tuple(cc)
        self.count = 0
        self.task: Task | None = None
        self.traces = Traces()

    def _finished(self, mod: tvm.IRModule) -> tvm.IRModule:
        if self.task is None:
            return mod
        trace = self.traces.find(mod)
        if trace is None:
            raise RuntimeError("a candidate the search did not hand out")
        return tvm.IRModule({"main": self.task.build(trace)})

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        out = []
        for inp in build_inputs:
            self.count += 1
            path = self.folder / f"candidate{self.count}" / "kernel"  # a folder each: MetaSchedule
            path.parent.mkdir(parents=True, exist_ok=True)  # removes an artifact's folder
            try:
                mod = _with_symbol(self._finished(inp.mod))
                out.append(BuilderResult(str(self._build(mod, path)), None))
            except Exception as exc:  # noqa: BLE001 - a candidate that fails is reported
                out.append(BuilderResult(None, f"{type(exc).__name__}: {exc}"))
        return out

    def _build(self, mod: tvm.IRModule, path: Path) -> Path:
        with tvm.transform.PassContext(opt_level=3):
            lib = tvm.tirx.build(mod, self.target)
        if not self.cc:
            lib.export_library(str(path.with_suffix(".so")))
            return path.with_suffix(".so")
        obj = path.with_suffix(".o")
        lib.write_to_file(str(obj))
        harness = self.folder / "run_kernel.o"
        if not harness.exists():
            _run([*self.cc, "-O2", "-std=c11", "-I", str(RUN_KERNEL.parent), "-c",
                  str(RUN_KERNEL), "-o", str(harness)], "compiling run_kernel.c")
        _run([*self.cc, "-static", str(harness), str(obj), "-lm", "-o", str(path)],
             "linking run_kernel")
        return path


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        msg = (res.stderr.strip() or res.stdout.strip()).splitlines()
        raise TargetError(f"{what} failed: {msg[-1] if msg else res.returncode}")


class _CheckingRunner(PyRunner):
    """Runs each candidate of the current task on real operands, checks it bit for bit,
    then measures it. `task` is set by the tuner before each task's search."""

    def __init__(self) -> None:
        super().__init__()
        self.task: Task | None = None
        self.seed = 0
        self._data: tuple = (None, {})  # (task, {seed: (inputs, reference output)})

    def data(self, task: Task, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
        """A task's operands for `seed` and the reference's output, computed once per task
        and seed (the numpy reference is the slow part of a measurement)."""
        if self._data[0] is not task:
            self._data = (task, {})
        memo = self._data[1]
        if seed not in memo:
            inputs = task_inputs(task, seed)
            memo[seed] = (inputs, expected(task, inputs))
        return memo[seed]

    def run(self, runner_inputs: list[RunnerInput]) -> list:
        inputs, want = self.data(self.task, self.seed)
        out = []
        for inp in runner_inputs:
            try:
                got, cost = self.measure(Path(inp.artifact_path), inputs, want)
                error = _mismatch(got, want)
                out.append(Done(RunnerResult(None if error else [cost], error)))
            except Exception as exc:  # noqa: BLE001 - a candidate that fails is reported
                out.append(Done(RunnerResult(None, f"{type(exc).__name__}: {exc}")))
        return out

    def measure(self, artifact: Path, inputs: list[np.ndarray], want: np.ndarray
                ) -> tuple[np.ndarray, float]:
        raise NotImplementedError


@derived_object
class TimingRunner(_CheckingRunner):
    """x86: the candidate loaded here, timed with TVM's `time_evaluator` on one thread, in the
    conditions of a model: before each run every operand but the input is flushed from the
    caches (`cache_flush_cpu_non_first_arg`). In a model a kernel's input was just written
    by the kernel before it, while its weights were last read a whole inference ago; timed
    warm, a candidate that re-reads its weights from L1 looked as fast as one that streams
    them once. The cost is the fastest of `repeat` runs (other work only ever adds time)."""

    def __init__(self, repeat: int = 30) -> None:
        super().__init__()
        self.repeat = repeat

    def measure(self, artifact: Path, inputs: list[np.ndarray], want: np.ndarray
                ) -> tuple[np.ndarray, float]:
        lib = tvm.runtime.load_module(str(artifact))
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(a, dev) for a in inputs]
        args.append(tvm.runtime.empty(want.shape, str(want.dtype), dev))
        lib[KERNEL_SYMBOL](*args)
        timer = lib.time_evaluator(KERNEL_SYMBOL, dev, number=1, repeat=self.repeat,
                                   f_preproc="cache_flush_cpu_non_first_arg")
        return args[-1].numpy(), float(min(timer(*args).results))


def write_arguments(path: Path, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """`run_kernel.c`'s argument file: headers, shapes and data; the output without data."""
    codes = {"i": 0, "u": 1, "f": 2}
    with open(path, "wb") as f:
        for a, is_out in [*((a, 0) for a in inputs), (out, 1)]:
            f.write(struct.pack("<4i", codes[a.dtype.kind], a.dtype.itemsize * 8, a.ndim, is_out))
            f.write(struct.pack(f"<{a.ndim}q", *a.shape))
            if not is_out:
                f.write(np.ascontiguousarray(a).tobytes())


@derived_object
class CountingRunner(_CheckingRunner):
    """Targets we emulate: the candidate run once under qemu with the TCG counting plugin; the
    cost is what executed in the kernel's own code (not the harness, not libc): packets on
    Hexagon, instructions on AArch64."""

    def __init__(self, qemu: tuple[str, ...]) -> None:
        super().__init__()
        self.qemu = tuple(qemu)

    def measure(self, artifact: Path, inputs: list[np.ndarray], want: np.ndarray
                ) -> tuple[np.ndarray, float]:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            write_arguments(tmp / "args.bin", inputs, want)
            counts = tmp / "packets.txt"
            cmd = [*self.qemu, "-plugin", f"{plugin_path()},out={counts}", str(artifact),
                   str(tmp / "args.bin"), str(tmp / "out.bin")]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise TargetError(f"qemu run failed: {res.stderr.strip()[-200:]}")
            got = np.fromfile(tmp / "out.bin", dtype=want.dtype).reshape(want.shape)
            packets = kernel_packets(artifact, counts.read_text())
        return got, packets * COUNT_SECONDS


def kernel_packets(elf: Path, counts: str) -> int:
    """Packets executed in the kernel's functions (its symbols: those of the candidate's
    object, the entry `__tvm_ffi_...`, its body and its parallel-loop lambdas)."""
    kernel = set(function_ranges(elf.with_suffix(".o")))
    ranges = sorted(r for name, r in function_ranges(elf).items() if name in kernel)
    total = 0
    for line in counts.splitlines():
        vaddr, n, count = line.split()
        addr = int(vaddr, 16)
        if any(s <= addr < e for s, e in ranges):
            total += int(n) * int(count)
    return total
