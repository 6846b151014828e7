"""The x86 dot-product rules: `vpdpbusd` (AVX-512 VNNI, u8 x s8 -> s32), 16 output channels x
4 bytes, and without VNNI `vpmaddwd` (AVX2, s16 x s16 -> s32), 8 output channels x 2 values
widened to 16 bits, both on uint8 activations. Packing, schedule and epilogue are the shared
ones (`schedules.dot_product`); the intrinsics are ours (`x86.vnni`, `x86.avx2`), loaded on
first use."""
from __future__ import annotations

from qcompiler.schedules.dot_product import DotProduct
from qcompiler.schedules.x86.epilogue import dot_product_epilogue, schedule_dot_product_epilogue


def vpdpbusd_intrinsic() -> str:
    """`vnni.VNNI_DOT_16x4_INTRIN`, registered on first use (importing `vnni` registers all
    of its intrinsics, which takes a second)."""
    from qcompiler.schedules.x86.vnni import VNNI_DOT_16x4_INTRIN

    return VNNI_DOT_16x4_INTRIN


X86_VNNI = DotProduct("x86_vnni", 16, "uint8", vpdpbusd_intrinsic)
"""Accepts what `DotProduct` does on uint8 activations: conv2d (groups 1) and dense, any batch,
channels, kernel, strides, dilations and padding, 8- or 4-bit weights; NCHW (the blocked
conv is `x86.blocked.BLOCKED_VNNI`). Only with AVX-512 VNNI (`schedules.rules_for`)."""


def vpmaddwd_intrinsic() -> str:
    """`avx2.AVX2_DOT_8x2_INTRIN`, registered on first use."""
    from qcompiler.schedules.x86.avx2 import AVX2_DOT_8x2_INTRIN

    return AVX2_DOT_8x2_INTRIN


# 16 ymm registers: 12 accumulators, the weights, the activation pair and the product.
# The epilogue's int32 `acc + bias` stage lets LLVM multiply with `vpmuldq` (`x86.epilogue`).
X86_AVX2 = DotProduct("x86_avx2", 8, "uint8", vpmaddwd_intrinsic, depth=2,
                      packed_dtype="int16", columns=12, epilogue=dot_product_epilogue,
                      stages=schedule_dot_product_epilogue, row_packing=True,
                      fuses_tables=True)
"""Accepts what `DotProduct` does on uint8 activations (as `X86_VNNI`), on any x86-64-v3 CPU:
the activations packed as int16 pairs, so every pair sum is exact."""
