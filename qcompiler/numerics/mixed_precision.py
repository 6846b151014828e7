"""Per-layer weight precision: a `--precision FILE.json`, or a choice by measured sensitivity.

Sensitivity of a conv/dense layer: the SQNR of the float network's outputs when only that
layer's weights are fake-quantized to 4 bits (`W' = s_w clamp(rint(W / s_w), -7, 7)`, the
realizer's scales without its bias-floor widening), against the unperturbed float network,
over the calibration data:  `10 log10(sum y^2 / sum (y - y')^2)` dB. One float compile per
layer, no integer compile.

The budget of `--mixed-precision F`: at most the fraction F of all conv/dense weight *elements*
stays at 8 bits (F = 0.5 on equal-sized layers: half of them 4-bit). The least sensitive layers
(highest SQNR) take 4 bits first, until the 8-bit elements fit the budget.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from qcompiler.errors import QCompileError
from qcompiler.numerics.calibrate import tensor_bindings
from qcompiler.numerics.qparams import symmetric_weight_scales
from qcompiler.numerics.sqnr import sqnr_db
from qcompiler.relax_access import bindings, bound_values, const_array, is_tensor_const, op_name

WEIGHTED = {"qcompiler.conv2d": "relax.nn.conv2d", "qcompiler.dense": "relax.matmul",
            "qcompiler.conv2d_transpose": "relax.nn.conv2d_transpose"}


@dataclass(frozen=True)
class LayerChoice:
    """One conv/dense layer of the mixed-precision choice, for the summary."""

    name: str
    position: int  # among the float graph's tensor bindings
    op: str
    elements: int
    sqnr_db: float  # network output SQNR with this layer alone at 4-bit weights
    bits: int


def load_precision(path: str | Path) -> dict[str, int]:
    """`{"weight_bits": {"lv3": 4, "#5": 4}}` -> layer_weight_bits (CompileConfig checks bits)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise QCompileError(f"{path}: no such precision file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QCompileError(f"{path}: cannot read precision file "
                            f"({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or set(data) != {"weight_bits"} or \
            not isinstance(data["weight_bits"], dict):
        raise QCompileError(f'{path}: a precision file is {{"weight_bits": {{"<layer name or '
                            f'#index>": 4 | 8, ...}}}}')
    return dict(data["weight_bits"])


def weighted_layers(mod: tvm.IRModule
                    ) -> list[tuple[int, relax.Var, relax.GlobalVar, relax.Call]]:
    """(position, var, composite, its conv/matmul call) of each conv/dense binding of main."""
    found = []
    values = bound_values(mod["main"])
    for pos, var in enumerate(tensor_bindings(mod["main"])):
        value = values[var]
        if not isinstance(value, relax.Call) or not isinstance(value.op, relax.GlobalVar):
            continue
        func = mod[value.op]
        kind = str(func.attrs["Composite"]) if func.attrs and "Composite" in func.attrs else ""
        calls = [b.value for b in bindings(func) if op_name(b.value) == WEIGHTED.get(kind)]
        if calls and is_tensor_const(calls[0].args[1]):
            found.append((pos, var, value.op, calls[0]))
    return found


def fake_quantize(w: np.ndarray, op: str, groups: int, bits: int, per_channel: bool
                  ) -> np.ndarray:
    """Symmetric per-output-channel (or per-tensor) quantize-dequantize of a weight tensor in
    its float graph layout: conv2d OIHW, matmul (in, out), conv2d_transpose (I, O/groups, ...)."""
    w = w.astype(np.float32)
    if op == "relax.matmul":
        view, red = w, (0,)
    elif op == "relax.nn.conv2d_transpose":
        view = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
        red = (1, *range(3, view.ndim))
    else:
        view, red = w, tuple(range(1, w.ndim))
    absmax = np.abs(view).max(axis=red, keepdims=True) if per_channel else \
        np.abs(view).max(keepdims=True)
    s = symmetric_weight_scales(absmax, bits)
    q = 2 ** (bits - 1) - 1
    return (np.clip(np.rint(view / s), -q, q) * s).astype(np.float32).reshape(w.shape)


def with_weight(mod: tvm.IRModule, gv: relax.GlobalVar, call: relax.Call,
                 w: np.ndarray) -> tvm.IRModule:
    """`mod` with the weight of `call` (in the composite `gv`) replaced by `w`."""
    func = mod[gv]
    blocks = []
    for blk in func.body.blocks:
        bindings = [relax.VarBinding(b.var, relax.Call(call.op, [call.args[0], relax.const(w)],
                                                       call.attrs, call.ty_args)
                                     if b.value.same_as(call) else b.value)
                    for b in blk.bindings]
        blocks.append(relax.DataflowBlock(bindings) if isinstance(blk, relax.DataflowBlock)
                      else relax.BindingBlock(bindings))
    out = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    out[gv] = relax.Function(func.params, relax.SeqExpr(blocks, func.body.body), func.ret_ty,
                             func.is_pure, func.attrs)
    return relax.transform.Normalize()(out)


def _outputs(mod: tvm.IRModule, data: dict[str, np.ndarray], host: tvm.target.Target
             ) -> np.ndarray:
    """All of main's outputs on `data`, flattened and concatenated, float64."""
    vm = relax.VirtualMachine(tvm.compile(mod, host), tvm.cpu())
    names = [p.name for p in mod["main"].params]
    batch = int(mod["main"].params[0].ty.shape[0])
    n = next(iter(data.values())).shape[0]
    outs = []
    for start in range(0, n - n % batch, batch):
        r = vm["main"](*[tvm.runtime.tensor(data[k][start:start + batch]) for k in names])
        for t in ([r] if hasattr(r, "numpy") else r):
            outs.append(t.numpy().astype(np.float64).ravel())
    return np.concatenate(outs)


def layer_sensitivity(mod: tvm.IRModule, data: dict[str, np.ndarray], host: tvm.target.Target,
                      per_channel: bool = True, bits: int = 4
                      ) -> list[tuple[int, relax.Var, str, int, float]]:
    """(position, var, op, elements, output SQNR dB) of each conv/dense layer at `bits`."""
    ref = _outputs(mod, data, host)
    signal = float(np.sum(ref * ref))
    found = []
    for pos, var, gv, call in weighted_layers(mod):
        w = const_array(call.args[1])
        groups = int(call.attrs.groups) if hasattr(call.attrs, "groups") else 1
        fq = fake_quantize(w, op_name(call), groups, bits, per_channel)
        noise = float(np.sum((ref - _outputs(with_weight(mod, gv, call, fq), data, host)) ** 2))
        db = sqnr_db(signal, noise)
        kind = next(k for k, v in WEIGHTED.items() if v == op_name(call))
        found.append((pos, var, kind.split(".")[-1], int(w.size), db))
    return found


def choose_bits(sensitivity: list[tuple[int, relax.Var, str, int, float]], fraction: float
                ) -> list[LayerChoice]:
    """4 bits for the least sensitive layers until at most `fraction` of the weight elements
    are 8-bit; graph order."""
    total = sum(s[3] for s in sensitivity)
    eight = total
    four = set()
    for pos, _, _, elements, _ in sorted(sensitivity, key=lambda s: (-s[4], s[0])):
        if eight <= fraction * total:
            break
        four.add(pos)
        eight -= elements
    return [LayerChoice(var.name, pos, op, elements, db, 4 if pos in four else 8)
            for pos, var, op, elements, db in sensitivity]
