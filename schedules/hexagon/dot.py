"""The Hexagon dot-product rule: `vrmpy` (HVX, u8 x s8 -> s32), 32 output channels x 4 bytes,
on uint8 activations, with the requantize epilogue and the packing on HVX vector lanes
(`lanes32`, `hexagon.stages`: the int64 epilogue of the portable kernels is scalar code on
HVX). The intrinsic is ours (`hexagon.vrmpy`, alignment declared), loaded on first use."""
from __future__ import annotations

import tvm
from qcompiler.schedules.dot_product import DotProduct
from qcompiler.schedules.hexagon.output_planes import planes_by_shuffles
from qcompiler.schedules.hexagon.packing import pack_by_shuffles
from qcompiler.schedules.hexagon.stages import schedule_stages
from qcompiler.schedules.lanes32 import vector_epilogue


def vrmpy_intrinsic() -> str:
    """`vrmpy.VRMPY_ALIGNED_INTRIN`, registered on first use."""
    from qcompiler.schedules.hexagon.vrmpy import VRMPY_ALIGNED_INTRIN

    return VRMPY_ALIGNED_INTRIN


# Row packing only where the whole packed input is large: there it is the workspace's
# largest part (PicoDet 800x608: 1.95 MB per 1x1 conv); on small inputs its repacked
# overlapping rows cost packets (the bundled model's convs +10%) and save little memory.
HEXAGON_ROW_PACKING_FROM = 512 * 1024

def _output_planes(sch: tvm.s_tir.Schedule) -> bool:
    """`output_planes` for blocks of 4 columns or more (2 moved by elements cost fewer
    packets here: 917 vs 1,007 for a 64 -> 64 1x1 conv on a 2x2 plane; 4: 2,343 vs 1,880)."""
    return planes_by_shuffles(sch, least=4)


HEXAGON_VRMPY = DotProduct("hexagon_vrmpy", 32, "uint8", vrmpy_intrinsic,
                           epilogue=vector_epilogue, stages=schedule_stages, fuses_tables=True,
                           row_packing=True, row_packing_from=HEXAGON_ROW_PACKING_FROM,
                           packing=pack_by_shuffles, unpacking=_output_planes)
"""Accepts what `DotProduct` does on uint8 activations: conv2d (groups 1) and dense, any batch,
channels, kernel, strides, dilations and padding, 8- or 4-bit weights, any requantize shift
(the 32-bit lane epilogue is exact for all: `fixed_point32`). Only with HVX v68."""
