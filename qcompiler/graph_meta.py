"""The graph's metadata: what the quantize pass records on `main_int` and what the emitters,
the runtime and the reports read (inputs and outputs with their qparams, one record per layer).

It travels with the IRModule as the JSON attribute `qcompiler.graph`, so every stage after
`quantize` sees the same description without a side channel.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import tvm

ATTR = "qcompiler.graph"


@dataclass
class LayerRecord:
    """One line of the compile summary: what a float op became."""

    name: str
    op: str
    status: str  # "integer" or "float"
    detail: str = ""
    index: int = -1  # position among the float graph's tensor bindings (calibration order)
    tensor: str = ""  # the integer tensor's variable in main_int
    scale: float = 0.0
    zero_point: int = 0
    weight_bits: int = 0  # conv/dense: the bits of its weights (0: no weights)


def attach_graph_meta(mod: tvm.IRModule, inputs: list[dict], outputs: list[dict],
                      layers: list[LayerRecord]) -> tvm.IRModule:
    """`mod` with the metadata on `main_int`; inputs/outputs: name, shape and qparams each."""
    meta = {"inputs": inputs, "outputs": outputs, "layers": [asdict(r) for r in layers]}
    mod["main_int"] = mod["main_int"].with_attr(ATTR, json.dumps(meta))
    return mod


def graph_meta(mod: tvm.IRModule) -> dict:
    """Inputs, outputs (with qparams) and per-layer status recorded by `quantize`."""
    return json.loads(str(mod["main_int"].attrs[ATTR]))
