"""The tuning database: MetaSchedule's JSON database files, read one record at a time.

One folder per target (its kind and ISA, `database_dir`) holds `workloads.json` and
`records.json` in the format of MetaSchedule's `JSONDatabase` (one JSON value per line; a
record is `[workload line, record]`), so either can read what the other wrote. We read them
ourselves because parsing a record replays its trace, and `JSONDatabase` aborts on the first
that does not replay: here

- every tensor intrinsic a trace names is registered first, from its name
  (`schedules.intrinsics.register_named`), so records replay in any process;
- a record that no longer parses or replays (a changed workload, an intrinsic we no longer
  have, another TVM version) is skipped and counted (`skipped`), never fatal;
- a file that is not JSON lines of that shape is a one-line error naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from qcompiler.errors import QCompileError
from qcompiler.schedules.intrinsics import register_named
from qcompiler.targets.target import Target

FILES = ("workloads.json", "records.json")
_FOLDER_RE = re.compile(r"(x86|arm|hexagon)-[0-9a-f]{10}")


def database_dir(root: Path, target: Target) -> Path:
    """One database per target kind and ISA (a record for AVX-512 is not one for AVX2)."""
    key = hashlib.sha1(json.dumps(target.tvm_target, sort_keys=True).encode()).hexdigest()[:10]
    return Path(root) / f"{target.name}-{key}"


def check_root(root: Path, write: bool = True) -> None:
    """A one-line error unless `root` is (or can become) a database root: a folder, writable
    when `write`, and not itself one target's folder (`database_dir`)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise QCompileError(f"tuning database {root}: a file, not a folder")
    if _FOLDER_RE.fullmatch(root.name) or any((root / f).exists() for f in FILES):
        raise QCompileError(f"tuning database {root}: this is one target's folder inside a "
                            f"database; give the folder that holds it ({root.parent})")
    existing = root
    while not existing.exists():
        existing = existing.parent
    if write and not os.access(existing, os.W_OK | os.X_OK):
        raise QCompileError(f"tuning database {root}: {existing} is not writable")


def _tensorized(trace_json: list) -> list[str]:
    """The intrinsic names of a trace's `Tensorize` instructions (JSON: [kind, inputs,
    [intrin, preserve_unit_loops], outputs])."""
    insts = trace_json[0] if trace_json and isinstance(trace_json[0], list) else []
    return [str(i[2][0]) for i in insts if isinstance(i, list) and len(i) > 2 and
            i[0] == "Tensorize" and isinstance(i[2], list) and i[2]]


