"""The requantize epilogue on 16 int32 lanes (AVX-512) as a tensor intrinsic.

Where every channel's shift is a right one of at least 2 bits (`n <= -2`, so `k = 31 - n >=
33`), the contract's `zp + q`, `q = (x M0 + 2^(k-1)) >> k`, equals

    (h + 2^(k-33) + zp 2^(k-32)) >> (k - 32),    h = (x M0) >> 32,

because the floors nest and `(2^(k-33) + zp 2^(k-32)) 2^32 = 2^(k-1) + zp 2^k`. `h`, the high
dword of a 64-bit product, AVX-512 gives without widening: `vpmuldq` multiplies the even
dwords of two vectors into 8 qwords, and the odd dwords after a 32-bit shift of the qwords;
one `vpermt2d` takes the high dword of each product back to its lane. Then one `vpaddd` of
a per-channel constant (hoisted out of the loops over pixels) and one `vpsravd`: 6 vector
instructions per 16 outputs before the clamp (x = acc + bias is the accumulators' value,
`schedules.bias_init`). Adding the rounding constant to the 64-bit products instead, as
before, took two `vpaddq`, 7 in all (1x1 16 -> 96 at 112: 7.1 -> 6.5 cycles per 16 outputs);
LLVM's widening of the int64 expression (`vpmovzxdq` x2, `vextracti64x4`, `vpmovqd` x2,
`vinserti64x4`, an int64 shift) takes about 15.

Where a register block has a multiple of 4 output columns and the output is 8-bit, the
columns go 4 at a time (`requantize_intrin(attrs, COLUMNS)`): the 4 vectors of 16 int32
results are narrowed together by `vpackssdw` x2 + `vpackuswb` (or `vpacksswb`), whose
saturation is the clamp to the dtype's range, one `vpermd` puts the 4 columns in order, and
the 64 bytes (4 pixels of 16 channels, contiguous in NCHW16c) are one store; a ReLU's bounds
are then one byte `vpmaxub`/`vpminub` for the 4 columns. Per 16 outputs: about 1.5
instructions instead of 5 after the shift.

Ranges (`RIGHT_SHIFTS`: -22 <= n <= -2, so 33 <= k <= 53): x = acc + bias is int32, so
|x M0| < 2^62 and |h| <= 2^30; the constant is below 2^29 (|zp| < 2^8, k - 32 <= 21), so
`h` plus it stays within int32, and `k - 32` is a defined shift of 1 to 21 bits. (n = -1,
a multiplier in [1/4, 1/2), needs the low dword's top bit: such kernels take the int64
epilogue.)
"""
from __future__ import annotations

import re
from typing import Any

import tvm
from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from qcompiler import kernels
from qcompiler.numerics.requantize import RequantizeAttrs

LANES = 16
RIGHT_SHIFTS = (-22, -2)  # the shifts (n) of the right-shift form (`schedules.shift_kind`)
COLUMNS = 4  # output columns (pixels) narrowed together


def right_shift_epilogue(acc: Any, m0: Any, shift: Any, attrs: dict) -> Any:
    """`clamp(zp_y + qms(acc, m0, shift))`, cast (the bias is already in acc,
    `schedules.bias_init`): the expression of the blocks this intrinsic replaces
    (`blocked.stages.requantize`) and of its description, so they match."""
    rq = RequantizeAttrs.from_attrs(attrs)
    y = kernels.fixed_point_multiply(acc, m0, shift).astype("int32")
    y = y + tirx.const(rq.zp_y, "int32")
    return tvm.te.min(tvm.te.max(y, tirx.const(rq.lo, "int32")),
                      tirx.const(rq.hi, "int32")).astype(rq.out_dtype)


