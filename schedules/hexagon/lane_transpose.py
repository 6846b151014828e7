"""Channel planes to channels-in-lanes on HVX by a shuffle network, for `depthwise_lanes`.

That kernel reads 32 channels' NCHW planes into (rows, columns, 32) int16 lanes. Written as a
gather (`x_lanes[i, j, l] = x[c0 + l, i, j] - zp`), LLVM moves one byte at a time (~1.75
packets an element; two TIR vectorizations of it lost: each lane's index is extracted). Here
each of the 32 planes gives one 128-byte vector of consecutive pixels (whole input rows),
`shuffles.interleaved` turns the 32 x 128 bytes into 128 pixels x 32 channels, and each
resulting vector (4 pixels) is widened, centered and stored at its padded position.

The block is written after the schedule, over the loop nest `compute_at` gave the gather (the
same region: a whole padded plane, or a chunk of rows), through `ScheduleState.replace`: a
tensor intrinsic cannot take it, as lanes past the last channel read `min(c0 + l, c - 1)`.
"""
from __future__ import annotations

import tvm
from qcompiler.schedules.axis_loops import uses_loop, value_at
from qcompiler.schedules.hexagon.shuffles import VEC, bound, bytes_at, interleaved
from tvm import tirx
from tvm.s_tir import stmt as sst

LANES = 32  # channels of a block, the network's rows


