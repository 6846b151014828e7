"""x86-64: AVX-512 VNNI (`vpdpbusd`, u8 x s8 -> s32) where the CPU has it, else AVX2."""
from __future__ import annotations

from pathlib import Path

from qcompiler.targets.target import Target


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def x86_target() -> Target:
    mcpu = "znver4" if "avx512_vnni" in _cpu_flags() else "x86-64-v3"
    return Target("x86", {"kind": "llvm", "mcpu": mcpu}, "uint8", runs_natively=True)


X86 = x86_target()
