"""HVX shuffle networks: n rows of 128 bytes interleaved column by column in log2(n) rounds
of `vshuff`, the way HVX kernels turn NCHW channel planes into the layouts their
instructions read (`lane_transpose`: 32 channels in int16 lanes; `packing`: vrmpy's 4-byte
channel groups) and back (`output_planes`). TIR that moves the same bytes one index at a time becomes one byte load and
store each (~1-2 packets a byte): LLVM does not find the network itself."""
from __future__ import annotations

from tvm import tirx

VEC = 128  # bytes of an HVX vector


def hvx(name: str, dtype: str, *args: tirx.PrimExpr) -> tirx.PrimExpr:
    """A 128-byte-mode HVX intrinsic, `llvm.hexagon.V6.<name>.128B`."""
    return tirx.call_llvm_pure_intrin(dtype, f"llvm.hexagon.V6.{name}.128B", *args)


def bound(binds: list, value: tirx.PrimExpr, dtype: str) -> tirx.Var:
    """`value` as a new variable (its `Bind` appended to `binds`)."""
    var = tirx.Var("v", dtype)
    binds.append(tirx.Bind(var, value))
    return var


def shuffled(binds: list, rows: list, rounds: int) -> list[tirx.Var]:
    """`rounds` perfect shuffles of the bytes of n vectors (int32x32; n a power of two, at
    least 2): a round of `vshuff` on the pairs (vector i, vector i + n/2) interleaves the
    sequence's halves byte by byte, which rotates every byte's index (log2(128 n) bits) left
    by one bit."""
    half = len(rows) // 2
    for _ in range(rounds):
        out = []
        for i in range(half):
            pair = bound(binds, hvx("vshuffvdd", "int32x64", rows[i + half], rows[i],
                                    tirx.const(-1, "int32")), "int32x64")
            out += [hvx("lo", "int32x32", pair), hvx("hi", "int32x32", pair)]
        rows = [bound(binds, v, "int32x32") for v in out]
    return rows


def interleaved(binds: list, rows: list) -> list[tirx.Var]:
    """n (a power of two, 2 to 32) rows of 128 bytes each (int32x32 vectors) -> n vectors of
    their bytes column by column: vector k holds columns k 128/n .. (k+1) 128/n - 1, each
    column's n bytes in row order (log2(n) shuffles rotate (row, column) into (column,
    row))."""
    return shuffled(binds, rows, (len(rows) - 1).bit_length())


def bytes_at(x: tirx.Buffer, addr: tirx.PrimExpr, size: int, may_pass_end: bool
             ) -> tirx.PrimExpr:
    """The 128 bytes of `x` (flat, `size` bytes) from element `addr`, as int32x32. Where they
    `may_pass_end` of the tensor, the load starts at most 128 bytes before its end and is
    rotated into place (the bytes past the end are then others of the tensor)."""
    zero = [tirx.const(0, "int32")] * (len(x.shape) - 1)
    start = tirx.min(addr, size - VEC) if may_pass_end else addr
    vec = tirx.reinterpret("int32x32", tirx.BufferLoad(x, [*zero, tirx.Ramp(start, 1, VEC)]))
    return hvx("vror", "int32x32", vec, addr - start) if may_pass_end else vec
