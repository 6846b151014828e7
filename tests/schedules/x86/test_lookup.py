"""Table lookups on AVX-512 VBMI (`schedules.x86.lookup`): every index of every 8-bit dtype
pair through the two `vpermi2b` halves, on tensors whose size leaves a tail, has no whole
64-byte run, or is blocked; the rule takes only the tables it can do."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tvm
from conftest import AVX2_TARGET, VNNI_TARGET, requires_cpu_for, vnni_target
from qcompiler.schedules import rules_for
from qcompiler.schedules.x86.lookup import X86_VBMI_LOOKUP, lookup

from qcompiler import kernels

SHAPES = [(1, 6, 12, 12, 16), (2, 3, 5, 7), (1, 1, 4, 4), (1, 96, 8, 8)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("x_dtype, out_dtype", [("uint8", "uint8"), ("int8", "uint8"),
                                                ("uint8", "int8"), ("int8", "int8")])
def test_lookup_equals_the_table(shape, x_dtype, out_dtype, rng):
    lo, hi = np.iinfo(x_dtype).min, np.iinfo(x_dtype).max
    x = rng.integers(lo, hi + 1, shape).astype(x_dtype)
    x.reshape(-1)[:256] = np.arange(lo, hi + 1)[:x.size]  # every index where the size allows
    olo, ohi = np.iinfo(out_dtype).min, np.iinfo(out_dtype).max
    table = rng.integers(olo, ohi + 1, (1, 256)).astype(out_dtype)
    lib = tvm.tirx.build(tvm.IRModule({"main": lookup(shape, x_dtype, out_dtype)}),
                         tvm.target.Target(VNNI_TARGET))
    requires_cpu_for(VNNI_TARGET)
    y = tvm.runtime.tensor(np.zeros(shape, out_dtype))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(table), y)
    np.testing.assert_array_equal(y.numpy(), table[0][x.astype(np.int64) - lo])


def test_rule_takes_one_row_of_a_byte_table_only():
    """Per-channel tables, 16-bit inputs and 16-bit outputs keep the scalar kernel."""
    def portable(shape, x_dtype, rows, out_dtype):
        return kernels.lut(shape, x_dtype, (rows, 256 if x_dtype.endswith("8") else 65536),
                           {"axis": 1, "out_dtype": out_dtype})

    taken = X86_VBMI_LOOKUP.rebuild(portable((1, 8, 4, 4), "uint8", 1, "int8"), [])
    assert taken is not None and str(taken.attrs["qcompiler.schedule"]) == "x86_vbmi_lookup"
    for args in [((1, 8, 4, 4), "uint8", 8, "uint8"), ((1, 8, 4, 4), "int16", 1, "int16"),
                 ((1, 8, 4, 4), "uint8", 1, "int16")]:
        assert X86_VBMI_LOOKUP.rebuild(portable(*args), []) is None, args


def test_only_targets_with_vbmi_get_the_rule():
    vbmi = vnni_target()
    avx2 = dataclasses.replace(vbmi, tvm_target=AVX2_TARGET)
    no_vbmi = dataclasses.replace(vbmi, tvm_target={**VNNI_TARGET, "mattr": ["+avx512vnni"]})
    assert X86_VBMI_LOOKUP in rules_for(vbmi)
    assert X86_VBMI_LOOKUP not in rules_for(avx2) and X86_VBMI_LOOKUP not in rules_for(no_vbmi)


@pytest.mark.parametrize("x_dtype, out_dtype, m0, shift, zp_x, zp_y", [
    ("uint8", "uint8", 1518500250, -1, 131, 7),  # a concat input's change of scale
    ("uint8", "uint8", 2147483647, 0, 0, 0),  # near 1: every value kept
    ("int8", "uint8", 1073741824, 1, -3, 128),  # a left shift, saturating
    ("uint8", "int8", 1900000000, -1, 128, 3),
])
def test_requantize_table_equals_the_requantize_kernel(x_dtype, out_dtype, m0, shift, zp_x,
                                                       zp_y):
    """`numerics.lut.requantize_table` (what `plan_layout` looks up with VBMI instead of a
    requantize kernel) holds the reference requantize of every input byte."""
    from qcompiler.numerics.lut import requantize_table
    from qcompiler.reference import requantize

    lo, hi = np.iinfo(out_dtype).min, np.iinfo(out_dtype).max
    attrs = {"zp_x": zp_x, "zp_y": zp_y, "m0": m0, "shift": shift, "lo": lo, "hi": hi,
             "out_dtype": out_dtype}
    x = np.arange(np.iinfo(x_dtype).min, np.iinfo(x_dtype).max + 1).astype(x_dtype)
    table = requantize_table({**attrs, "fn": "requantize", "x_dtype": x_dtype})
    assert table.shape == (1, 256) and table.dtype == np.dtype(out_dtype)
    want = requantize(x.reshape(1, 1, 16, 16), attrs).reshape(-1)
    np.testing.assert_array_equal(table[0], want)
    assert len(np.unique(want)) > 50