def _desc(attrs: dict) -> tirx.PrimFunc:
    rq = RequantizeAttrs.from_attrs(attrs)
    dtype, epilogue = rq.out_dtype, right_shift_epilogue

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((LANES,), "int32", offset_factor=1),
             M: T.Buffer((LANES,), "int32", offset_factor=1),
             S: T.Buffer((LANES,), "int32", offset_factor=1),
             Y: T.Buffer((LANES,), dtype, offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(A[0:LANES], M[0:LANES], S[0:LANES])
            T.writes(Y[0:LANES])
            for i in T.serial(0, LANES):
                with T.sblock("requantize"):
                    vi = T.axis.spatial(LANES, i)
                    Y[vi] = epilogue(A[vi], M[vi], S[vi], attrs)

    return desc


def _even(v: Any) -> Any:
    """The even dwords of an int32x16, sign-extended in their qwords (a `vpmuldq` operand)."""
    q = tirx.reinterpret("int64x8", v)
    return tirx.shift_right(tirx.shift_left(q, tirx.const(32, "int64")), tirx.const(32, "int64"))


def _odd(v: Any) -> Any:
    """The odd dwords of an int32x16, sign-extended in their qwords."""
    return tirx.shift_right(tirx.reinterpret("int64x8", v), tirx.const(32, "int64"))


def _rescaled(x: Any, m0: Any, shift: Any, zp: int) -> Any:
    """`zp + q_multiply_shift(x, m0, shift)` for int32x16 operands, as int32x16."""
    # Lane 2i: the high dword of even product i (dword 2i+1); lane 2i+1: that of odd product i.
    high_dwords = [tirx.const(d, "int32") for i in range(LANES // 2)
                   for d in (2 * i + 1, LANES + 2 * i + 1)]
    h = tirx.Shuffle([tirx.reinterpret(f"int32x{LANES}", _even(x) * _even(m0)),
                      tirx.reinterpret(f"int32x{LANES}", _odd(x) * _odd(m0))], high_dwords)
    rest = tirx.const(-1, "int32") - shift  # k - 32
    constant = tirx.shift_left(tirx.Broadcast(tirx.const(1, "int32"), LANES), rest - 1) \
        + tirx.shift_left(tirx.Broadcast(tirx.const(zp, "int32"), LANES), rest)
    return tirx.shift_right(h + constant, rest)


def _epilogue_vector(acc: Any, m0: Any, shift: Any, attrs: dict) -> Any:
    """The 16 outputs of one column."""
    rq = RequantizeAttrs.from_attrs(attrs)
    y = _rescaled(acc, m0, shift, rq.zp_y)
    y = tvm.te.min(tvm.te.max(y, tirx.const(rq.lo, "int32")),
                   tirx.const(rq.hi, "int32"))
    return y.astype(f"{rq.out_dtype}x{LANES}")


def _narrowed(columns: list, attrs: dict) -> Any:
    """4 columns of int32x16 results (zero point added) as their 64 output bytes, clamped."""
    rq = RequantizeAttrs.from_attrs(attrs)
    dtype = rq.out_dtype
    signed = dtype == "int8"
    words = [tirx.call_llvm_pure_intrin("int16x32", "llvm.x86.avx512.packssdw.512",
                                        columns[i], columns[i + 1]) for i in (0, 2)]
    packed = tirx.call_llvm_pure_intrin(  # dword 4L + c: column c's lanes 4L .. 4L+3
        f"{dtype}x64", "llvm.x86.avx512.packsswb.512" if signed
        else "llvm.x86.avx512.packuswb.512", *words)
    lane = tirx.Ramp(tirx.const(0, "int32"), 1, LANES)
    ordered = tirx.call_llvm_pure_intrin(  # dword 4c + L: column after column
        f"int32x{LANES}", "llvm.x86.avx512.permvar.si.512",
        tirx.reinterpret(f"int32x{LANES}", packed), lane % 4 * 4 + lane // 4)
    y = tirx.reinterpret(f"{dtype}x64", ordered)
    lo, hi = (tirx.const(attrs[k], dtype) for k in ("lo", "hi"))
    return tvm.te.min(tvm.te.max(y, lo), hi)  # (within the dtype: saturation did the rest)


def _columns_vector(a: Any, m0: Any, shift: Any, attrs: dict) -> Any:
    """The 64 outputs of 4 columns (`a`: the accumulator buffer, 4 x 16)."""
    rq = RequantizeAttrs.from_attrs(attrs)
    return _narrowed([_rescaled(a.vload([c, 0], f"int32x{LANES}"), m0, shift, rq.zp_y)
                      for c in range(COLUMNS)], attrs)


def _impl(attrs: dict) -> tirx.PrimFunc:
    rq = RequantizeAttrs.from_attrs(attrs)
    dtype = rq.out_dtype
    vector = _epilogue_vector

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((LANES,), "int32", offset_factor=1),
             M: T.Buffer((LANES,), "int32", offset_factor=1),
             S: T.Buffer((LANES,), "int32", offset_factor=1),
             Y: T.Buffer((LANES,), dtype, offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(A[0:LANES], M[0:LANES], S[0:LANES])
            T.writes(Y[0:LANES])
            # One expression: a name bound here would become a local buffer (see x86_vnni).
            Y[T.ramp(T.int32(0), 1, LANES)] = vector(
                A.vload([0], "int32x16"), M.vload([0], "int32x16"), S.vload([0], "int32x16"),
                attrs)

    return impl


def _desc_columns(attrs: dict) -> tirx.PrimFunc:
    rq = RequantizeAttrs.from_attrs(attrs)
    dtype, epilogue = rq.out_dtype, right_shift_epilogue

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((COLUMNS, LANES), "int32", offset_factor=1),
             M: T.Buffer((LANES,), "int32", offset_factor=1),
             S: T.Buffer((LANES,), "int32", offset_factor=1),
             Y: T.Buffer((COLUMNS, LANES), dtype, offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(A[0:COLUMNS, 0:LANES], M[0:LANES], S[0:LANES])
            T.writes(Y[0:COLUMNS, 0:LANES])
            for j, i in T.grid(COLUMNS, LANES):
                with T.sblock("requantize"):
                    vj, vi = T.axis.remap("SS", [j, i])
                    Y[vj, vi] = epilogue(A[vj, vi], M[vi], S[vi], attrs)

    return desc


def _impl_columns(attrs: dict) -> tirx.PrimFunc:
    rq = RequantizeAttrs.from_attrs(attrs)
    dtype, vector = rq.out_dtype, _columns_vector

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((COLUMNS, LANES), "int32", offset_factor=1),
             M: T.Buffer((LANES,), "int32", offset_factor=1),
             S: T.Buffer((LANES,), "int32", offset_factor=1),
             Y: T.Buffer((COLUMNS, LANES), dtype, offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(A[0:COLUMNS, 0:LANES], M[0:LANES], S[0:LANES])
            T.writes(Y[0:COLUMNS, 0:LANES])
            Y.vstore([0, 0], vector(A, M.vload([0], "int32x16"), S.vload([0], "int32x16"),
                                    attrs))

    return impl


_REGISTERED: dict[tuple, str] = {}
# The name carries every parameter of the intrinsic (zp_y, lo, hi, out_dtype, columns), so a
# tuning record that names it can register it in another process (`register_named`).
NAME = "qcompiler_requantize_right_x16_zp{}_{}_{}_{}_c{}"
_NAME_RE = re.compile(r"qcompiler_requantize_right_x16_zp(-?\d+)_(-?\d+)_(-?\d+)_"
                      r"(u?int(?:8|16|32))_c(\d+)")


def requantize_intrin(attrs: dict, columns: int = 1) -> str:
    """The intrinsic for a kernel's zero point, clamp and output dtype (registered once):
    one column of 16 lanes, or `COLUMNS` of them (8-bit outputs, `columns_apply`)."""
    rq = RequantizeAttrs.from_attrs(attrs)
    key = (rq.zp_y, rq.lo, rq.hi, rq.out_dtype, columns)
    if key not in _REGISTERED:
        name = NAME.format(*key)
        desc, impl = (_desc, _impl) if columns == 1 else (_desc_columns, _impl_columns)
        TensorIntrin.register(name, desc(attrs), impl(attrs), override=True)
        _REGISTERED[key] = name
    return _REGISTERED[key]


def register_named(name: str) -> None:
    """Register the intrinsic `requantize_intrin` names `name` (as a tuning record's trace
    names it); a name it cannot have made is left alone (`intrinsics.register_named`)."""
    m = _NAME_RE.fullmatch(name)
    if m is None or int(m[5]) not in (1, COLUMNS):
        return
    attrs = {"zp_y": int(m[1]), "lo": int(m[2]), "hi": int(m[3]), "out_dtype": m[4]}
    requantize_intrin(attrs, int(m[5]))


def columns_apply(attrs: dict, columns: int) -> bool:
    """Whether a block of `columns` output columns takes the 4-column intrinsic."""
    rq = RequantizeAttrs.from_attrs(attrs)
    return rq.out_dtype in ("uint8", "int8") and columns % COLUMNS == 0
