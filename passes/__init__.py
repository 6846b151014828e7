"""Relax passes of qcompiler, one per file; each module exposes one `tvm.transform` pass."""
from __future__ import annotations

from collections.abc import Callable

import tvm

_interrupts: list[BaseException] = []  # Ctrl-C inside a pass, which TVM's FFI cannot carry


def module_pass(name: str) -> Callable:
    """`tvm.transform.module_pass` for our passes, keeping an interrupt: TVM's FFI turns a
    KeyboardInterrupt raised in a Python pass into `RuntimeError('')` (a Ctrl-C during a
    compile read as an internal error); the pass notes it, and `reraise_interrupt` raises it
    again where the RuntimeError is caught."""
    def wrap(fn: Callable) -> tvm.transform.Pass:
        def body(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
            try:
                return fn(mod, ctx)
            except KeyboardInterrupt as exc:
                _interrupts.append(exc)
                raise
        return tvm.transform.module_pass(opt_level=0, name=name)(body)
    return wrap


def reraise_interrupt() -> None:
    """Raise the KeyboardInterrupt a pass noted, if any (call where an error is caught)."""
    if _interrupts:
        exc = _interrupts[-1]
        _interrupts.clear()
        raise exc
