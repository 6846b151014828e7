"""Signal-to-quantization-noise ratio, the one measure every quantization choice is made by."""
from __future__ import annotations

import math


def sqnr_db(signal: float, noise: float) -> float:
    """`10 log10(signal / noise)` dB of summed squares; inf for no noise, -inf for no signal."""
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10.0 * math.log10(signal / noise)