class _Planes:
    """The gather's operands: x (n, c, h, w), its lanes (n, blocks, hp, wp, 32) and the
    block's batch and channel-block indices."""

    def __init__(self, x: tirx.Buffer, lanes: tirx.Buffer, b: tirx.PrimExpr, ob: tirx.PrimExpr,
                 pad_top_left: tuple[int, int], zp: int) -> None:
        self.x, self.lanes, self.b, self.ob = x, lanes, b, ob
        self.n, self.c, self.h, self.w = (int(d) for d in x.shape)
        self.hp, self.wp = int(lanes.shape[2]), int(lanes.shape[3])
        self.pt, self.pl = pad_top_left
        self.zp = zp
        self.size = self.n * self.c * self.h * self.w

    def window(self, row: tirx.PrimExpr, rows: int, past_plane: bool) -> tirx.Stmt:
        """Input rows [row, row + rows) of the block's channels (rows * w <= 128), centered,
        into their padded lanes. A window reading `past_plane` may reach past the tensor (the
        last channel's plane): such a load starts at most 128 bytes before the end and is
        rotated into place."""
        binds: list = []
        rows_in = []
        for li in range(LANES):
            channel = tirx.min(self.ob * LANES + li, self.c - 1)
            addr = (self.b * self.c + channel) * (self.h * self.w) + row * self.w
            rows_in.append(bound(binds, bytes_at(self.x, addr, self.size, past_plane),
                                 "int32x32"))
        cols = interleaved(binds, rows_in)
        pixels = rows * self.w
        zp = tirx.Broadcast(tirx.const(self.zp, "int16"), VEC)
        stores = []
        for k in range((pixels + 3) // 4):
            wide = bound(binds, tirx.Cast("int16x128", tirx.reinterpret(
                f"{self.x.dtype}x{VEC}", cols[k])) - zp, "int16x128")
            for m in range(4 * k, min(4 * k + 4, pixels)):
                pixel = tirx.Shuffle([wide], [tirx.const(LANES * (m - 4 * k) + i, "int32")
                                              for i in range(LANES)])
                stores.append(tirx.BufferStore(self.lanes, pixel, [
                    self.b, self.ob, row + m // self.w + self.pt, m % self.w + self.pl,
                    tirx.Ramp(0, 1, LANES)]))
        return tirx.SeqStmt(binds + stores)

    def padding(self, first: tirx.PrimExpr, end: tirx.PrimExpr) -> tirx.Stmt:
        """Zeros in the padding of padded rows [first, end)."""
        zero = tirx.Broadcast(tirx.const(0, "int16"), LANES)
        i = tirx.Var("i", "int32")

        def columns(start: int, count: int) -> tirx.Stmt:
            j = tirx.Var("j", "int32")
            return tirx.For(j, 0, count, tirx.ForKind.SERIAL, tirx.BufferStore(
                self.lanes, zero, [self.b, self.ob, i, start + j, tirx.Ramp(0, 1, LANES)]))

        right = self.wp - self.w - self.pl
        sides = ([columns(0, self.pl)] if self.pl else []) \
            + ([columns(self.w + self.pl, right)] if right else [])
        inner = tirx.SeqStmt(sides) if len(sides) > 1 else (sides[0] if sides else None)
        pad_row = tirx.Or(i < self.pt, i >= self.h + self.pt)
        return tirx.For(i, first, end - first, tirx.ForKind.SERIAL,
                        tirx.IfThenElse(pad_row, columns(0, self.wp), inner))


def gather_by_shuffles(sch: tvm.s_tir.Schedule, block: str = "x_lanes") -> bool:
    """Replace `block`'s loop nest (scheduled: at the channel block or a chunk of its rows) by
    windows of the shuffle network; False (nothing changed) where a row is wider than a
    window, the tensor smaller than one, or a chunk has fewer rows than a window."""
    loops = sch.get_loops(sch.get_sblock(block))
    realize = sch.get(loops[-1]).body if loops else None
    if not isinstance(realize, sst.SBlockRealize):  # (unit loops dropped)
        return False
    b, ob, vi, _, _ = realize.iter_values
    func = sch.mod["main"]
    planes = _Planes(realize.block.reads[0].source, realize.block.writes[0].source, b, ob,
                     tuple(int(v) for v in func.attrs["qcompiler.pad_top_left"]),
                     int(func.attrs["qcompiler.zp_x"]))
    if planes.size < VEC or planes.w > VEC:
        return False
    nest = [sch.get(lp) for lp in loops]
    pos = max(k for k, lp in enumerate(nest) if uses_loop(vi, lp))  # the padded rows' loop
    base = value_at(vi, {nest[pos].loop_var: tirx.const(0, "int32")})
    first = tirx.max(base, 0)
    end = tirx.min(base + int(nest[pos].extent), planes.hp)
    top = tirx.max(first - planes.pt, 0)  # the input rows the region holds
    bottom = tirx.min(end - planes.pt, planes.h)
    per = VEC // planes.w
    chunks = [lp for lp in nest[:pos] if uses_loop(base, lp)]
    stmts = [planes.padding(first, end)]
    if not chunks:  # the whole plane: windows known here
        top, bottom = int(value_at(top, {})), int(value_at(bottom, {}))
        plane = planes.h * planes.w
        starts = list(range(top, bottom - per + 1, per)) or [top]
        if starts[-1] + per < bottom:
            starts.append(bottom - per)  # overlapping the one before
        for s in starts:
            rows = min(per, bottom - s)
            stmts.append(planes.window(tirx.const(s, "int32"), rows, s * planes.w + VEC > plane))
    else:
        (chunk,) = chunks
        if min(int(value_at(bottom - top, {chunk.loop_var: tirx.const(v, "int32")}))
               for v in range(int(chunk.extent))) < per:
            return False
        k = tirx.Var("window", "int32")
        stmts.append(tirx.For(k, 0, (bottom - top + per - 1) // per, tirx.ForKind.SERIAL,
                              planes.window(tirx.min(top + k * per, bottom - per), per, True)))
    whole = [tvm.ir.Range.from_min_extent(0, d) for d in planes.x.shape]
    region = [tvm.ir.Range.from_min_extent(b, 1), tvm.ir.Range.from_min_extent(ob, 1),
              tvm.ir.Range(first, end), tvm.ir.Range.from_min_extent(0, planes.wp),
              tvm.ir.Range.from_min_extent(0, LANES)]
    new = sst.SBlock([], [tirx.BufferRegion(planes.x, whole)],
                     [tirx.BufferRegion(planes.lanes, region)], f"{block}_shuffled",
                     tirx.SeqStmt(stmts))
    sch.state.replace(sch.get_sref(loops[pos]), sst.SBlockRealize([], True, new))
    return True
