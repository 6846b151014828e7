"""One kernel built for an emulated target and run once under qemu (tuning's builder and
counting runner): its output, checked against the reference's, and its packets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm


def run_under_qemu(func: tvm.tirx.PrimFunc, args: list[np.ndarray], want: np.ndarray,
                   folder: Path, target_name: str = "hexagon") -> int:
    """`func(*args)` under qemu equals `want` bit for bit; the packets (Hexagon) or
    instructions (AArch64) it executed."""
    from qcompiler.targets import get_target

    from qcompiler.tuning.runners import COUNT_SECONDS, CountingRunner, KernelBuilder

    spec = get_target(target_name)
    target = tvm.target.Target(spec.tvm_target)
    (built,) = KernelBuilder(target, folder, spec.cc).build(
        [tvm.s_tir.meta_schedule.builder.BuilderInput(tvm.IRModule({"main": func}), target)])
    assert built.error_msg is None, built.error_msg
    got, secs = CountingRunner(spec.run_prefix).measure(Path(built.artifact_path), args, want)
    np.testing.assert_array_equal(got, want)
    return round(secs / COUNT_SECONDS)
