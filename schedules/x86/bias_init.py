"""The bias as the accumulators' initial value.

A TE reduction always starts at its identity (`te.sum`'s `init` is not carried into the
PrimFunc), so `acc + bias` costs one vector add per 16 outputs in the epilogue. Started at the
bias instead, the accumulators hold `acc + bias` when the reduction ends: the same int32
(addition wraps alike in any order), and the epilogue has one instruction fewer, about 10% of
a thin 1x1 conv or a depthwise conv, whose epilogues outweigh their dot products.

The rewrite is on the workload PrimFunc, before any schedule: `decompose_reduction` then
makes the init block load the bias, and a tuning trace replays on it unchanged."""
from __future__ import annotations

from collections.abc import Callable

from tvm import s_tir, tirx


def bias_init(func: tirx.PrimFunc, index: Callable[[list], tirx.PrimExpr],
              block: str = "acc", bias: str = "bias") -> tirx.PrimFunc:
    """`func` with the init of reduction block `block` reading `bias[index(indices)]`, where
    `indices` are those of the accumulator the init writes."""
    buffer = next(p for p in func.params if p.name == bias)  # a param is its buffer

    def rewrite(b: s_tir.SBlock) -> s_tir.SBlock:
        init = b.init
        assert isinstance(init, tirx.BufferStore), f"{block}: init is not one store"
        at = index(list(init.indices))
        store = tirx.BufferStore(init.buffer, tirx.BufferLoad(buffer, [at]), init.indices)
        return s_tir.SBlock(b.iter_vars, b.reads, b.writes, b.name_hint, b.body,
                            store, b.alloc_buffers, b.match_buffers, b.annotations)

    found = []
    body = _replace_block(func.body, block, rewrite, found)
    assert found, f"no block {block}"
    return func.with_body(body)


def _replace_block(stmt: tirx.Stmt, name: str, rewrite: Callable, found: list) -> tirx.Stmt:
    """`stmt` with block `name` replaced by `rewrite(block)` (the nodes a TE PrimFunc has on
    the way to it: block realizes, blocks, loops, sequences)."""
    def walk(s: tirx.Stmt) -> tirx.Stmt:
        return _replace_block(s, name, rewrite, found)

    if isinstance(stmt, s_tir.SBlockRealize):
        return s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, walk(stmt.block))
    if isinstance(stmt, s_tir.SBlock):
        if stmt.name_hint == name:
            found.append(stmt)
            return rewrite(stmt)
        return s_tir.SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint,
                            walk(stmt.body), stmt.init, stmt.alloc_buffers, stmt.match_buffers,
                            stmt.annotations)
    if isinstance(stmt, tirx.For):
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, walk(stmt.body),
                        stmt.thread_binding, stmt.annotations)
    if isinstance(stmt, tirx.SeqStmt):
        return tirx.SeqStmt([walk(s) for s in stmt])
    return stmt
