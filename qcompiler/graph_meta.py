"""The graph's metadata: what the quantize pass records on `main_int` and what the emitters,
the runtime and the reports read (inputs and outputs with their qparams, one record per layer).

It travels with the IRModule as the JSON attribute `qcompiler.graph`, so every stage after
`quantize` sees the same description without a side channel.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import tvm

ATTR = "qcompiler.graph"


@dataclass
class LayerRecord:
    """One line of the compile summary: what a float op became. `name` and `onnx_op`: its
    ONNX node as Netron shows it (`frontend.layer_origin`), else its float graph binding."""

    name: str
    op: str  # the integer kernel's op (conv2d, add, elementwise, ...)
    status: str  # "integer" or "float"
    detail: str = ""
    index: int = -1  # position among the float graph's tensor bindings (calibration order)
    tensor: str = ""  # the integer tensor's variable in main_int
    scale: float = 0.0
    zero_point: int = 0
    weight_bits: int = 0  # conv/dense: the bits of its weights (0: no weights)
    onnx_op: str = ""  # the ONNX op type of the node `name`
    fused: list[str] = field(default_factory=list)  # its other ONNX nodes, "name (OpType)"


def layer_label(layer: dict) -> str:
    """A layer as messages name it: `/features/features.3/Conv (Conv)`."""
    return f"{layer['name']} ({layer['onnx_op']})" if layer.get("onnx_op") else layer["name"]


def attach_graph_meta(mod: tvm.IRModule, inputs: list[dict], outputs: list[dict],
                      layers: list[LayerRecord]) -> tvm.IRModule:
    """`mod` with the metadata on `main_int`; inputs/outputs: name, shape and qparams each."""
    meta = {"inputs": inputs, "outputs": outputs, "layers": [asdict(r) for r in layers]}
    mod["main_int"] = mod["main_int"].with_attr(ATTR, json.dumps(meta))
    return mod


def graph_meta(mod: tvm.IRModule) -> dict:
    """Inputs, outputs (with qparams) and per-layer status recorded by `quantize`."""
    return json.loads(str(mod["main_int"].attrs[ATTR]))


FALLBACKS = "schedule_fallbacks"  # the key of the kernels left portable (only when there are)


@dataclass(frozen=True)
class ScheduleFallback:
    """A kernel whose target rule raised while building it: the layer keeps its portable kernel
    (same operands, same numbers; `schedules._plan`, `passes.plan_layout`). A bug to report, not
    a user mistake: the fuzz and zoo tests require none."""

    layer: str  # the layer's label in the summary (`layer_label`), else the kernel's tensor
    op: str
    kernel: str  # the kernel's global symbol, e.g. "q3_conv2d"
    rule: str  # the rule that raised, e.g. "x86_vnni_depthwise"
    error: str  # "ExceptionType: first line of its message"

    def cause(self) -> str:
        return f"{self.rule}: schedule error: {self.error}"

    def summary(self) -> str:
        return f"{self.layer} {self.op} ({self.cause()})"


def schedule_fallback(tensor: str, op: str, kernel: str, rule: str,
                      exc: BaseException) -> ScheduleFallback:
    """The record of `exc` raised by `rule` on the kernel binding `tensor`; the layer name is
    resolved by `record_schedule_fallbacks`."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith(("Traceback", "File "))), "")
    return ScheduleFallback(tensor, op, kernel, rule, f"{type(exc).__name__}: {first[:200]}")


def record_schedule_fallbacks(mod: tvm.IRModule, found: list[ScheduleFallback]
                              ) -> tvm.IRModule:
    """A copy of `mod` whose metadata adds `found` under FALLBACKS (the layer names resolved
    from the kernels' tensors) and says so in each layer's `detail` (which `model.json`
    carries). `mod` unchanged when nothing fell back or it has no metadata."""
    main = mod["main_int"]
    if not found or main.attrs is None or ATTR not in main.attrs:
        return mod
    meta = json.loads(str(main.attrs[ATTR]))
    by_tensor = {x["tensor"]: x for x in meta["layers"] if x.get("tensor")}
    done = {(f["kernel"], f["rule"]) for f in meta.get(FALLBACKS, [])}
    for f in found:
        if (f.kernel, f.rule) in done:
            continue
        done.add((f.kernel, f.rule))
        layer = by_tensor.get(f.layer)
        if layer is not None:
            f = ScheduleFallback(layer_label(layer), layer["op"], f.kernel, f.rule, f.error)
            note = f"portable kernel ({f.rule}: schedule error: {f.error})"
            layer["detail"] = f"{layer['detail']}; {note}" if layer["detail"] else note
        meta.setdefault(FALLBACKS, []).append(asdict(f))
    out = tvm.IRModule(dict(mod.functions_items()), mod.attrs, mod.global_infos)
    out["main_int"] = main.with_attr(ATTR, json.dumps(meta))  # `mod` itself unchanged
    return out


def schedule_fallbacks(mod: tvm.IRModule) -> list[ScheduleFallback]:
    """The kernels left portable because their target rule raised (empty: none)."""
    main = mod["main_int"]
    if main.attrs is None or ATTR not in main.attrs:
        return []
    return [ScheduleFallback(**f) for f in json.loads(str(main.attrs[ATTR])).get(FALLBACKS, [])]
