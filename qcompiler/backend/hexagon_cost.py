"""A deterministic cost proxy for Hexagon: packets executed under qemu-hexagon, per kernel.

QEMU 7.2 loads TCG plugins; `qcompiler/backend/c/packet_count.c` (built here with the host C
compiler) records every executed translation block and its packet count. Packets are attributed
to the library's functions by address (symbol sizes from `llvm-nm`). This ignores stalls and
memory effects: a ranking signal for schedules and tuning, not cycles.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from qcompiler.errors import TargetError
from qcompiler.targets.hexagon import HEXAGON

PLUGIN_SRC = Path(__file__).parent / "c" / "packet_count.c"


def plugin_path() -> Path:
    """The plugin, built from source on first use (and by `.ci/run`), cached per user."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qcompiler"
    lib = cache / "libpacket_count.so"
    if not lib.exists() or lib.stat().st_mtime < PLUGIN_SRC.stat().st_mtime:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        res = subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(PLUGIN_SRC), "-o", str(tmp)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise TargetError(f"building the packet-count plugin failed: {res.stderr.strip()}")
        os.replace(tmp, lib)
    return lib


def function_ranges(elf: Path) -> dict[str, tuple[int, int]]:
    """name -> [start, end) of every sized function symbol (llvm-nm reads Hexagon ELF)."""
    try:
        res = subprocess.run(["llvm-nm", "--print-size", "--defined-only", str(elf)],
                             capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise TargetError("llvm-nm is missing: apt-get install llvm") from None
    found = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            found.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    # A range runs on to the next symbol: the code after a kernel's body with no symbol of its
    # own is its parallel-loop lambdas (LLVM emits them unnamed), and is the kernel's work.
    found.sort()
    out = {}
    for k, (start, size, name) in enumerate(found):
        nxt = found[k + 1][0] if k + 1 < len(found) else start + size
        out[name] = (start, max(start + size, nxt if nxt > start else start + size))
    return out


def count_packets(folder: Path, q_input: np.ndarray,
                  qemu: tuple[str, ...] = HEXAGON.run_prefix) -> dict[str, int]:
    """Packets per library function for one run of `folder`'s runner on a quantized input;
    key "<total>" sums the library (driver and kernels), excluding libc and the runner.
    `qemu`: another target's emulator (`Target.run_prefix`; on aarch64 the plugin's counts
    are instructions)."""
    runner = folder / "run_model"
    static = json.loads((folder / "model.json").read_text())["standalone"]["static"]
    lib_symbols = set(function_ranges(folder / static))
    ranges = {k: v for k, v in function_ranges(runner).items() if k in lib_symbols}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst, counts = Path(tmp) / "in.bin", Path(tmp) / "out.bin", Path(tmp) / "pc.txt"
        np.ascontiguousarray(q_input).tofile(src)
        cmd = [*qemu, "-plugin", f"{plugin_path()},out={counts}",
               str(runner), str(src), str(dst), "--int"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise TargetError(f"{qemu[0]} run failed: {res.stderr.strip()[-300:]}")
        blocks = [tuple(int(v, 16 if i == 0 else 10) for i, v in enumerate(line.split()))
                  for line in counts.read_text().splitlines()]
    starts = sorted((s, e, name) for name, (s, e) in ranges.items())
    per: dict[str, int] = defaultdict(int)
    for vaddr, n, count in blocks:
        for s, e, name in starts:
            if s <= vaddr < e:
                per[name] += n * count
                break
    per["<total>"] = sum(v for k, v in per.items())
    return dict(per)


def per_kernel(packets: dict[str, int]) -> dict[str, int]:
    """Fold `<kernel>_compute_` bodies and their `__tvm_ffi_<kernel>` wrappers together."""
    out: dict[str, int] = defaultdict(int)
    for name, n in packets.items():
        m = re.fullmatch(r"(?:__tvm_ffi_)?(.+?)(?:_compute_)?", name)
        out[m.group(1) if m else name] += n
    return dict(out)
