"""The ARM dot-product rule: `sdot` (the dot-product extension, s8 x s8 -> s32), 4 output
channels x 4 bytes, on int8 activations (`targets.arm`); the intrinsic is ours (`arm.sdot`).
Packing and schedule are the shared ones (`schedules.dot_product`), the requantize epilogue
in int32 lanes (`lanes32`: NEON has two int64 lanes per vector)."""
from __future__ import annotations

import tvm
from qcompiler.schedules.dot_product import DotProduct
from qcompiler.schedules.lanes32 import vector_epilogue, vectorize_epilogue


def sdot_intrinsic() -> str:
    """`sdot.SDOT_INTRIN`, registered on first use."""
    from qcompiler.schedules.arm.sdot import SDOT_INTRIN

    return SDOT_INTRIN


def sdot_columns_intrinsic() -> tuple[str, int]:
    """`sdot.SDOT_COLUMNS_INTRIN` and its columns, registered on first use."""
    from qcompiler.schedules.arm.sdot import COLUMNS, SDOT_COLUMNS_INTRIN

    return SDOT_COLUMNS_INTRIN, COLUMNS


def _stages(sch: tvm.s_tir.Schedule, lanes: int) -> None:
    vectorize_epilogue(sch, 4 * lanes)  # (a dense layer's channels: 4 NEON vectors at a time)


ARM_SDOT = DotProduct("arm_sdot", 4, "int8", sdot_intrinsic, epilogue=vector_epilogue,
                      stages=_stages, fuses_tables=True,
                      columns_intrinsic=sdot_columns_intrinsic)
"""Accepts what `DotProduct` does on int8 activations: conv2d (groups 1) and dense, any batch,
channels, kernel, strides, dilations and padding, 8- or 4-bit weights. Depthwise convs run
the portable computation one channel at a time (`channel_local`); grouped convs, pools, adds
and int16 activations keep the portable kernels on arm."""
