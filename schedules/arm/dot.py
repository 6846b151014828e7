"""The ARM dot-product rule: `sdot` (the dot-product extension, s8 x s8 -> s32), 4 output
channels x 4 bytes, on int8 activations (`targets.arm`), through TVM's own tensor intrinsic.
Packing, schedule and epilogue are the shared ones (`schedules.dot_product`)."""
from __future__ import annotations

from qcompiler.schedules.dot_product import DotProduct
from qcompiler.schedules.intrinsics import load_intrinsics


def sdot_intrinsic() -> str:
    """TVM's `ARM_DOT_4x4_i8_SDOT_INTRIN`, registered on first use (0.5 s to load)."""
    return load_intrinsics("arm_cpu").ARM_DOT_4x4_i8_SDOT_INTRIN


ARM_SDOT = DotProduct("arm_sdot", 4, "int8", sdot_intrinsic, fuses_tables=True)
"""Accepts what `DotProduct` does on int8 activations: conv2d (groups 1) and dense, any batch,
channels, kernel, strides, dilations and padding, 8- or 4-bit weights. Depthwise and grouped
convs, pools, adds and int16 activations keep the portable kernels on arm."""
