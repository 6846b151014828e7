"""AArch64 with the dot-product extension (`sdot`, s8 x s8 -> s32): int8 activations.

Cross-compiled with zig's clang and musl (PyPI `ziglang`), run here under `qemu-aarch64`.
"""
from __future__ import annotations

import sys

from qcompiler.targets.target import Target

ARM = Target(
    "arm",
    {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod", "+i8mm"]},
    "int8", runs_natively=False,
    cc=(sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-musl"),
    run_prefix=("qemu-aarch64", "-cpu", "max"),
    install_hint="pip install ziglang (cross compiler) and apt-get install qemu-user (emulator)",
)
