"""Helpers shared by the QDQ tests: compile a QDQ model, read its weighted kernels back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import save_calib, save_model

from qcompiler.numerics.weight_layout import layer_weights
from qcompiler.relax_access import bindings, const_array, is_const, op_name


def compile_qdq(model: onnx.ModelProto, tmp: Path, calib: dict | None = None):
    """Compile without calibration data (unless given); returns (compiled, library)."""
    from qcompiler.api import compile_only, write_outputs
    from qcompiler.backend.runtime import CompiledModel

    path = save_model(model, tmp, "model.onnx")
    out = tmp / "out"
    compiled = compile_only(path, None if calib is None else save_calib(calib, tmp), out)
    write_outputs(compiled, out)
    return compiled, CompiledModel(out)


def weight_constants(compiled, ops: tuple = ("conv2d", "conv2d_add", "conv2d_lut", "dense")
                     ) -> list[tuple[str, dict, np.ndarray]]:
    """(op, attributes, weight constant as stored) of each kernel of `ops`, in graph order (a
    conv fused with an add or a table, `conv2d_add`, `conv2d_lut`, is a weighted layer too)."""
    found = []
    for b in bindings(compiled.quantized["main_int"]):
        if op_name(b.value) == "relax.call_tir":
            prim = compiled.quantized[b.value.args[0]]
            kind = str(prim.attrs["qcompiler.op"])
            if kind in ops:
                w = next(a for a in b.value.args[1].fields if is_const(a))
                found.append((kind, json.loads(str(prim.attrs["qcompiler.attrs"])),
                              const_array(w)))
    return found


def kernel_weights(compiled) -> list[np.ndarray]:
    """The int8 weights of each conv2d/dense kernel (read back from its constant: packed for
    the target's dot product, stored as nibbles, maybe), in graph order."""
    return [layer_weights(w, attrs) for _, attrs, w in weight_constants(compiled)]
