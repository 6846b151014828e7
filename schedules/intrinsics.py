"""Load TVM's tensor intrinsics for one target without the package's ~30 s import.

`tvm.s_tir.tensor_intrin/__init__.py` builds every target's intrinsics (CUDA included) on
import. We register an empty package in its place and import just the module we need
(0.5 s); its relative imports still resolve inside the real package folder.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

PACKAGE = "tvm.s_tir.tensor_intrin"


def load_intrinsics(module: str) -> types.ModuleType:
    """Import `tvm.s_tir.tensor_intrin.<module>` alone (e.g. "arm_cpu", "x86", "hexagon")."""
    name = f"{PACKAGE}.{module}"
    if name in sys.modules:
        return sys.modules[name]
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        stub = types.ModuleType(PACKAGE)
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__package__ = PACKAGE
        sys.modules[PACKAGE] = stub
    return importlib.import_module(name)
