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

import tvm

PACKAGE = "tvm.s_tir.tensor_intrin"


def stub_package() -> None:
    """Make `tvm.s_tir.tensor_intrin` an empty package unless it is imported already: its
    `__init__` parses every intrinsic TVM has, CUDA's included (27 s), and MetaSchedule's
    `TuneContext` imports it; our schedules need only the modules `load_intrinsics` takes."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        stub = types.ModuleType(PACKAGE)
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__package__ = PACKAGE
        sys.modules[PACKAGE] = stub


def load_intrinsics(module: str) -> types.ModuleType:
    """Import `tvm.s_tir.tensor_intrin.<module>` alone (e.g. "arm_cpu", "x86", "hexagon")."""
    name = f"{PACKAGE}.{module}"
    if name in sys.modules:
        return sys.modules[name]
    stub_package()
    return importlib.import_module(name)


# Every tensor intrinsic a schedule of ours can name, by name prefix: the module that
# registers it. A module that registers its intrinsics on import needs nothing more; one whose
# intrinsics are made from parameters (`x86.requantize`, `x86.vnni`'s windows) also has
# `register_named(name)`, which parses them back from the name (the name is their one
# description). TVM's own intrinsics (an older record may name its `sdot`) are registered by
# importing `TVM_MODULES`.
OURS = {
    "qcompiler_requantize_": "qcompiler.schedules.x86.requantize",
    "qcompiler_dot_16x4_u8i8i32_vnni": "qcompiler.schedules.x86.vnni",
    "qcompiler_dot_8x2_i16i8i32_avx2": "qcompiler.schedules.x86.avx2",
    "qcompiler_window_": "qcompiler.schedules.x86.vnni",
    "qcompiler_taps_": "qcompiler.schedules.x86.vnni",
    "qcompiler_dot_32x4_u8i8i32_vrmpy": "qcompiler.schedules.hexagon.vrmpy",
    "qcompiler_dot_4x4_i8i8i32_sdot": "qcompiler.schedules.arm.sdot",
    "qcompiler_deinterleave_": "qcompiler.schedules.x86.depthwise",
}
TVM_MODULES = {"arm": ("arm_cpu",), "hexagon": ("hexagon",), "x86": ("x86",)}  # per target


def _registered(name: str) -> bool:
    from tvm.s_tir import TensorIntrin

    return TensorIntrin.get(name, allow_missing=True) is not None


def register_named(name: str, target: str) -> bool:
    """Register the tensor intrinsic `name` (as a tuning record names it) if it is ours or
    TVM's for `target` ("x86", "arm", "hexagon"); whether it is registered now. Deterministic:
    the same name always gives the same intrinsic, in any process."""
    if _registered(name):
        return True
    for prefix, module in OURS.items():
        if name.startswith(prefix):
            mod = importlib.import_module(module)
            if not _registered(name) and hasattr(mod, "register_named"):
                mod.register_named(name)
            return _registered(name)
    for module in TVM_MODULES.get(target, ()):
        load_intrinsics(module)
    return _registered(name)


def lane_dot_description(lanes: int, depth: int, a_dtype: str,
                         offset_factors: tuple[int, int, int] = (1, 1, 1)) -> tvm.tirx.PrimFunc:
    """The description every dot-product instruction's tensor intrinsic shares:
    `C[i] += sum_k A[k] * B[i, k]` (i < lanes, k < depth), A broadcast over the lanes, B int8,
    C int32; `offset_factors` of A, B and C (the alignment the implementation may assume)."""
    from tvm.script import tirx as T

    fa, fb, fc = offset_factors

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((depth,), a_dtype, offset_factor=fa),
             B: T.Buffer((lanes, depth), "int8", offset_factor=fb),
             C: T.Buffer((lanes,), "int32", offset_factor=fc)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:depth], B[0:lanes, 0:depth])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, depth):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc
