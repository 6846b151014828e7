"""The pieces every blocked kernel shares: the zp_x-padded input and how it is stored, the
requantize epilogue (tensorized or int64), and the row loops of the channel-wise kernels."""
from __future__ import annotations

import json

import numpy as np
import tvm
from qcompiler.schedules.dot_product import has_block
from qcompiler.schedules.sblocks import map_blocks, with_body
from qcompiler.schedules.x86.bias_init import bias_init
from qcompiler.schedules.x86.blocked.layout import BLOCK, EPILOGUE_ATTR, LOOKUP_ATTR, bordered
from qcompiler.schedules.x86.lookup import fits, mark_lookup
from qcompiler.schedules.x86.requantize import (
    COLUMNS,
    columns_apply,
    requantize_intrin,
    right_shift_epilogue,
)
from tvm import te, tirx
from tvm.s_tir import SBlock

from qcompiler import kernels
from qcompiler.numerics.requantize import RequantizeAttrs
from qcompiler.numerics.shapes import ceil_div

# A conv or depthwise conv over a padded plane (one channel block) larger than this pads its
# input a few rows at a time (`pad_by_task`, `blocked.depthwise`).
CHUNKED_PLANE_BYTES = 32 * 1024


def shape_bytes(t: te.Tensor) -> int:
    return int(np.prod([int(d) for d in t.shape])) * tvm.DataType(t.dtype).bits // 8


def padded_input(x: te.Tensor, attrs: dict, width: int = 0) -> te.Tensor:
    """x5 padded spatially with zp_x, at least `width` columns wide (x itself when that
    needs no padding)."""
    n, cb, h, w, lanes = (int(d) for d in x.shape)
    pt, pl, pb, pr = attrs["padding"]
    width = max(width, w + pl + pr)
    if not any(attrs["padding"]) and width == w:
        return x
    zp = tirx.const(attrs["zp_x"], x.dtype)
    return te.compute((n, cb, h + pt + pb, width, lanes), lambda b, c, i, j, ci: bordered(
        lambda r, q: x[b, c, r, q, ci], i, j, (h, w), attrs["padding"], zp), name="x_pad")


def requantize(acc: te.Tensor, params: tuple, attrs: dict, shifts: str) -> te.Tensor:
    """The contract's epilogue on `acc`, which the bias starts (`epilogue_func`).

    `shifts` "right" (every channel's shift in `x86.requantize.RIGHT_SHIFTS`,
    `schedules.shift_kind`): the stage the schedule tensorizes with `x86.requantize` (the
    product's high dwords taken without widening). Otherwise the int64 multiply and clamp."""
    rq = RequantizeAttrs.from_attrs(attrs)
    _, _, m0, shift = params
    if shifts == "right":
        return te.compute(tuple(acc.shape), lambda b, ob, i, j, oi: right_shift_epilogue(
            acc[b, ob, i, j, oi], m0[ob * BLOCK + oi], shift[ob * BLOCK + oi], attrs),
            name="requantize")

    def body(b, ob, i, j, oi):  # noqa: ANN001, ANN202
        o = ob * BLOCK + oi
        y = kernels.fixed_point_multiply(acc[b, ob, i, j, oi], m0[o], shift[o])
        return kernels.clamp_cast(y, rq.zp_y, rq.lo, rq.hi,
                                   rq.out_dtype)

    return te.compute(tuple(acc.shape), body, name="requantize")


