"""Targets as data: the TVM target (and the ISA features it enables, `Target.has`), the
activation dtype, the toolchain, and how to run."""
from __future__ import annotations

from qcompiler.errors import TargetError
from qcompiler.targets.arm import ARM
from qcompiler.targets.hexagon import HEXAGON
from qcompiler.targets.target import Target
from qcompiler.targets.x86 import x86_target

TARGET_NAMES = ("x86", "arm", "hexagon")


def check_toolchain(target: Target) -> None:
    """Fail before compiling if the target's C compiler or emulator is missing here."""
    import importlib.util
    import shutil

    cc = target.cc
    if "ziglang" in cc and importlib.util.find_spec("ziglang") is None:
        raise TargetError(f"the {target.name} cross compiler (zig) is missing: "
                          f"{target.install_hint}")
    if "ziglang" not in cc and shutil.which(cc[0]) is None:
        raise TargetError(f"the C compiler {cc[0]!r} is missing: {target.install_hint}")
    if target.run_prefix and shutil.which(target.run_prefix[0]) is None:
        raise TargetError(f"{target.run_prefix[0]} is missing (it runs {target.name} programs "
                          f"here): {target.install_hint}")


def get_target(name: str) -> Target:
    if name == "x86":
        return x86_target()
    if name == "arm":
        return ARM
    if name == "hexagon":
        return HEXAGON
    raise TargetError(f"unknown target {name!r}: choose one of {', '.join(TARGET_NAMES)}")
