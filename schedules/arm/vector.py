"""NEON vector kernels for the elementwise integer ops: HVX's (`hexagon.vector`), which are
target-neutral TIR with the requantizing multiply in 32-bit lanes and the lanes in chunks of
128 bytes (8 NEON registers a step); the portable kernels' int64 multiply is two lanes per
NEON vector. The bundled model's residual add: 76,565 -> 36,920 instructions under qemu."""
from __future__ import annotations

import functools

from qcompiler.schedules.hexagon.vector import add, mul, requantize
from qcompiler.schedules.vector_rule import VectorRule

NEON_VECTOR = VectorRule("neon_vector", {"add": add, "requantize": requantize,
                                         "mul": functools.partial(mul, min_bytes=1)})
"""Accepts what `hexagon.vector.HVX_VECTOR` does for add and requantize, and mul of any
lanes' run (mobilenet_v3_small's SE gates, down to 2x2 planes: 1.7-2.3x fewer instructions
than the portable kernel); not the pools and depthwise convs (NCHW rows are too short for
4-lane vectors to pay)."""
