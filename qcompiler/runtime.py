"""Loading and running a compiled model: `qcompiler.load(path)`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from qcompiler.errors import QCompileError


class CompiledModel:
    """A compiled library: `run` (float in/out) and `run_int` (quantized in/out)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        lib, meta = folder / "model.so", folder / "model.json"
        if not lib.exists() or not meta.exists():
            raise QCompileError(f"{folder}: not a qcompiler output (needs model.so, model.json)")
        self.meta = json.loads(meta.read_text())
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
        self.inputs = self.meta["inputs"]
        self.outputs = self.meta["outputs"]

    def _check(self, arrays: tuple[np.ndarray, ...], key: str) -> list:
        if len(arrays) != len(self.inputs):
            raise QCompileError(f"expected {len(self.inputs)} input(s), got {len(arrays)}")
        out = []
        for a, spec in zip(arrays, self.inputs):
            dtype = "float32" if key == "float" else spec["dtype"]
            a = np.ascontiguousarray(a)
            if a.dtype != dtype or list(a.shape) != spec["shape"]:
                raise QCompileError(f"input {spec['name']}: expected {dtype} {spec['shape']}, "
                                    f"got {a.dtype} {list(a.shape)}")
            out.append(tvm.runtime.tensor(a))
        return out

    @staticmethod
    def _unpack(res: object) -> list[np.ndarray]:
        if hasattr(res, "numpy"):
            return [res.numpy()]
        return [r.numpy() for r in res]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Float inputs -> quantize -> integer network -> dequantize -> float outputs."""
        return self._unpack(self._vm["main"](*self._check(inputs, "float")))

    def run_int(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Quantized inputs (the manifest's dtype and qparams) -> quantized outputs."""
        return self._unpack(self._vm["main_int"](*self._check(inputs, "int")))

    def quantize_inputs(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """The boundary quantization `main` applies, in numpy (ONNX QuantizeLinear)."""
        from qcompiler.qparams import dtype_range

        out = []
        for a, spec in zip(inputs, self.inputs):
            lo, hi = dtype_range(spec["dtype"])
            r = np.rint(a.astype(np.float32) / np.float32(spec["scale"]))
            out.append(np.clip(r + spec["zero_point"], lo, hi).astype(spec["dtype"]))
        return out


def load(path: str | Path) -> CompiledModel:
    return CompiledModel(path)
