"""Table lookups on AVX-512 VBMI: 64 bytes of a tensor through a 256-entry table per two
`vpermi2b` and a blend.

A table kernel (`kernels.lut`: the written-out hard-swish, SiLU, sigmoid gates, ...) reads
each output at an index taken from the data: as a plain vector that is a gather of one byte
per lane, which x86 does not have for bytes (`x86.rows` leaves the loop scalar, ~1 ns a
byte). `vpermi2b` selects 64 bytes out of two 64-byte registers by the low 7 bits of each
index byte, so a 256-entry table is two of them (entries 0-127 and 128-255) and a blend on
the index's top bit: 96x112x112 bytes 0.82 -> 0.064 ms at 1 thread. An int8 input indexes
the table at `x + 128`, which has the same low 7 bits and the opposite top bit.

The lookup is elementwise with one table row, so the kernel ignores the layout: it walks the
tensor as one flat run of bytes (64 at a time, the last `size % 64` one by one), in NCHW as
in the blocked NCHW16c layout.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import tvm
from qcompiler.schedules.sblocks import map_blocks, with_body
from qcompiler.schedules.vector_rule import VectorRule
from tvm import tirx
from tvm.s_tir import SBlock
from tvm.script import tirx as T

LANES = 64  # bytes per lookup: one zmm register of indices
TABLE = 256  # entries of an 8-bit input's table
BYTES = ("int8", "uint8")
VPERMI2B = "llvm.x86.avx512.vpermi2var.qi.512"


def fits(x_dtype: str, out_dtype: str, table_shape: tuple) -> bool:
    """One 256-entry table row, 8-bit in and out (16-bit inputs have 65,536 entries, and
    per-channel tables a row per channel: the scalar kernel)."""
    return x_dtype in BYTES and out_dtype in BYTES and tuple(table_shape) == (1, TABLE)


def lookup_vector(part: Callable[[int], tirx.PrimExpr], x: tirx.PrimExpr, x_dtype: str,
                  out_dtype: str) -> tirx.PrimExpr:
    """The 64 table entries that the 64 bytes `x` index: `part(lo)` gives table entries
    `lo .. lo + 63` as an int8x64; entries 0-127 or 128-255 by the top bit of x + 128 (int8)
    or x (uint8)."""
    top = -128 if x_dtype == "int8" else 0  # x ^ top < 0: the index is 128-255
    idx = tirx.reinterpret("int8x64", x)
    halves = [tirx.call_llvm_pure_intrin("int8x64", VPERMI2B, part(lo), idx, part(lo + LANES))
              for lo in (0, 2 * LANES)]
    high = tirx.LT(idx ^ tirx.Broadcast(tirx.const(top, "int8"), LANES),
                   tirx.Broadcast(tirx.const(0, "int8"), LANES))
    return tirx.reinterpret(f"{out_dtype}x{LANES}", tirx.Select(high, halves[1], halves[0]))


def lookup(shape: tuple, x_dtype: str, out_dtype: str) -> tirx.PrimFunc:
    """`y = table[0, x - qmin]` on a tensor of any shape and layout (`fits` must hold)."""
    total = math.prod(shape)
    chunks, tail = divmod(total, LANES)
    whole = chunks * LANES
    qmin = -128 if x_dtype == "int8" else 0

    def select(t: tirx.Buffer, x: tirx.PrimExpr) -> tirx.PrimExpr:
        return lookup_vector(lambda lo: tirx.reinterpret(
            "int8x64", tirx.BufferLoad(t, [tirx.Ramp(lo, 1, LANES)])), x, x_dtype, out_dtype)

    @T.prim_func
    def main(x: T.Buffer(shape, x_dtype), table: T.Buffer((1, TABLE), out_dtype),
             y: T.Buffer(shape, out_dtype)) -> None:
        T.func_attr({"tirx.noalias": True})
        xf = T.decl_buffer((total,), x_dtype, data=x.data)
        yf = T.decl_buffer((total,), out_dtype, data=y.data)
        tf = T.decl_buffer((TABLE,), out_dtype, data=table.data)
        for c in T.parallel(chunks):
            yf[T.ramp(c * LANES, 1, LANES)] = select(tf, xf[T.ramp(c * LANES, 1, LANES)])
        for t in range(tail):
            yf[whole + t] = tf[T.Cast("int32", xf[whole + t]) - qmin]

    return main


# ---- the lookup as a stage of another kernel (a conv's epilogue) ----
# `tensorize` cannot match a gather (the comparator cannot map the index buffer inside the
# table's index), so the schedule marks the stage's block (`mark_lookup`) and
# `lower_lookups` writes its body once the schedule is done.

ANNOTATION = "qcompiler.lookup"  # "x_dtype,out_dtype" of a block to look up 64 bytes at once


def mark_lookup(sch: tvm.s_tir.Schedule, loop: tvm.s_tir.LoopRV, x_dtype: str,
                out_dtype: str) -> None:
    """The table stage under `loop` (declared reads: its index, then the whole table;
    contiguous bytes, a multiple of 16) as one block, to be looked up by `lower_lookups`."""
    block = sch.blockize(loop)
    sch.annotate(block, ANNOTATION, f"{x_dtype},{out_dtype}")


def lower_lookups(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Every block `mark_lookup` marked, its body `lookup_vector`s: 64 bytes at a time, and
    the last 16, 32 or 48 bytes repeated to fill the 64 indices (the extra results
    dropped); the indices read 16 bytes at a time."""
    def edit(block: SBlock) -> SBlock:
        if ANNOTATION not in block.annotations:
            return block
        x_dtype, out_dtype = str(block.annotations[ANNOTATION]).split(",")
        (index, table), (out,) = block.reads, block.writes
        size = math.prod(int(r.extent) for r in out.region)
        inner = int(out.source.shape[-1])
        assert size % 16 == 0 and int(out.region[-1].extent) == inner \
            and all(int(r.extent) == 1 for r in out.region[:-2]), out  # contiguous bytes

        def at(region: tvm.ir.TensorRegion, start: int, n: int) -> list:
            """`n` bytes from byte `start` of the region (the region's last two axes are
            whole rows of the buffer's last axis)."""
            mins = [r.min for r in region.region]
            row, lane = divmod(start, inner)
            return [*mins[:-2], mins[-2] + row, tirx.Ramp(mins[-1] + lane, 1, n)]

        def part(lo: int) -> tirx.PrimExpr:
            return tirx.reinterpret("int8x64", tirx.BufferLoad(
                table.source, [tirx.const(0, "int32"), tirx.Ramp(lo, 1, LANES)]))

        stores = []
        for start in range(0, size, LANES):
            n = min(LANES, size - start)
            # 16 bytes per load, as the requantize before it stores them (a 64-byte load of
            # four 16-byte stores waits for them to reach the cache: no store forwarding)
            pieces = [tirx.BufferLoad(index.source, at(index, start + k, 16))
                      for k in range(0, n, 16)]
            x = tirx.Shuffle([pieces[k % len(pieces)] for k in range(LANES // 16)],
                             [tirx.const(k, "int32") for k in range(LANES)])
            y = lookup_vector(part, x, x_dtype, out_dtype)
            if n < LANES:
                y = tirx.Shuffle([y], [tirx.const(k, "int32") for k in range(n)])
            stores.append(tirx.BufferStore(out.source, y, at(out, start, n)))
        return with_body(block, stores[0] if len(stores) == 1 else tirx.SeqStmt(stores),
                         block.reads)

    return map_blocks(func, edit)


def _lut(func: tirx.PrimFunc, attrs: dict, consts: list) -> tirx.PrimFunc | None:
    x, table, y = func.params
    if not fits(str(x.dtype), str(y.dtype), tuple(int(d) for d in table.shape)):
        return None
    return lookup(tuple(int(d) for d in x.shape), str(x.dtype), str(y.dtype))


X86_VBMI_LOOKUP = VectorRule("x86_vbmi_lookup", {"lut": _lut})
"""Accepts table kernels (`lut`) of one 256-entry row on 8-bit NCHW tensors of any shape,
8-bit out, on targets with AVX-512 VBMI; the rest go to `x86.rows`."""

