"""vrmpy's packed input built by shuffle networks.

A `vrmpy` conv reads its input as 4-byte groups of channels per pixel (`x_packed[b, cb, i, j,
0:4] = x[b, 4 cb .. 4 cb + 3, i - pt, j - pl]`, zp in the padding and past the last channel).
LLVM compiles that interleave of 4 channel rows into a byte load and a byte store per element:
half the packets of a 1x1 conv of 72 -> 24 channels on a 16x16 plane (17,280 of 35,889). Here
4 vectors of 128 consecutive pixels (one per channel) go through two rounds of `vshuff`
(`shuffles.interleaved`) into 128 packed pixels, 4 vector stores.

The copy is rewritten after the schedule and the padding split (`DotProduct.finish`), over its
loop nest: where the input has no padding the packed rows are one run of pixels (1x1 convs),
else each row's interior is one and its padding columns are filled with zp. Row-packed inputs
(a block of rows per task, `dot_product.ROW_PACKED`) keep the element copy: their buffer is
compacted to the rows a task reads, and a store here runs on past its pixel's 4 bytes (the
rewritten copy keeps its buffer whole: below).
"""
from __future__ import annotations

import tvm
from qcompiler.schedules.axis_loops import uses_loop, value_at
from qcompiler.schedules.dot_product import ROW_PACKED
from qcompiler.schedules.hexagon.shuffles import VEC, bound, bytes_at, interleaved
from tvm import tirx
from tvm.s_tir import stmt as sst

DEPTH = 4  # channels a packed group holds (vrmpy's reduction)


def _seq(stmts: list[tirx.Stmt]) -> tirx.Stmt:
    return stmts[0] if len(stmts) == 1 else tirx.SeqStmt(stmts)