def _table_reads(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """The table stage's block reading its index, then the whole table (TVM derives
    [table[0, index], index]: the index is data), the reads `x86.lookup.lower_lookups`
    expects."""
    def explicit(block: SBlock) -> SBlock:
        if block.name_hint != "lut":
            return block
        table, index = block.reads
        whole = [tvm.ir.Range(0, d) for d in table.source.shape]
        return with_body(block, block.body,
                         [index, tvm.ir.TensorRegion(table.source, whole, table.ty)])

    return map_blocks(func, explicit)


def epilogue_func(tensors: list, attrs: dict, shifts: str) -> tirx.PrimFunc:
    """The kernel's PrimFunc, its accumulators started at the bias (`bias_init`); a
    right-shift epilogue carries the attributes that name its intrinsic, so that a schedule
    (or a tuning trace) can tensorize it, and a table stage that `x86.lookup` can take (with
    attribute `table_lookup` "vbmi") its dtypes."""
    func = bias_init(te.create_prim_func(tensors), lambda at: at[1] * BLOCK + at[4])
    if "lut" in attrs:
        func = _table_reads(func)
    if "lut" in attrs and attrs.get("table_lookup") == "vbmi" \
            and fits(attrs["out_dtype"], attrs["lut"]["out_dtype"], (1, 256)):
        func = func.with_attr(LOOKUP_ATTR, json.dumps([attrs["out_dtype"],
                                                      attrs["lut"]["out_dtype"]]))
    if shifts != "right":
        return func
    return func.with_attr(EPILOGUE_ATTR, json.dumps(
        {k: attrs[k] for k in ("zp_y", "lo", "hi", "out_dtype")}))


def scheduled(rule: object, op: str, x_shape: tuple, x_dtype: str, w_shape: tuple,
              attrs: dict, trace: tvm.s_tir.Trace | None, shifts: str) -> tvm.s_tir.Schedule:
    """A blocked rule's workload under its fixed schedule, or under a tuning record's trace
    (which names the right-shift epilogue's intrinsics: registered first)."""
    sch = tvm.s_tir.Schedule(rule.workload(op, x_shape, x_dtype, w_shape, attrs, shifts))
    if trace is None:
        rule.schedule(sch)
        return sch
    if shifts == "right":
        requantize_intrin(attrs)
        requantize_intrin(attrs, COLUMNS)
    trace.apply_to_schedule(sch, remove_postproc=False)
    return sch


def schedule_pad(sch: tvm.s_tir.Schedule, pl: int, w: int) -> None:
    """The padded copy (of an input `w` wide, `pl` columns of left padding) in parallel over
    (batch, channel block), row by row (`schedule_plane_pad`); if the conv's schedule has put
    it in its own parallel loop (`pad_by_task`), only row by row."""
    if not has_block(sch, "x_pad"):
        return
    loops = sch.get_loops(sch.get_sblock("x_pad"))
    if sch.get(loops[0]).kind != tirx.ForKind.PARALLEL:  # at the root
        sch.parallel(sch.fuse(*loops[:2]))
    schedule_plane_pad(sch, pl, w)


def pad_by_task(sch: tvm.s_tir.Schedule, task: tvm.s_tir.LoopRV, reach: int) -> None:
    """A conv whose output blocks each read `reach` of the input's blocks (a grouped conv)
    on a padded plane beyond `CHUNKED_PLANE_BYTES`: each parallel `task` pads the rows and
    blocks it reads, which costs little and keeps the whole padded copy out of the workspace
    (RegNet's first stage: 624 KiB, the graph's peak). Before any tensorize (which hides the
    conv's reads from `compute_at`)."""
    if not has_block(sch, "x_pad"):
        return
    pad = sch.get_sblock("x_pad")
    shape = [int(d) for d in sch.get(pad).writes[0].source.shape]
    if reach < shape[1] and shape[2] * shape[3] * shape[4] > CHUNKED_PLANE_BYTES:
        sch.compute_at(pad, task, preserve_unit_loops=True)


def epilogue_attrs(sch: tvm.s_tir.Schedule) -> dict | None:
    """The right-shift epilogue's attributes (`epilogue_func`), or None."""
    attrs = sch.mod["main"].attrs
    return json.loads(str(attrs[EPILOGUE_ATTR])) if attrs and EPILOGUE_ATTR in attrs else None


def schedule_epilogue(sch: tvm.s_tir.Schedule, anchor: tvm.s_tir.LoopRV) -> None:
    """The epilogue stages on the register block, right after its accumulators: tensorized
    with `x86.requantize` (right shifts; 4 columns at a time where they divide the block),
    else vectorized; a fused add after them, or a table (`kernels.table_stage`)."""
    epilogue = epilogue_attrs(sch)
    names = [n for n in ("requantize", "add", "lut") if has_block(sch, n)]
    for name in names:  # all placed before any is tensorized (which replaces a block)
        sch.reverse_compute_at(sch.get_sblock(name), anchor, preserve_unit_loops=True)
    for name in names:
        block = sch.get_sblock(name)
        *_, col, lane = sch.get_loops(block)
        cols = int(sch.get(col).extent)
        # A block of columns that does not divide the width (a tuning tile may) has a
        # predicate: its columns go one at a time.
        whole = int(sch.get(block).iter_vars[3].dom.extent) % cols == 0
        if name == "lut":
            schedule_table(sch, col if whole else lane, lane)
        elif epilogue is None or name == "add":
            sch.vectorize(lane)
        elif columns_apply(epilogue, cols) and whole:
            _, four = sch.split(col, [None, COLUMNS])
            sch.tensorize(four, requantize_intrin(epilogue, COLUMNS))
        else:
            sch.tensorize(lane, requantize_intrin(epilogue))


def schedule_table(sch: tvm.s_tir.Schedule, col: tvm.s_tir.LoopRV, lane: tvm.s_tir.LoopRV
                   ) -> None:
    """A table stage on a register block: with AVX-512 VBMI (`LOOKUP_ATTR`) the block's
    columns of each channel block, contiguous bytes, looked up 64 at a time (`x86.lookup`,
    after the schedule: `lower_lookups`); otherwise a gather of one byte at a time,
    unrolled."""
    attrs = sch.mod["main"].attrs
    if not (attrs and LOOKUP_ATTR in attrs):
        sch.unroll(lane)
        return
    mark_lookup(sch, col, *json.loads(str(attrs[LOOKUP_ATTR])))


def schedule_plane_pad(sch: tvm.s_tir.Schedule, pl: int, w: int) -> None:
    """Each padded row (`pl` columns of left padding, `w` of input) in 64-byte vectors: those
    wholly within the interior one loop of aligned stores (the row stride made whole
    vectors), the others split where the border meets the interior, so that every piece is
    a fill or a copy. (A fill of the whole region and a copy over it stored every interior
    byte twice, 16 bytes off alignment: a depthwise conv with it took 13.5 cycles per 16
    outputs at stride 2, with this 10.8.)"""
    pad = sch.get_sblock("x_pad")
    sch.storage_align(pad, 0, 2, 64, 0)
    *_, col, lane = sch.get_loops(pad)
    pixel = int(sch.get(lane).extent)
    row = sch.fuse(col, lane)
    extent = int(sch.get(row).extent)
    left, right = pl * pixel, (pl + w) * pixel
    edges = [e for e in (left, right) if 0 < e < extent]
    whole = extent // 64 * 64
    # Past the whole vectors: pieces at the edges (a loop that does not start at 0 cannot be
    # split or partitioned).
    cuts = [whole, *(e for e in edges if e > whole)] if 0 < whole < extent else []
    pieces = sch.loop_partition(row, [*(b - a for a, b in zip([0, *cuts], cuts)), None]) \
        if cuts else [row]
    for piece in pieces[1:] if cuts else ([] if whole else pieces):
        sch.vectorize(piece)
    if not whole:
        return
    vectors, _ = sch.split(pieces[0], [None, 64])
    count = whole // 64
    first = min(ceil_div(left, 64), count)
    last = max(min(right // 64, count), first)
    spans = [(k, k + 1) for k in range(first)] + ([(first, last)] if last > first else []) \
        + [(k, k + 1) for k in range(last, count)]
    parts = sch.loop_partition(vectors, [*(b - a for a, b in spans[:-1]), None]) \
        if len(spans) > 1 else [vectors]
    for (a, b), part in zip(spans, parts):
        inner = sch.get_loops(sch.get_child_blocks(part)[0])[-1]
        vectorize_between(sch, inner, [e - a * 64 for e in edges if a * 64 < e < b * 64]
                           if b - a == 1 else [])


def vectorize_between(sch: tvm.s_tir.Schedule, loop: tvm.s_tir.LoopRV, cuts: list) -> None:
    """`loop` vectorized, in pieces at `cuts` (offsets from its start)."""
    if not cuts:
        sch.vectorize(loop)
        return
    sizes = [b - a for a, b in zip([0, *cuts], cuts)]
    for piece in sch.loop_partition(loop, [*sizes, None]):
        sch.vectorize(piece)


def schedule_rows(sch: tvm.s_tir.Schedule, name: str) -> None:
    """(batch, block, row) in parallel, the 16 channels of a pixel as one vector."""
    loops = sch.get_loops(sch.get_sblock(name))
    sch.parallel(sch.fuse(*loops[:3]))
    sch.vectorize(loops[4])


INT32 = 2**31
