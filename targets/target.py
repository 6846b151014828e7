"""What a target is: data, not code paths."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    tvm_target: dict  # TVM 0.27 takes dicts
    activation_dtype: str  # uint8 where the dot product is u8 x s8 (VNNI, vrmpy), int8 for sdot
    runs_natively: bool
    cc: tuple[str, ...] = ("cc",)  # C compiler command for the standalone library
    run_prefix: tuple[str, ...] = ()  # how to execute a program built for the target here
    install_hint: str = ""  # what to install when the toolchain or emulator is missing
