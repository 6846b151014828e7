"""Measurements for the compile summary: accuracy, bit-exactness and latency.

Speed figures here are medians of repeated runs, side by side with ONNX Runtime in the same
process; they inform the summary and are not asserted by any test.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from qcompiler.backend.runtime import CompiledModel
from qcompiler.reference import Reference


def median_latency_ms(fn: Callable[[], object], runs: int = 50, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def median_latencies_ms(fns: dict[str, Callable[[], object]], runs: int = 50,
                        block: int = 5) -> dict[str, float]:
    """The median latency of each of `fns`, measured in turns: blocks of `block` runs, each
    after one untimed run, cycling through the functions until each has `runs`. A slow spell
    of a shared machine then falls on every function alike, so their ratios hold; the
    untimed run lets the previous runtime's idle threads stop spinning."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    while any(len(t) < runs for t in times.values()):
        for k, fn in fns.items():
            fn()
            for _ in range(min(block, runs - len(times[k]))):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return {k: float(np.median(t) * 1e3) for k, t in times.items()}


def batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    """Full batches of `size` (a compiled library has a fixed batch); a remainder is dropped."""
    return [x[i:i + size] for i in range(0, len(x) - size + 1, size)]


def int8_predictions(model: CompiledModel, ref: Reference | None, images: np.ndarray,
                     library_images: int | None = None) -> tuple[np.ndarray, int, int]:
    """Top-1 of the int8 model, and (mismatching, compared) output elements of the library vs
    the reference. The quantized outputs are compared, not the dequantized floats.

    `library_images` limits how many images go through the library (an emulated target is
    slow); the rest are predicted by the reference, which the library matched bit for bit.
    """
    b = model.inputs[0]["shape"][0]
    preds, bad, total = [], 0, 0
    for i, x in enumerate(batches(images, b)):
        q = model.quantize_inputs(x)
        through_library = library_images is None or i * b < library_images
        out = model.run_int(*q)[0] if through_library else None
        if ref is not None:
            r = ref.run(*q)[0]
            if out is not None:
                bad += int((r != out).sum())
                total += out.size
            out = r if out is None else out
        preds.append(out.argmax(axis=1))
    return np.concatenate(preds), bad, total


def float_predictions(onnx_path: str, images: np.ndarray, input_name: str) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    out = [sess.run(None, {input_name: images[i:i + 500]})[0] for i in range(0, len(images), 500)]
    return np.concatenate(out).argmax(axis=1)


def ort_latency_ms(onnx_path: str, feeds: dict[str, np.ndarray], threads: int = 1) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    # inputs no node reads (the compiler drops them) still need a value for ONNX Runtime
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    feeds = {**{i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape],
                                 types.get(i.type, np.float32))
                for i in sess.get_inputs() if i.name not in feeds}, **feeds}
    return median_latency_ms(lambda: sess.run(None, feeds))
