"""The ARM dot-product rule: `sdot` (the dot-product extension, s8 x s8 -> s32), 4 output
channels x 4 bytes, on int8 activations (`targets.arm`); the intrinsic is ours (`arm.sdot`).
Packing, schedule and epilogue are the shared ones (`schedules.dot_product`)."""
from __future__ import annotations

from qcompiler.schedules.dot_product import DotProduct


def sdot_intrinsic() -> str:
    """`sdot.SDOT_INTRIN`, registered on first use."""
    from qcompiler.schedules.arm.sdot import SDOT_INTRIN

    return SDOT_INTRIN


ARM_SDOT = DotProduct("arm_sdot", 4, "int8", sdot_intrinsic, fuses_tables=True)
"""Accepts what `DotProduct` does on int8 activations: conv2d (groups 1) and dense, any batch,
channels, kernel, strides, dilations and padding, 8- or 4-bit weights. Depthwise convs run
the portable computation one channel at a time (`channel_local`); grouped convs, pools, adds
and int16 activations keep the portable kernels on arm."""
