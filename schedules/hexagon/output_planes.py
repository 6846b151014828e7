"""The epilogue's 32 channel lanes moved to the output's NCHW planes by a shuffle network.

HVX kernels requantize 32 output channels in the lanes of a vector per pixel (`lanes32`);
the output wants each channel's pixels consecutive. Written as `out[c0 + l, i, j] =
requantize[j, l]`, LLVM moves one byte at a time (a word load and a byte store each). Here a
block of J columns (a power of two, 2 to 128; P = J, or 8 with zero columns past J) is
narrowed to bytes, 4 pixels a vector ([P][32] bytes in P/4 vectors), and log2(P) perfect
shuffles (`shuffles.shuffled`) rotate it into [32][P]: each channel's J bytes, one store each.

Only blocks of a power of two columns take it: at 7, 14 and 28 columns (stores of odd
widths) the network cost up to 7% more packets than the element moves it replaced (a
16-channel 3x3 stem on 28x28: 36,261 vs 34,273).

The move's loop nest (`requantize_out` under the column block, or a row's pixels) is rewritten
after the schedule, like the packings (`ScheduleState.replace`); where its value is anything
but the requantized lanes cast (a fused table's lookup), it stays as scheduled.
"""
from __future__ import annotations

import tvm
from qcompiler.schedules.axis_loops import uses_loop, value_at
from qcompiler.schedules.hexagon.shuffles import VEC, bound, shuffled
from tvm import tirx
from tvm.s_tir import stmt as sst

LANES = 32


def takes_columns(columns: int, least: int = 2) -> bool:
    """Whether a block of this many columns moves by the network (see the docstring)."""
    return least <= columns <= VEC and columns & (columns - 1) == 0


def planes_by_shuffles(sch: tvm.s_tir.Schedule, block: str = "requantize_out",
                       least: int = 2) -> bool:
    """Rewrite `block` (out[b, o, i, j] = cast(lanes[b, o // 32, i, j, o % 32]) over (at
    most) 32 lanes x J columns) as shuffle networks; False (nothing changed) for any other
    loop nest or a block of fewer than `least` columns."""
    rv = sch.get_sblock(block)
    node = sch.get(rv)
    loops = sch.get_loops(rv)
    if len(loops) < 2:
        return False
    nest = [sch.get(lp) for lp in loops]
    lane, col = nest[-2], nest[-1]
    realize = col.body
    store = node.body
    if not isinstance(realize, sst.SBlockRealize) or not isinstance(store, tirx.BufferStore) or not isinstance(store.value, tirx.Cast) \
            or not hasattr(store.value.value, "indices") or int(lane.extent) > LANES:
        return False
    load = store.value.value
    _, vo, vi, vj = realize.iter_values
    if not (uses_loop(vo, lane) and not uses_loop(vo, col) and uses_loop(vj, col) and not uses_loop(vj, lane)
            and not uses_loop(vi, lane) and not uses_loop(vi, col)):
        return False
    start = {iv.var: value for iv, value in zip(node.iter_vars, realize.iter_values)}
    start.update({lane.loop_var: tirx.const(0, "int32"), col.loop_var: tirx.const(0, "int32")})
    src = [value_at(e, start) for e in load.indices]  # [b, o / 32, i, j0, 0]
    dst = [value_at(e, start) for e in store.indices]  # [b, o0, i, j0]
    out, lanes_buf = store.buffer, load.source
    if not isinstance(src[-1], tirx.IntImm) or int(src[-1]) != 0:
        return False
    cols = int(col.extent)
    if not takes_columns(cols, least):
        return False
    span = max(8, cols)  # P: columns through the network (2 or 4 padded with zeros to 8)
    binds: list = []
    vecs = []
    zero = tirx.reinterpret("int32x32", tirx.Broadcast(tirx.const(0, "int8"), VEC))
    for k in range(span // 4):  # 4 columns a vector
        if 4 * k >= cols:
            vecs.append(bound(binds, zero, "int32x32"))
            continue
        valid = min(4, cols) * LANES
        lanes = tirx.BufferLoad(lanes_buf, [*src[:3], src[3] + 4 * k, tirx.Ramp(0, 1, valid)])
        narrow = tirx.Cast(f"int8x{valid}", lanes)
        if valid < VEC:  # 2 columns
            narrow = tirx.Shuffle([narrow, tirx.Broadcast(tirx.const(0, "int8"), VEC)],
                                  [tirx.const(i, "int32") for i in range(VEC)])
        vecs.append(bound(binds, tirx.reinterpret("int32x32", narrow), "int32x32"))
    planes = shuffled(binds, vecs, (span - 1).bit_length())  # [32 channels][span columns]
    per = VEC // span  # channels a vector
    channels = int(out.shape[1])
    stores = []
    for li in range(int(lane.extent)):  # (fewer than 32 where the output has fewer channels)
        row = tirx.reinterpret(f"{out.dtype}x{VEC}", planes[li // per])
        first = (li % per) * span
        value = tirx.Shuffle([row], [tirx.const(first + i, "int32") for i in range(cols)])
        o = dst[1] + li
        put = tirx.BufferStore(out, value, [dst[0], o, dst[2], tirx.Ramp(dst[3], 1, cols)])
        whole = channels % LANES == 0 or int(lane.extent) < LANES
        stores.append(put if whole else tirx.IfThenElse(o < channels, put, None))
    region = [tvm.ir.Range.from_min_extent(dst[0], 1),
              tvm.ir.Range.from_min_extent(dst[1], int(lane.extent)),
              tvm.ir.Range.from_min_extent(dst[2], 1), tvm.ir.Range.from_min_extent(dst[3], cols)]
    reads = [tvm.ir.Range.from_min_extent(e, 1) for e in src[:3]] + [
        tvm.ir.Range.from_min_extent(src[3], cols), tvm.ir.Range.from_min_extent(0, LANES)]
    new = sst.SBlock([], [tirx.BufferRegion(lanes_buf, reads)],
                     [tirx.BufferRegion(out, region)], f"{block}_shuffled",
                     tirx.SeqStmt(binds + stores))
    sch.state.replace(sch.get_sref(loops[-2]), sst.SBlockRealize([], True, new))
    return True
