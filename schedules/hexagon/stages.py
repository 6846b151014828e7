"""The stages around a dot-product kernel's inner product, on HVX vector lanes: the requantize
epilogue in 32-bit lanes (`lanes32`; the int64 formula of `kernels._requantize_channels` is
scalar code on HVX) and a dense layer's packing copy in whole vectors."""
from __future__ import annotations

import tvm
from qcompiler.schedules.hexagon.loops import VECTOR_BYTES, row_chunk, vectorize_loop
from qcompiler.schedules.lanes32 import vectorize_epilogue


def schedule_stages(sch: tvm.s_tir.Schedule, lanes: int) -> None:
    """After `schedule_acc`: the stages around the dot product, for HVX."""
    _vectorize_epilogue(sch, lanes)
    pack = sch.get_sblock("x_packed")
    if len(sch.get(pack).iter_vars) == 3:  # dense: a copy (a plain one when K % 4 == 0)
        # A row at a time: with the batch fused in, the row index is a division per lane
        # (a gather), which TVM's HVX codegen turns into a table lookup on the whole input
        # that LLVM rejects when the input is not a whole number of vectors.
        vectorize_loop(sch, sch.fuse(*sch.get_loops(pack)[1:]), VECTOR_BYTES)


def _vectorize_epilogue(sch: tvm.s_tir.Schedule, lanes: int) -> None:
    """`lanes32.vectorize_epilogue`, a dense layer's channels a whole or half HVX vector at a
    time where they fill one."""
    block = sch.get_sblock("requantize")
    dense = len(sch.get(block).iter_vars) != 5
    cout = int(sch.get(block).iter_vars[1].dom.extent) if dense else lanes
    vectorize_epilogue(sch, row_chunk(cout, lanes))
