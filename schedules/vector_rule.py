"""Rules that rebuild a portable kernel with the same operands and another loop nest (no
packing, no new constants): the vector kernels of targets without a dot product in the op
(`hexagon.vector`, `hexagon.plain`, `x86.rows`)."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from tvm import tirx

Builder = Callable[[tirx.PrimFunc, dict, list], "tirx.PrimFunc | None"]


@dataclass(frozen=True)
class VectorRule:
    """Kernels rebuilt with the same operands and vectorized, as a rule for
    `qcompiler.schedules` (nothing is packed: the graph keeps its constants).

    Accepts the ops in `builders`; each builder says which of their kernels it takes (None:
    the portable kernel stays): see `hexagon.vector.HVX_VECTOR`, `hexagon.plain.HVX_PLAIN`,
    `x86.rows.X86_ROWS`."""

    name: str
    builders: dict[str, Builder] = field(hash=False)

    def applies(self, op: str, attrs: dict, x_dtype: str) -> bool:
        return op in self.builders

    def rebuild(self, func: tirx.PrimFunc, consts: list) -> tirx.PrimFunc | None:
        """The vector kernel, or None to keep `func`. `consts[i]`: parameter i's value when
        it is a graph constant (None otherwise)."""
        op = str(func.attrs["qcompiler.op"])
        new = self.builders[op](func, json.loads(str(func.attrs["qcompiler.attrs"])), consts)
        if new is None:
            return None
        return new.with_attr({"qcompiler.op": op, "qcompiler.attrs": func.attrs["qcompiler.attrs"],
                              "qcompiler.schedule": self.name})
