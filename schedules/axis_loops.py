"""A block's loops by the axis each one binds, for schedules that reorder loops after
`compute_at` (which orders and drops the loops it makes as it likes)."""
from __future__ import annotations

import tvm
from tvm import tirx
from tvm.sym.analyzer import Analyzer


def axis_loops(sch: tvm.s_tir.Schedule, block: tvm.s_tir.SBlockRV
               ) -> dict[int, tvm.s_tir.LoopRV]:
    """The loops of `block` by the index of the block iterator each one binds.

    `compute_at` makes no loop for an iterator whose region has extent 1 (one phase read,
    one row) and may put a unit loop it keeps anywhere, so a loop's position in `get_loops`
    does not say which axis it is.
    """
    loops = sch.get_loops(block)
    realize = sch.get(loops[-1]).body if loops else None
    if not isinstance(realize, tvm.s_tir.SBlockRealize):
        return {}
    axes = {}
    for loop in loops:
        var = sch.get(loop).loop_var
        for k, value in enumerate(realize.iter_values):
            if any(v.same_as(var) for v in tirx.analysis.undefined_vars(value, [])):
                axes[k] = loop
    return axes


def uses_loop(expr: tirx.PrimExpr, loop: tirx.For) -> bool:
    """Whether `expr` (a block's iter value, an index) reads `loop`'s variable."""
    return any(v.same_as(loop.loop_var) for v in tirx.analysis.undefined_vars(expr, []))


def value_at(expr: tirx.PrimExpr, values: dict) -> tirx.PrimExpr:
    """`expr` simplified with variables bound to `values` (e.g. a nest's first iteration)."""
    analyzer = Analyzer()
    for var, value in values.items():
        analyzer.bind(var, value)
    return analyzer.simplify(expr)
