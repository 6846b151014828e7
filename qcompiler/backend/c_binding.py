"""The runtime-free library loaded into this process (ctypes): to time it beside the TVM module
(`tools/bench.py --c`) and check it against the reference without a runner process."""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np

from qcompiler.errors import QCompileError


class _Threads(ctypes.Structure):
    """NAME_threads: the library's own pthreads pool (launch NULL)."""

    _fields_ = [("num_threads", ctypes.c_int), ("launch", ctypes.c_void_p),
                ("pool", ctypes.c_void_p)]


class CLibrary:
    """`lib<name>.so` of a compiled folder, run on `threads` threads with one workspace of its
    own (so one call at a time per instance; instances run at the same time)."""

    def __init__(self, folder: str | Path, threads: int = 1) -> None:
        folder = Path(folder)
        meta = json.loads((folder / "model.json").read_text())
        sa = meta["standalone"]
        self.inputs, self.outputs = meta["inputs"], meta["outputs"]
        self._lib = ctypes.CDLL(str(folder / sa["shared"]))
        name = sa["name"]
        self._run, self._run_float = (getattr(self._lib, f"{name}_{e}")
                                      for e in ("run_v", "run_float_v"))
        for f in (self._run, self._run_float):
            f.restype = ctypes.c_int
            f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                          ctypes.POINTER(_Threads)]
        self._error = getattr(self._lib, f"{name}_last_error")
        self._error.restype, self._error.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        size = getattr(self._lib, f"{name}_workspace_size")
        size.restype, size.argtypes = ctypes.c_size_t, [ctypes.c_int]
        self._bytes = int(size(threads))
        raw = np.zeros(self._bytes + 128, np.uint8)
        start = -raw.ctypes.data % 128
        self._ws = raw[start:start + self._bytes]  # aligned to NAME_WORKSPACE_ALIGN
        self._threads = _Threads(threads, None, None)
        self._out = [np.empty(o["shape"], o["dtype"]) for o in self.outputs]
        self._out_ptrs = (ctypes.c_void_p * len(self._out))(*[o.ctypes.data for o in self._out])

    def run_int(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Quantized inputs (the manifest's dtype and shape) -> quantized outputs."""
        self._call(self._run, inputs, None, self._out_ptrs)
        return [o.copy() for o in self._out]

    def run(self, *inputs: np.ndarray, out: list[np.ndarray] | None = None
            ) -> list[np.ndarray]:
        """Float inputs -> float outputs (`NAME_run_float_v`), written into `out` if given
        (float32 arrays of the outputs' shapes, at any address, as a caller's buffers)."""
        out = [np.empty(o["shape"], np.float32) for o in self.outputs] if out is None else out
        self._call(self._run_float, inputs, "float32",
                   (ctypes.c_void_p * len(out))(*[o.ctypes.data for o in out]))
        return out

    def _call(self, entry: object, inputs: tuple, dtype: str | None, out_ptrs: object
              ) -> None:
        """The inputs passed where they are (contiguous arrays are not copied: a test can
        hand in a buffer at any address)."""
        if len(inputs) != len(self.inputs):
            raise QCompileError(f"expected {len(self.inputs)} input(s), got {len(inputs)}")
        arrays = [np.ascontiguousarray(a) for a in inputs]
        for a, spec in zip(arrays, self.inputs):
            want = dtype or spec["dtype"]
            if a.dtype != want or list(a.shape) != spec["shape"]:
                raise QCompileError(f"input {spec['name']}: expected {want} "
                                    f"{spec['shape']}, got {a.dtype} {list(a.shape)}")
        ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        rc = entry(ptrs, out_ptrs, self._ws.ctypes.data, self._bytes,
                   ctypes.byref(self._threads))
        if rc:
            raise QCompileError(f"C library error {rc}: "
                                f"{self._error(self._ws.ctypes.data).decode()}")
