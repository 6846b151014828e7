"""Targets as data: the TVM target, the activation dtype, and how to run what we build."""
from __future__ import annotations

from qcompiler.targets.x86 import X86  # noqa: F401  (re-exported through qcompiler.targets)
