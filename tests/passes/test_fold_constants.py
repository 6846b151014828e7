"""fold_constants: constant-only subgraphs become constants; anything fed by an input stays."""
from __future__ import annotations

import numpy as np
import tvm
from qcompiler.passes.fold_constants import fold_constants
from tvm import relax

from qcompiler.relax_access import bindings, const_array, is_const, op_name


def _module(reshape_input: bool):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 2, 2), "float32"))
    b = relax.const(np.arange(4, dtype=np.float32))
    with bb.function("main", [x]):
        with bb.dataflow():
            src = x if reshape_input else b
            r = bb.emit(relax.op.reshape(src, (1, 4, 1, 1) if not reshape_input else (1, 16)))
            out = bb.emit_output(relax.op.add(x, r) if not reshape_input else r)
        bb.emit_func_output(out)
    return bb.get()


def test_reshape_of_constant_is_folded():
    after = fold_constants()(_module(reshape_input=False))
    relax.analysis.well_formed(after)  # raises on the first violation
    values = [b.value for b in bindings(after["main"])]
    assert [op_name(v) for v in values] == ["relax.add"]
    folded = values[0].args[1]
    assert is_const(folded)
    np.testing.assert_array_equal(const_array(folded),
                                  np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1))


def test_near_miss_reshape_of_input_stays():
    before = _module(reshape_input=True)
    tvm.ir.assert_structural_equal(fold_constants()(before), before)