def _lines(path: Path) -> list:
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise QCompileError(f"tuning database {path}: cannot be read ({exc})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise QCompileError(f"tuning database {path}: line {n} is not JSON (a corrupt "
                                "file: delete it, or the line)") from None
    return out


class TuningDatabase:
    """The records of one target's folder: queried by workload, committed by appending."""

    def __init__(self, folder: Path, target: Target) -> None:
        self.folder, self.target = Path(folder), target
        self.workloads_path, self.records_path = (self.folder / f for f in FILES)
        self.skipped: list[str] = []  # one reason per record that did not replay
        self.memory = ms.database.MemoryDatabase()
        self._index: dict[str, list[int]] = {}  # structural hash -> workloads.json lines
        self._workloads: list = []  # ms Workload, or None where it did not parse
        self._load()

    def _load(self) -> None:
        for n, obj in enumerate(_lines(self.workloads_path), 1):
            if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str)):
                raise QCompileError(f"tuning database {self.workloads_path}: line {n} is not a "
                                    "workload (a corrupt file)")
            try:
                workload = ms.database.Workload.from_json(obj)
            except Exception:  # noqa: BLE001 - another TVM's IR: its records are skipped
                workload = None
            self._index.setdefault(obj[0], []).append(len(self._workloads))
            self._workloads.append(workload)
        for n, obj in enumerate(_lines(self.records_path), 1):
            if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], int)
                    and 0 <= obj[0] < len(self._workloads) and isinstance(obj[1], list)):
                raise QCompileError(f"tuning database {self.records_path}: line {n} is not a "
                                    "record of a workload in workloads.json (a corrupt file)")
            self._add(n, self._workloads[obj[0]], obj[1])

    def _add(self, n: int, workload: ms.database.Workload | None, rec_json: list) -> None:
        where = f"records.json line {n}"
        if workload is None:
            self.skip(f"{where}: its workload does not parse here")
            return
        unknown = [i for i in _tensorized(rec_json[0] if rec_json else [])
                   if not register_named(i, self.target.name)]
        if unknown:
            self.skip(f"{where}: unknown tensor intrinsic {unknown[0]}")
            return
        try:
            rec = ms.database.TuningRecord.from_json(rec_json, workload)
        except Exception as exc:  # noqa: BLE001 - a trace that no longer replays
            first = str(exc).strip().splitlines()[-1:] or ["?"]
            self.skip(f"{where}: does not replay ({first[0][:120]})")
            return
        self.memory.commit_tuning_record(ms.database.TuningRecord(
            rec.trace, self.memory.commit_workload(workload.mod), rec.run_secs, rec.target,
            rec.args_info))

    def skip(self, reason: str) -> None:
        """Count a record that does not replay (once, however often it is met)."""
        if reason not in self.skipped:
            self.skipped.append(reason)

    def query_tuning_record(self, mod: tvm.IRModule, target: tvm.target.Target,
                            workload_name: str = "main") -> ms.database.TuningRecord | None:
        """The best record of a workload (None: none, or none that replays here)."""
        if not self.memory.has_workload(mod):
            return None
        return self.memory.query_tuning_record(mod, target, workload_name)

    def _workload_line(self, mod: tvm.IRModule) -> int:
        """The workloads.json line (from 0) of `mod`, appended if new."""
        key = str(tvm_ffi.structural_hash(mod))
        for i in self._index.get(key, []):
            w = self._workloads[i]
            if w is not None and tvm_ffi.structural_equal(w.mod, mod):
                return i
        workload = ms.database.Workload(mod)
        self._append(self.workloads_path, workload.as_json())
        self._index.setdefault(key, []).append(len(self._workloads))
        self._workloads.append(workload)
        return len(self._workloads) - 1

    def commit(self, mod: tvm.IRModule, trace: tvm.s_tir.Trace, cost: float,
               target: tvm.target.Target) -> None:
        """Add a record (`cost`: the runner's figure, stored as its run_secs)."""
        rec = ms.database.TuningRecord(trace, ms.database.Workload(mod), [cost], target,
                                       ms.arg_info.ArgInfo.from_prim_func(mod["main"]))
        self._append(self.records_path, [self._workload_line(mod), rec.as_json()])
        self.memory.commit_tuning_record(ms.database.TuningRecord(
            trace, self.memory.commit_workload(mod), [cost], target, rec.args_info))

    def _append(self, path: Path, obj: object) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(obj, separators=(",", ":")) + "\n")
        except OSError as exc:
            raise QCompileError(f"tuning database {path}: cannot write ({exc.strerror})"
                                ) from None
        _CACHE[self.folder] = (_stamp(self.folder), self)

    def __len__(self) -> int:
        return len(self.memory)


def _stamp(folder: Path) -> tuple:
    out = []
    for f in FILES:
        try:
            st = (folder / f).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


# Opened databases, by folder, while their files are unchanged: a compile opens its database
# up to three times (check, tune, apply), and parsing replays every trace.
_CACHE: dict[Path, tuple[tuple, TuningDatabase]] = {}


def open_database(root: Path, target: Target, write: bool = True) -> TuningDatabase:
    """The database of `target` under `root` (created on first write); one-line errors for a
    root that cannot be one (`check_root`) or a corrupt file."""
    check_root(Path(root), write)
    folder = database_dir(root, target).absolute()
    if folder.exists() and not folder.is_dir():
        raise QCompileError(f"tuning database {folder}: a file, not a folder")
    if write and folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise QCompileError(f"tuning database {folder}: not writable")
    cached = _CACHE.get(folder)
    if cached is not None and cached[0] == _stamp(folder) \
            and cached[1].target.tvm_target == target.tvm_target:
        return cached[1]
    db = TuningDatabase(folder, target)
    _CACHE[folder] = (_stamp(folder), db)
    return db
