"""Loop helpers shared by the HVX vector schedules: how many lanes, and how to vectorize a
loop so that LLVM emits whole HVX vectors (it turns part-vectors into scalar code)."""
from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import tirx

VECTOR_BYTES = 128
MIN_ROW_BYTES = 64  # shorter vector loads and stores are byte by byte on HVX (LLVM)


def lanes(dtype: str) -> int:
    """Elements of `dtype` in one HVX vector."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def row_chunk(row: int, n_lanes: int) -> int:
    """Lanes per vector for rows of `row` elements (bytes out) laid end to end: a whole or
    half HVX vector where the row is a multiple of one (shorter stores are byte by byte),
    else `n_lanes`."""
    return next((k for k in (VECTOR_BYTES, VECTOR_BYTES // 2) if row % k == 0), n_lanes)


def vectorize_loop(sch: tvm.s_tir.Schedule, loop: Any, n_lanes: int,
                   partition: bool = False) -> None:
    """Vectorize `loop` in chunks of `n_lanes` (whole loop if shorter); a tail runs scalar.
    `partition`: the body tests the loop index against constants (padding); the loop is
    vectorized whole and cut where the test changes (loop partition), so that the interior
    loses it (a test per lane would make the vectorizer emit scalar code)."""
    extent = int(sch.get(loop).extent)
    if not partition and extent < n_lanes and extent & (extent - 1):
        # A part-vector of a length that is no power of two (48 lanes) is miscompiled by
        # LLVM's HVX backend in the requantizing add: its last 16 lanes came out as the zero
        # point (`tests/fixtures/fuzz/hvx_add_48_lanes`). Whole power-of-two chunks instead.
        n_lanes = 1 << (extent.bit_length() - 1)
    if extent <= n_lanes or partition:
        if partition:
            sch.annotate(loop, "pragma_loop_partition_hint", 1)
        sch.vectorize(loop)
        return
    outer, inner = sch.split(loop, [None, n_lanes])
    sch.vectorize(inner)
    if extent % n_lanes:
        sch.annotate(outer, "pragma_loop_partition_hint", 1)


def params(func: tirx.PrimFunc) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype) of each parameter of a kernel."""
    return [(tuple(int(d) for d in p.shape), str(p.dtype)) for p in func.params]
