"""Hexagon v68 with 128-byte HVX: uint8 activations (u8 x s8 `vrmpy`), integer-only kernels.

TVM's `{"kind": "hexagon"}` does not build in 0.27; the `llvm` kind with `mtriple=hexagon`
does and emits HVX. Linked with zig's clang and musl (`hexagon-linux-musl`, static), run here
under `qemu-hexagon` (QEMU 7.2: integer HVX is correct, HVX IEEE float crashes, so kernels stay
integer; the float entry's boundary (de)quantize is scalar code on the core).
"""
from __future__ import annotations

import sys

from qcompiler.targets.target import Target

HEXAGON = Target(
    "hexagon",
    {"kind": "llvm", "mtriple": "hexagon", "mcpu": "hexagonv68",
     "mattr": ["+hvxv68", "+hvx-length128b"]},
    "uint8", runs_natively=False,
    cc=(sys.executable, "-m", "ziglang", "cc", "-target", "hexagon-linux-musl",
        "-mcpu=hexagonv68+hvxv68+hvx_length128b"),
    run_prefix=("qemu-hexagon", "-cpu", "v67"),
    install_hint="pip install ziglang (cross compiler) and apt-get install qemu-user (emulator)",
)
