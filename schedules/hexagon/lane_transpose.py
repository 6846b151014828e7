"""Channel planes to channels-in-lanes on HVX by a shuffle network, for `depthwise_lanes`.

That kernel reads 32 channels' NCHW planes into (rows, columns, 32) int16 lanes. Written as a
gather (`x_lanes[i, j, l] = x[c0 + l, i, j] - zp`), LLVM moves one byte at a time (~1.75
packets an element; two TIR vectorizations of it lost: each lane's index is extracted). Here
each of the 32 planes gives one 128-byte vector of consecutive pixels (whole input rows), and
five rounds of `vshuff` (16 vector pairs a round, byte interleave) transpose the 32 x 128
bytes: a round is a perfect shuffle of the 4 KiB, which rotates the byte index's bits left by
one, so five rotate (channel: 5 bits, pixel: 7 bits) into (pixel, channel). Each resulting
vector is 4 pixels x 32 channels, widened, centered and stored at its padded position.

The block is written after the schedule, over the loop nest `compute_at` gave the gather (the
same region: a whole padded plane, or a chunk of rows), through `ScheduleState.replace`: a
tensor intrinsic cannot take it, as lanes past the last channel read `min(c0 + l, c - 1)`.
"""
from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import stmt as sst
from tvm.sym.analyzer import Analyzer

LANES = 32  # channels of a block, the network's rows
VEC = 128  # bytes of an HVX vector: pixels of a window


def hvx(name: str, dtype: str, *args: tirx.PrimExpr) -> tirx.PrimExpr:
    """A 128-byte-mode HVX intrinsic, `llvm.hexagon.V6.<name>.128B`."""
    return tirx.call_llvm_pure_intrin(dtype, f"llvm.hexagon.V6.{name}.128B", *args)


def _bound(binds: list, value: tirx.PrimExpr, dtype: str) -> tirx.Var:
    var = tirx.Var("v", dtype)
    binds.append(tirx.Bind(var, value))
    return var


def transposed(binds: list, rows: list) -> list[tirx.Var]:
    """32 vectors (int32x32) of 128 bytes each -> 32 vectors of [4 bytes' columns][32 rows]
    (vector k: columns 4k .. 4k+3, each its 32 rows' bytes in row order)."""
    for _ in range(5):
        out = []
        for i in range(16):
            pair = _bound(binds, hvx("vshuffvdd", "int32x64", rows[i + 16], rows[i],
                                     tirx.const(-1, "int32")), "int32x64")
            out += [hvx("lo", "int32x32", pair), hvx("hi", "int32x32", pair)]
        rows = [_bound(binds, v, "int32x32") for v in out]
    return rows


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
        zero = tirx.const(0, "int32")
        for li in range(LANES):
            channel = tirx.min(self.ob * LANES + li, self.c - 1)
            addr = (self.b * self.c + channel) * (self.h * self.w) + row * self.w
            start = tirx.min(addr, self.size - VEC) if past_plane else addr
            vec = tirx.reinterpret("int32x32", tirx.BufferLoad(
                self.x, [zero, zero, zero, tirx.Ramp(start, 1, VEC)]))
            if past_plane:
                vec = hvx("vror", "int32x32", vec, addr - start)
            rows_in.append(_bound(binds, vec, "int32x32"))
        cols = transposed(binds, rows_in)
        pixels = rows * self.w
        zp = tirx.Broadcast(tirx.const(self.zp, "int16"), VEC)
        stores = []
        for k in range((pixels + 3) // 4):
            wide = _bound(binds, tirx.Cast("int16x128", tirx.reinterpret(
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


def _at(expr: tirx.PrimExpr, values: dict) -> tirx.PrimExpr:
    analyzer = Analyzer()
    for var, value in values.items():
        analyzer.bind(var, value)
    return analyzer.simplify(expr)


def _uses(expr: tirx.PrimExpr, loop: tirx.For) -> bool:
    return any(v.same_as(loop.loop_var) for v in tirx.analysis.undefined_vars(expr, []))


def gather_by_shuffles(sch: tvm.s_tir.Schedule, block: str = "x_lanes") -> bool:
    """Replace `block`'s loop nest (scheduled: at the channel block or a chunk of its rows) by
    windows of the shuffle network; False (nothing changed) where a row is wider than a
    window, the tensor smaller than one, or a chunk has fewer rows than a window."""
    loops = sch.get_loops(sch.get_sblock(block))
    realize = sch.get(loops[-1]).body
    b, ob, vi, _, _ = realize.iter_values
    func = sch.mod["main"]
    planes = _Planes(realize.block.reads[0].source, realize.block.writes[0].source, b, ob,
                     tuple(int(v) for v in func.attrs["qcompiler.pad_top_left"]),
                     int(func.attrs["qcompiler.zp_x"]))
    if planes.size < VEC or planes.w > VEC:
        return False
    nest = [sch.get(lp) for lp in loops]
    pos = max(k for k, lp in enumerate(nest) if _uses(vi, lp))  # the padded rows' loop
    base = _at(vi, {nest[pos].loop_var: tirx.const(0, "int32")})
    first = tirx.max(base, 0)
    end = tirx.min(base + int(nest[pos].extent), planes.hp)
    top = tirx.max(first - planes.pt, 0)  # the input rows the region holds
    bottom = tirx.min(end - planes.pt, planes.h)
    per = VEC // planes.w
    chunks = [lp for lp in nest[:pos] if _uses(base, lp)]
    stmts = [planes.padding(first, end)]
    if not chunks:  # the whole plane: windows known here
        top, bottom = int(_at(top, {})), int(_at(bottom, {}))
        plane = planes.h * planes.w
        starts = list(range(top, bottom - per + 1, per)) or [top]
        if starts[-1] + per < bottom:
            starts.append(bottom - per)  # overlapping the one before
        for s in starts:
            rows = min(per, bottom - s)
            stmts.append(planes.window(tirx.const(s, "int32"), rows, s * planes.w + VEC > plane))
    else:
        (chunk,) = chunks
        if min(int(_at(bottom - top, {chunk.loop_var: tirx.const(v, "int32")}))
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
