"""What a target is: data, not code paths."""
from __future__ import annotations

from dataclasses import dataclass

# The ISA features an `mcpu` level implies (x86-64 psABI levels); `mattr`'s "+x" entries add
# the rest. Only what the schedules ask about (`Target.has`).
MCPU_FEATURES = {
    "x86-64-v3": frozenset({"avx2"}),
    "x86-64-v4": frozenset({"avx2", "avx512f", "avx512bw"}),
}


def isa_features(tvm_target: dict) -> frozenset[str]:
    """The ISA features a TVM target dict enables: its `mcpu` level's and its `mattr` "+x"
    entries (without the "+"), e.g. {"avx2", "avx512f", "avx512bw", "avx512vnni"}."""
    enabled = {a[1:] for a in tvm_target.get("mattr", []) if a.startswith("+")}
    return MCPU_FEATURES.get(tvm_target.get("mcpu", ""), frozenset()) | enabled


@dataclass(frozen=True)
class Target:
    name: str
    tvm_target: dict  # TVM 0.27 takes dicts
    activation_dtype: str  # uint8 where the dot product is u8 x s8 (VNNI, vrmpy), int8 for sdot
    runs_natively: bool
    cc: tuple[str, ...] = ("cc",)  # C compiler command for the standalone library
    run_prefix: tuple[str, ...] = ()  # how to execute a program built for the target here
    install_hint: str = ""  # what to install when the toolchain or emulator is missing

    @property
    def features(self) -> frozenset[str]:
        """The ISA features the target enables (`isa_features`), read from its TVM target
        dict, the one place that says them: a target made by replacing the dict (e.g. an
        AVX2 variant, `dataclasses.replace(t, tvm_target=...)`) has the new dict's."""
        return isa_features(self.tvm_target)

    def has(self, feature: str) -> bool:
        """Whether the target enables an ISA feature, e.g. "avx512vnni", "hvxv68", "dotprod"
        (LLVM's names, as in `mattr`)."""
        return feature in self.features
