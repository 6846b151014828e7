"""Features for the XGBoost cost model: TVM's per-store features where TVM can compute them,
else the design space's own coordinates.

TVM 0.27's `PerStoreFeature` cannot read a `Let` expression ("Do not have a default for
prim.Let"), and the HVX requantize epilogue binds one on purpose (`schedules/fixed_point32.py`:
it keeps a 32 x 32 multiply from being widened). For such a task the features are the sampled
tile factors (log2) and choices, which is what our design space varies: the cost model still
ranks candidates, it just cannot transfer what it learns between tasks.
"""
from __future__ import annotations

import math

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.feature_extractor import PyFeatureExtractor


def tile_features(trace: tvm.s_tir.Trace) -> np.ndarray:
    """(1, n) float32: log2 of every sampled tile factor and every categorical choice (loop
    order, unrolling), in trace order."""
    values = []
    for inst in trace.insts:
        if inst not in trace.decisions:
            continue
        if inst.kind.name == "SamplePerfectTile":
            values += [math.log2(int(v)) for v in trace.decisions[inst]]
        elif inst.kind.name == "SampleCategorical":
            values.append(float(int(trace.decisions[inst])))
    return np.array([values or [0.0]], dtype="float32")


class _Features(PyFeatureExtractor):
    def __init__(self) -> None:
        super().__init__()
        self.store = ms.feature_extractor.PerStoreFeature()
        self.tiles_only = False

    def extract_from(self, context: ms.TuneContext, candidates: list) -> list:
        if not self.tiles_only:
            try:
                return self.store.extract_from(context, candidates)
            except tvm.error.InternalError:  # a Let in the kernel: from now on, tiles
                self.tiles_only = True
        return [tvm.runtime.tensor(tile_features(c.sch.trace)) for c in candidates]


Features = derived_object(_Features)