class _Packing:
    """The copy's operands: x (n, c, h, w), the packed input (n, c/4, hp, wp, 4), and the
    copy's batch and channel-block indices."""

    def __init__(self, x: tirx.Buffer, packed: tirx.Buffer, b: tirx.PrimExpr,
                 cb: tirx.PrimExpr, attrs: dict) -> None:
        self.x, self.b, self.cb = x, b, cb
        self.n, self.c, self.h, self.w = (int(d) for d in x.shape)
        self.blocks, self.hp, self.wp = (int(d) for d in packed.shape[1:4])
        self.pt, self.pl = int(attrs["padding"][0]), int(attrs["padding"][1])
        self.zp = tirx.const(int(attrs["zp_x"]), packed.dtype)
        self.size = self.n * self.c * self.h * self.w
        self.packed = packed

    def at(self, pixel: tirx.PrimExpr, nbytes: int) -> list[tirx.PrimExpr]:
        """The indices of `nbytes` packed bytes from packed pixel `pixel` (row * wp + column)
        of the copy's channel block: the vector runs on past the pixel's 4 bytes (through the
        flat buffer; compaction narrows the access to the buffer's shape)."""
        return [self.b, self.cb, pixel // self.wp, pixel % self.wp, tirx.Ramp(0, 1, nbytes)]

    def fill(self, pixel: tirx.PrimExpr, count: int) -> list[tirx.Stmt]:
        """zp over `count` packed pixels from `pixel`."""
        step = VEC // DEPTH
        return [tirx.BufferStore(self.packed, tirx.Broadcast(
            self.zp, min(step, count - k) * DEPTH), self.at(pixel + k, min(step, count - k) * DEPTH))
            for k in range(0, count, step)]

    def window(self, pixel: tirx.PrimExpr, count: int, dest: tirx.PrimExpr, past_plane: bool
               ) -> tirx.Stmt:
        """Input pixels [pixel, pixel + count) (of the flat plane, count <= 128) of the
        block's 4 channels, packed from packed pixel `dest`."""
        binds: list = []
        rows = []
        splat = tirx.reinterpret("int32x32", tirx.Broadcast(self.zp, VEC))
        for ci in range(DEPTH):
            channel = self.cb * DEPTH + ci
            addr = (self.b * self.c + tirx.min(channel, self.c - 1)) * (self.h * self.w) + pixel
            vec = bytes_at(self.x, addr, self.size, past_plane)
            if self.c % DEPTH and ci >= self.c % DEPTH:  # past the last channel: zp
                vec = tirx.Select(channel < self.c, vec, splat)
            rows.append(bound(binds, vec, "int32x32"))
        groups = interleaved(binds, rows)
        stores = []
        for k in range((count * DEPTH + VEC - 1) // VEC):
            nbytes = min(VEC, count * DEPTH - k * VEC)
            value = tirx.reinterpret(f"{self.packed.dtype}x{VEC}", groups[k])
            if nbytes < VEC:
                value = tirx.Shuffle([value], [tirx.const(i, "int32") for i in range(nbytes)])
            stores.append(tirx.BufferStore(self.packed, value,
                                           self.at(dest + k * (VEC // DEPTH), nbytes)))
        return tirx.SeqStmt(binds + stores)

    def run(self, pixel: tirx.PrimExpr, count: int, dest: tirx.PrimExpr, past_plane: bool
            ) -> list[tirx.Stmt]:
        """`count` consecutive input pixels from `pixel`, packed to `dest`: windows of 128,
        the last one overlapping the one before where `count` is no multiple."""
        starts = list(range(0, count - VEC + 1, VEC)) or [0]
        if count > VEC and count % VEC:
            starts.append(count - VEC)
        return [self.window(pixel + s, min(VEC, count - s), dest + s,
                            past_plane or s + VEC > count) for s in starts]


def pack_by_shuffles(sch: tvm.s_tir.Schedule, attrs: dict) -> bool:
    """Rewrite a conv's `x_packed` copy (not column-folded, not row-packed) as shuffle
    networks; False (nothing changed) where its loop nest is not (.., rows, columns, 4)."""
    block = sch.get_sblock("x_packed")
    node = sch.get(block)
    if len(node.iter_vars) != 5 or ROW_PACKED in node.annotations:
        return False
    loops = sch.get_loops(block)
    nest = [sch.get(lp) for lp in loops]
    realize = nest[-1].body
    if not isinstance(realize, sst.SBlockRealize):  # (unit loops dropped: a 1x1 plane's)
        return False
    b, cb, vi, vj, vci = realize.iter_values
    if len(nest) < 3 or not (uses_loop(vi, nest[-3]) and uses_loop(vj, nest[-2]) and uses_loop(vci, nest[-1]))\
            or not isinstance(realize.predicate, tirx.IntImm) or int(nest[-1].extent) != DEPTH:
        return False
    store = realize.block.body
    if not isinstance(store, tirx.BufferStore):
        return False
    inner = nest[-3:]
    # the first packed (row, column) written: the store's indices (the padding split's copy
    # iterates over the input's pixels) at the nest's first iteration
    at_start = {iv.var: value for iv, value in zip(realize.block.iter_vars, realize.iter_values)}
    at_start.update({lp.loop_var: tirx.const(0, "int32") for lp in inner})
    first = [value_at(store.indices[k], at_start) for k in (2, 3)]
    if not all(isinstance(v, tirx.IntImm) for v in first):
        return False
    row0, col0 = (int(v) for v in first)
    rows, cols = int(inner[0].extent), int(inner[1].extent)
    p = _Packing(node.reads[0].source, node.writes[0].source, b, cb, attrs)
    plane = p.h * p.w
    if p.size < VEC:
        return False
    if p.pt == 0 and p.pl == 0 and p.hp == p.h and p.wp == p.w and col0 == 0 and cols == p.w:
        # no padding: the rows are one run of pixels
        body = p.run(tirx.const(row0 * p.w, "int32"), rows * p.w,
                     tirx.const(row0 * p.wp, "int32"), row0 * p.w + VEC > plane)
    else:
        r = tirx.Var("row", "int32")
        row = row0 + r
        lo, hi = max(col0, p.pl), min(col0 + cols, p.pl + p.w)  # the interior columns
        inside = p.fill(row * p.wp + col0, lo - col0) if lo > col0 else []
        if hi > lo:
            inside += p.run((row - p.pt) * p.w + (lo - p.pl), hi - lo, row * p.wp + lo,
                            (p.h - 1) * p.w + (lo - p.pl) + VEC > plane)
        if col0 + cols > hi:
            inside += p.fill(row * p.wp + hi, col0 + cols - hi)
        padding_row = tirx.Or(row < p.pt, row >= p.pt + p.h)
        body = [tirx.For(r, 0, rows, tirx.ForKind.SERIAL, tirx.IfThenElse(
            padding_row, _seq(p.fill(row * p.wp + col0, cols)),
            _seq(inside)))]
    # The stores' vectors run on past their first pixel, which is all the buffer compaction
    # sees of them: the region's last byte, read and written back, keeps the whole region
    # (a 1x1 conv of stride 2 reads no last row or column; its packed input was compacted to
    # 13 x 13 pixels under the 14 x 14 the stores address).
    corner = [b, cb, row0 + rows - 1, col0 + cols - 1, DEPTH - 1]
    packed = node.writes[0].source
    body.append(tirx.BufferStore(packed, tirx.BufferLoad(packed, corner), corner))
    whole = [tvm.ir.Range.from_min_extent(0, d) for d in p.x.shape]
    region = [tvm.ir.Range.from_min_extent(b, 1), tvm.ir.Range.from_min_extent(cb, 1),
              tvm.ir.Range.from_min_extent(row0, rows), tvm.ir.Range.from_min_extent(col0, cols),
              tvm.ir.Range.from_min_extent(0, DEPTH)]
    new = sst.SBlock([], [tirx.BufferRegion(p.x, whole)],
                     [tirx.BufferRegion(node.writes[0].source, region)], "x_packed_shuffled",
                     _seq(body))
    sch.state.replace(sch.get_sref(loops[-3]), sst.SBlockRealize([], True, new))
    return True
