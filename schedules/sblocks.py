"""Rewrite the blocks of a scheduled PrimFunc (TVM 0.27 has no Python IR mutator): for the
few edits the schedule primitives cannot make, such as a block's declared reads, or the body
of a block that `tensorize` cannot match (a table lookup, whose index is data)."""
from __future__ import annotations

from collections.abc import Callable

from tvm import tirx
from tvm.s_tir import SBlock, SBlockRealize


def map_blocks(func: tirx.PrimFunc, edit: Callable[[SBlock], SBlock]) -> tirx.PrimFunc:
    """`func` with `edit` applied to every block, innermost first. Walks the statements a
    scheduled kernel holds between its blocks (loops, sequences, allocations are kept as
    they are below any other statement kind)."""
    def walk(stmt: tirx.Stmt) -> tirx.Stmt:
        if isinstance(stmt, SBlockRealize):
            return SBlockRealize(stmt.iter_values, stmt.predicate, walk(stmt.block))
        if isinstance(stmt, tirx.SeqStmt):
            return tirx.SeqStmt([walk(s) for s in stmt.seq])
        if isinstance(stmt, tirx.For):
            return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, walk(stmt.body),
                            stmt.thread_binding, stmt.annotations)
        if isinstance(stmt, SBlock):
            return edit(with_body(stmt, walk(stmt.body), stmt.reads))
        return stmt

    return func.with_body(walk(func.body))


def with_body(block: SBlock, body: tirx.Stmt, reads: list) -> SBlock:
    """`block` with another body and declared reads (the rest kept)."""
    return SBlock(block.iter_vars, reads, block.writes, block.name_hint, body, block.init,
                  block.alloc_buffers, block.match_buffers, block.annotations)
