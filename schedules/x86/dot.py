"""The x86 dot-product rule: `vpdpbusd` (AVX-512 VNNI, u8 x s8 -> s32), 16 output channels x
4 bytes, on uint8 activations. Packing, schedule and epilogue are the shared ones
(`schedules.dot_product`); the intrinsic is ours (`x86.vnni`), loaded on first use."""
from __future__ import annotations

from qcompiler.schedules.dot_product import DotProduct


def vpdpbusd_intrinsic() -> str:
    """`vnni.VNNI_DOT_16x4_INTRIN`, registered on first use (importing `vnni` registers all
    of its intrinsics, which takes a second)."""
    from qcompiler.schedules.x86.vnni import VNNI_DOT_16x4_INTRIN

    return VNNI_DOT_16x4_INTRIN


X86_VNNI = DotProduct("x86_vnni", 16, "uint8", vpdpbusd_intrinsic)
"""Accepts what `DotProduct` does on uint8 activations: conv2d (groups 1) and dense, any batch,
channels, kernel, strides, dilations and padding, 8- or 4-bit weights; NCHW (the blocked
conv is `x86.blocked.BLOCKED_VNNI`). Only with AVX-512 VNNI (`schedules.rules_for`)."""
