"""Loading and running a compiled model: `qcompiler.load(path)`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from qcompiler.errors import QCompileError

_DEFAULT_TVM_THREADS = os.environ.get("TVM_NUM_THREADS")  # the user's own, kept for None
_pool_sized = False


def _configure(threads: int, concurrency: str | None) -> None:
    if concurrency is None:
        os.environ.pop("TVM_NUM_THREADS", None)
    else:
        os.environ["TVM_NUM_THREADS"] = concurrency
    tvm.get_global_func("runtime.config_threadpool")(1, threads)


def set_threads(n: int | None) -> None:
    """Worker threads of TVM's thread pool, which is one per process: every loaded model's
    parallel loops use it. None: one per core.

    TVM reads its concurrency from TVM_NUM_THREADS at every parallel loop, and where it is 1
    calls the loop's body directly; otherwise the loop goes through the pool even when the pool
    has one thread (measured: 4.4 us per loop against 0.04, 0.2-0.3 ms of MobileNetV2's 62
    kernels at one thread). So the variable is set with the pool. The pool takes its number
    of workers from the same variable when it is created, once: the first call creates it
    with one per core, so that a later call can raise the threads again."""
    global _pool_sized
    if n is not None and (not isinstance(n, int) or n < 1):
        raise QCompileError(f"threads must be a positive integer, not {n!r}")
    cores = os.cpu_count() or 1
    if not _pool_sized:
        _configure(cores, str(cores))
        _pool_sized = True
    _configure(n or cores, _DEFAULT_TVM_THREADS if n is None else str(n))


class CompiledModel:
    """A compiled library: `run` (float in/out) and `run_int` (quantized in/out)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        if threads is not None:
            set_threads(threads)
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        lib, meta = folder / "model.so", folder / "model.json"
        if not lib.exists() or not meta.exists():
            raise QCompileError(f"{folder}: not a qcompiler output (needs model.so, model.json)")
        self.meta = json.loads(meta.read_text())
        self._module = tvm.runtime.load_module(str(lib))
        self.inputs = self.meta["inputs"]
        self.outputs = self.meta["outputs"]
        # Per calling thread: a VM (its frames and registers are per call) and one aligned
        # input tensor per (entry, input), reused by every call of that thread, with a numpy
        # view each call copies its input into. A new tensor per call cost an allocation of
        # fresh pages (0.06-0.09 ms of MobileNetV2's 2.4 ms at 1 thread), and
        # `Tensor.copyfrom`'s Python path, right after a run has evicted the interpreter's
        # caches, 0.04 ms more than the copy. So threads call one model at the same time.
        self._local = threading.local()

    @property
    def _vm(self) -> relax.VirtualMachine:
        vm = getattr(self._local, "vm", None)
        if vm is None:
            vm = self._local.vm = relax.VirtualMachine(self._module, tvm.cpu())
        return vm

    @property
    def _staged(self) -> dict[str, list[tuple[tvm.runtime.Tensor, np.ndarray]]]:
        staged = getattr(self._local, "staged", None)
        if staged is None:
            staged = self._local.staged = {}
        return staged

    def _check(self, arrays: tuple[np.ndarray, ...], key: str) -> list:
        if len(arrays) != len(self.inputs):
            raise QCompileError(f"expected {len(self.inputs)} input(s), got {len(arrays)}")
        staged = self._staged.get(key)
        if staged is None:
            staged = self._staged[key] = [self._stage(spec, key) for spec in self.inputs]
        for a, spec, (_, view) in zip(arrays, self.inputs, staged):
            a = a if isinstance(a, np.ndarray) else np.asarray(a)
            if a.dtype != view.dtype or a.shape != view.shape:
                raise QCompileError(f"input {spec['name']}: expected {view.dtype} "
                                    f"{spec['shape']}, got {a.dtype} {list(a.shape)}")
            np.copyto(view, a)
        return [tensor for tensor, _ in staged]

    @staticmethod
    def _stage(spec: dict, key: str) -> tuple[tvm.runtime.Tensor, np.ndarray]:
        tensor = tvm.runtime.empty(spec["shape"], "float32" if key == "float" else spec["dtype"])
        return tensor, np.from_dlpack(tensor)

    @staticmethod
    def _unpack(res: object) -> list[np.ndarray]:
        """The outputs as numpy arrays of their own. By DLPack and a copy: right after a run
        has evicted the interpreter's caches, `Tensor.numpy()`'s longer Python path took
        0.041 ms for MobileNetV2's 1000 bytes, this 0.009."""
        tensors = [res] if hasattr(res, "__dlpack__") else list(res)
        return [np.from_dlpack(t).copy() for t in tensors]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Float inputs -> quantize -> integer network -> dequantize -> float outputs."""
        return self._unpack(self._vm["main"](*self._check(inputs, "float")))

    def run_int(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Quantized inputs (the manifest's dtype and qparams) -> quantized outputs."""
        return self._unpack(self._vm["main_int"](*self._check(inputs, "int")))

    def quantize_inputs(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """The boundary quantization `main` applies, in numpy (ONNX QuantizeLinear)."""
        from qcompiler.numerics.qparams import dtype_range

        out = []
        for a, spec in zip(inputs, self.inputs):
            lo, hi = dtype_range(spec["dtype"])
            r = np.rint(a.astype(np.float32) / np.float32(spec["scale"]))
            out.append(np.clip(r + spec["zero_point"], lo, hi).astype(spec["dtype"]))
        return out


class StandaloneModel(CompiledModel):
    """The runtime-free library, driven through its example runner (under qemu for a target
    this machine cannot execute). Same interface as CompiledModel; one input, any outputs."""

    def __init__(self, path: str | Path) -> None:
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        meta = folder / "model.json"
        if not meta.exists():
            raise QCompileError(f"{folder}: not a qcompiler output (needs model.json)")
        self.meta = json.loads(meta.read_text())
        self.folder = folder
        self.inputs, self.outputs = self.meta["inputs"], self.meta["outputs"]
        self.runner = folder / self.meta["standalone"]["runner"]
        self.prefix = list(self.meta.get("run_prefix") or [])
        if len(self.inputs) != 1:
            raise QCompileError(f"{folder}: the example runner drives one input")
        if self.prefix and shutil.which(self.prefix[0]) is None:
            raise QCompileError(f"{self.prefix[0]} not found: it runs {self.meta['target']} "
                                "programs here; install it with apt-get install qemu-user")

    def _exec(self, x: np.ndarray, raw: bool) -> list[np.ndarray]:
        """Run the runner; its output file holds every output, one after the other."""
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
            np.ascontiguousarray(x).tofile(src)
            cmd = [*self.prefix, str(self.runner), str(src), str(dst), *(["--int"] if raw else [])]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise QCompileError(f"{self.runner.name} failed ({res.returncode}): "
                                    f"{res.stderr.strip()[-300:]}")
            data, outs = dst.read_bytes(), []
            for spec in self.outputs:
                dtype = np.dtype(spec["dtype"] if raw else "float32")
                n = int(np.prod(spec["shape"]))
                outs.append(np.frombuffer(data, dtype, n).reshape(spec["shape"]).copy())
                data = data[n * dtype.itemsize:]
            return outs

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        (x,) = inputs
        self._check_spec(x, "float32")
        return self._exec(x, raw=False)

    def run_int(self, *inputs: np.ndarray) -> list[np.ndarray]:
        (x,) = inputs
        self._check_spec(x, self.inputs[0]["dtype"])
        return self._exec(x, raw=True)

    def _check_spec(self, x: np.ndarray, dtype: str) -> None:
        spec = self.inputs[0]
        if x.dtype != dtype or list(x.shape) != spec["shape"]:
            raise QCompileError(f"input {spec['name']}: expected {dtype} {spec['shape']}, "
                                f"got {x.dtype} {list(x.shape)}")


def load(path: str | Path, standalone: bool = False, threads: int | None = None
         ) -> CompiledModel:
    """A compiled model folder. The TVM module (`model.so`) where the target runs here, else
    (or with `standalone=True`) the runtime-free library through its runner. `threads` sets
    the TVM module's worker threads (the runner drives the runtime-free library on one)."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    meta = folder / "model.json"
    if meta.exists() and (standalone or json.loads(meta.read_text()).get("library") is None):
        return StandaloneModel(folder)
    return CompiledModel(path, threads)
