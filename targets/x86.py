"""x86-64: AVX-512 VNNI (`vpdpbusd`, u8 x s8 -> s32) where the CPU has it, else AVX2."""
from __future__ import annotations

from pathlib import Path

from qcompiler.targets.target import Target


def cpu_flags() -> set[str]:
    """This CPU's flags as /proc/cpuinfo lists them (e.g. "avx512_vnni"; empty where there
    is none): what the machine can run, not what a target enables (`Target.has`)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def x86_target() -> Target:
    """x86-64-v4 + VNNI: portable to every AVX-512 VNNI CPU, Intel or AMD.

    `znver4` is not: LLVM may emit AMD-only instructions for it (seen here as SIGILL on an
    Intel Xeon with AVX-512 VNNI), so the shipped library names the ISA level, not a core.
    VBMI (`vpermb`, Ice Lake and later, Zen 4) is added where the CPU has it: the depthwise
    kernels use it (`blocked.depthwise`).
    """
    flags = cpu_flags()
    if "avx512_vnni" in flags:
        mattr = ["+avx512vnni"] + (["+avx512vbmi"] if "avx512vbmi" in flags else [])
        return Target("x86", {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": mattr},
                      "uint8", runs_natively=True, install_hint="apt-get install gcc")
    return Target("x86", {"kind": "llvm", "mcpu": "x86-64-v3"}, "uint8", runs_natively=True,
                  install_hint="apt-get install gcc")


