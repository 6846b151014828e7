"""The compile configuration: typed, frozen, and checked when built."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from qcompiler.errors import QCompileError
from qcompiler.numerics.observers import OBSERVERS

TARGETS = ("x86", "arm", "hexagon")
WEIGHT_BITS = (4, 8)       # symmetric in [-7, 7] (two per byte) or [-127, 127] (int8)
ACTIVATION_BITS = (8, 16)  # the target's 8-bit dtype, or int16 (symmetric, zero point 0)
ADAROUND_ITERS = 1000  # `--adaround` without a count (qcompiler.numerics.adaround)


@dataclass(frozen=True)
class CompileConfig:
    """What `qcompile` was asked to do. Bad values are rejected here, naming the field."""

    target: str = "x86"
    observer: str = "percentile"
    percentile: float = 99.99
    per_channel: bool = True
    batch: int | None = None
    # Static shapes for inputs with symbolic dims, by input name (`--input-shape NAME:1x3x64x64`)
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    calib_limit: int | None = None
    schedules: bool = True  # False: the portable kernels only (for comparisons)
    # Activations blocked by 16 channels between layers where the target has blocked kernels
    # (passes.plan_layout; x86 VNNI). False: NCHW everywhere (for comparisons).
    blocked_layout: bool = True
    weight_bits: int = 8
    activation_bits: int = 8
    equalize: bool = False  # cross-layer equalization of conv -> ReLU -> conv weight ranges
    bias_correction: bool = False  # subtract the weight-rounding error's mean from each bias
    # AdaRound: iterations of learned weight rounding per conv/dense layer (0: round to nearest)
    adaround: int = 0
    # Per-layer weight bits, overriding weight_bits: layer name (a binding such as "lv3") or
    # index in the summary ("#12", since names can repeat) -> 4 or 8.
    layer_weight_bits: dict[str, int] = field(default_factory=dict)
    # Mixed precision: the fraction of conv/dense weight elements kept at 8 bits; the least
    # sensitive layers (measured on the calibration data) take 4 bits (qcompiler.numerics.mixed_precision).
    mixed_precision: float | None = None
    # Autotuning (qcompiler.tuning.tune): trials per kernel (0: none), the database folder (records
    # are reused whenever it is given, tuning or not), and TVM's RPC tracker "host:port:key".
    tune_trials: int = 0
    tune_minutes: float | None = None  # a time budget for all the tuning (tune_trials still caps)
    tuning_db: str | None = None
    rpc_tracker: str | None = None
    # The C library's name (NAME.h, libNAME.a, NAME_run); None: the model file's stem.
    name: str | None = None

    def tuning_root(self) -> str | None:
        """The tuning database folder: the one given, else the per-user cache when tuning."""
        if self.tuning_db is not None:
            return self.tuning_db
        if not self.tune_trials:
            return None
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(cache, "qcompiler", "tuning")

    def activation_dtype(self, target_dtype: str) -> str:
        """The stored activation dtype: the target's 8-bit one, or int16."""
        return "int16" if self.activation_bits == 16 else target_dtype

    def __post_init__(self) -> None:
        if self.name is not None:
            from qcompiler.backend.c_name import check_name

            check_name(self.name)
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
        for name, shape in self.input_shapes.items():
            if not isinstance(name, str) or not name:
                raise QCompileError(f"input_shapes: bad input name {name!r}")
            if not isinstance(shape, (tuple, list)) or not shape or any(
                    isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in shape):
                raise QCompileError(f"input_shapes[{name!r}] = {shape!r}: give positive whole "
                                    "dims, e.g. (1, 3, 224, 224)")
        if self.weight_bits not in WEIGHT_BITS:
            raise QCompileError(f"weight_bits must be one of {', '.join(map(str, WEIGHT_BITS))}"
                                f", got {self.weight_bits}")
        if self.activation_bits not in ACTIVATION_BITS:
            raise QCompileError(f"activation_bits must be one of "
                                f"{', '.join(map(str, ACTIVATION_BITS))}, got "
                                f"{self.activation_bits}")
        for key, bits in self.layer_weight_bits.items():
            if not isinstance(key, str) or not key or (key[0] == "#" and
                                                       not re.fullmatch(r"#\d+", key)):
                raise QCompileError(f"layer_weight_bits: bad layer {key!r}: give a layer name "
                                    "such as 'lv3' or an index such as '#12'")
            if bits not in WEIGHT_BITS or isinstance(bits, bool):
                raise QCompileError(f"layer_weight_bits[{key!r}] must be one of "
                                    f"{', '.join(map(str, WEIGHT_BITS))}, got {bits!r}")
        if self.mixed_precision is not None and not 0.0 <= self.mixed_precision <= 1.0:
            raise QCompileError(f"mixed_precision must be in [0, 1] (the fraction of conv/dense "
                                f"weights kept at 8 bits), got {self.mixed_precision}")
        if self.mixed_precision is not None and (self.layer_weight_bits or self.weight_bits != 8):
            raise QCompileError("mixed_precision chooses 4 or 8 bits per layer itself: leave "
                                "weight_bits at 8 and give no layer_weight_bits")
        if self.tune_trials < 0:
            raise QCompileError(f"tune_trials must be >= 0, got {self.tune_trials}")
        if self.tune_minutes is not None and not (
                isinstance(self.tune_minutes, (int, float)) and self.tune_minutes > 0):
            raise QCompileError(f"tune_minutes must be a number of minutes > 0, got "
                                f"{self.tune_minutes!r}")
        if self.tune_minutes is not None and not self.tune_trials:
            raise QCompileError("tune_minutes is a time budget for tuning: give tune_trials "
                                "too (the most trials per kernel)")
        if self.rpc_tracker is not None and not re.fullmatch(r"[^:\s]+:\d+:\S+",
                                                             self.rpc_tracker):
            raise QCompileError(f"rpc_tracker {self.rpc_tracker!r}: give HOST:PORT:KEY, e.g. "
                                "127.0.0.1:9190:qcompiler")
        if self.rpc_tracker is not None and self.target != "x86":
            raise QCompileError(f"rpc_tracker: {self.target} is measured by counting "
                                "instructions under qemu here; the tracker times x86 hosts")
        if self.rpc_tracker is not None and not self.tune_trials:
            raise QCompileError("rpc_tracker is where tuning runs: give tune_trials too")
        if isinstance(self.adaround, bool) or not isinstance(self.adaround, int) or \
                self.adaround < 0:
            raise QCompileError(f"adaround must be a whole number of iterations >= 0 (0: off), "
                                f"got {self.adaround!r}")
        if self.calib_limit is not None and self.calib_limit < 1:
            raise QCompileError(f"calib_limit must be >= 1, got {self.calib_limit}")
