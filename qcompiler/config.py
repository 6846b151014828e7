"""The compile configuration: typed, frozen, and checked when built."""
from __future__ import annotations

from dataclasses import dataclass

from qcompiler.errors import QCompileError
from qcompiler.observers import OBSERVERS

TARGETS = ("x86", "arm", "hexagon")
WEIGHT_BITS = (4, 8)       # symmetric in [-7, 7] or [-127, 127], stored as int8 either way
ACTIVATION_BITS = (8, 16)  # the target's 8-bit dtype, or int16 (symmetric, zero point 0)


@dataclass(frozen=True)
class CompileConfig:
    """What `qcompile` was asked to do. Bad values are rejected here, naming the field."""

    target: str = "x86"
    observer: str = "percentile"
    percentile: float = 99.99
    per_channel: bool = True
    batch: int | None = None
    calib_limit: int | None = None
    schedules: bool = True  # False: the portable kernels only (for comparisons)
    weight_bits: int = 8
    activation_bits: int = 8
    equalize: bool = False  # cross-layer equalization of conv -> ReLU -> conv weight ranges
    bias_correction: bool = False  # subtract the weight-rounding error's mean from each bias

    def activation_dtype(self, target_dtype: str) -> str:
        """The stored activation dtype: the target's 8-bit one, or int16."""
        return "int16" if self.activation_bits == 16 else target_dtype

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise QCompileError(
                f"unknown target {self.target!r}: choose one of {', '.join(TARGETS)}")
        if self.observer not in OBSERVERS:
            raise QCompileError(
                f"unknown observer {self.observer!r}: choose one of {', '.join(OBSERVERS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise QCompileError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.batch is not None and self.batch < 1:
            raise QCompileError(f"batch must be >= 1, got {self.batch}")
        if self.weight_bits not in WEIGHT_BITS:
            raise QCompileError(f"weight_bits must be one of {', '.join(map(str, WEIGHT_BITS))}"
                                f", got {self.weight_bits}")
        if self.activation_bits not in ACTIVATION_BITS:
            raise QCompileError(f"activation_bits must be one of "
                                f"{', '.join(map(str, ACTIVATION_BITS))}, got "
                                f"{self.activation_bits}")
        if self.calib_limit is not None and self.calib_limit < 1:
            raise QCompileError(f"calib_limit must be >= 1, got {self.calib_limit}")
