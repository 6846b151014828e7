"""Targets as data: the TVM target, the activation dtype, the toolchain, and how to run."""
from __future__ import annotations

from qcompiler.errors import TargetError
from qcompiler.targets.arm import ARM
from qcompiler.targets.target import Target
from qcompiler.targets.x86 import x86_target

TARGET_NAMES = ("x86", "arm")


def get_target(name: str) -> Target:
    if name == "x86":
        return x86_target()
    if name == "arm":
        return ARM
    raise TargetError(f"unknown target {name!r}: choose one of {', '.join(TARGET_NAMES)}")
