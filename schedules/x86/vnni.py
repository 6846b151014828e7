"""`vpdpbusd` (AVX-512 VNNI, u8 x s8 -> s32, 16 lanes x 4) as a TVM tensor intrinsic.

TVM 0.27 ships one (`VNNI_DOT_16x4_INTRIN`) written for the old LLVM signature of
`llvm.x86.avx512.vpdpbusd.512` (i32 vectors); the LLVM inside the 0.27 wheel takes
`(<16 x i32>, <64 x i8>, <64 x i8>)` and rejects it ("Call parameter type does not match").
This is the same description with the operands in the new types.
"""
from __future__ import annotations

import re

from qcompiler.schedules.intrinsics import lane_dot_description
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

NAME = "qcompiler_dot_16x4_u8i8i32_vnni"


_desc = lane_dot_description(16, 4, "uint8")


@T.prim_func(s_tir=True)
def _impl(A: T.Buffer((4,), "uint8", offset_factor=1),
          B: T.Buffer((16, 4), "int8", offset_factor=1),
          C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        # One expression: a name bound here would become a local buffer, which TVM 0.27
        # allocates from the workspace pool on every iteration of the enclosing parallel loop.
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                          dtype="int8x64"),
            B.vload([0, 0], dtype="int8x64"), dtype="int32x16")


TensorIntrin.register(NAME, _desc, _impl, override=True)
VNNI_DOT_16x4_INTRIN = NAME


@T.prim_func(s_tir=True)
def _desc_columns(A: T.Buffer((16, 4), "uint8", offset_factor=1),
                  B: T.Buffer((4,), "int8", offset_factor=1),
                  C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:16, 0:4], B[0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")


@T.prim_func(s_tir=True)
def _impl_columns(A: T.Buffer((16, 4), "uint8", offset_factor=1),
                  B: T.Buffer((4,), "int8", offset_factor=1),
                  C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:16, 0:4], B[0:4])
        T.writes(C[0:16])
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            T.reinterpret(A.vload([0, 0], "uint8x64"), dtype="int8x64"),
            T.reinterpret(T.broadcast(T.reinterpret(B.vload([0], "int8x4"), dtype="int32"), 16),
                          dtype="int8x64"), dtype="int32x16")


# The same instruction the other way round: 16 lanes of 4 activation bytes each (16 output
# columns), one weight group of 4 bytes broadcast (one output channel).
COLUMNS_NAME = "qcompiler_dot_16x4_u8i8i32_vnni_columns"
TensorIntrin.register(COLUMNS_NAME, _desc_columns, _impl_columns, override=True)
VNNI_COLUMNS_INTRIN = COLUMNS_NAME


def _window_intrin(stride: int) -> str:
    """`C[i] += sum_k A[stride * i + k] * B[k]` (i < 16, k < 4): 16 outputs of a row, each
    the dot product of 4 consecutive taps with 4 weights, as one `vpdpbusd`. Each lane's 4
    activation bytes are gathered from one 64-byte load by `vpermd` (dwords to their 128-bit
    lane) and `vpshufb` (bytes within it): AVX-512 F/BW, which every VNNI CPU has.

    The load is masked to the `15 stride + 4` bytes the description covers (the rest read
    as 0): a plain 64-byte load read past them, into memory the kernel may not own: where
    `compute_at` compacts a padded row block to the bytes it declares, a small stack array,
    LLVM takes the load as undefined (wrong outputs: tests/fixtures/fuzz/dw_window_one_row).
    """
    name = f"qcompiler_window_16x4_s{stride}_u8i8i32_vnni"
    span = 15 * stride + 4

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((span,), "uint8", offset_factor=1),
             B: T.Buffer((4,), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:span], B[0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[stride * vi + vk], "int32") \
                            * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((span,), "uint8", offset_factor=1),
             B: T.Buffer((4,), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:span], B[0:4])
            T.writes(C[0:16])
            # (A's bytes seen through a plain buffer: TVM's match-buffer lowering refuses a
            # predicated read of a matched buffer)
            window = T.decl_buffer((span,), "uint8", data=A.data, elem_offset=A.elem_offset)
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.x86.avx512.pshuf.b.512"),
                    T.reinterpret(T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx512.permvar.si.512"),
                        T.reinterpret(T.masked_load(
                            "uint8x64", window, T.ramp(T.int32(0), 1, 64),
                            T.ramp(T.int32(0), 1, 64) < T.broadcast(T.int32(span), 64)),
                            dtype="int32x16"),
                        # dword d of lane d/4: source dword stride (d/4) + d%4
                        T.ramp(T.int32(0), 1, 16) // 4 * stride + T.ramp(T.int32(0), 1, 16) % 4,
                        dtype="int32x16"), dtype="int8x64"),
                    # byte b of a lane: output (b%16)/4 of it, tap b%4
                    (T.ramp(T.int32(0), 1, 64) % 16 // 4 * stride
                     + T.ramp(T.int32(0), 1, 64) % 4).astype("int8x64"),
                    dtype="int8x64"),
                T.reinterpret(T.broadcast(T.reinterpret(B.vload([0], "int8x4"), dtype="int32"),
                                          16), dtype="int8x64"),
                dtype="int32x16")

    TensorIntrin.register(name, desc, impl, override=True)
    return name


VNNI_WINDOW_INTRIN = {s: _window_intrin(s) for s in (1, 2)}


def register_named(name: str) -> None:
    """Register a window intrinsic of another stride from its name (as a tuning record names
    it, `intrinsics.register_named`); the others are registered on import."""
    m = re.fullmatch(r"qcompiler_window_16x4_s(\d+)_u8i8i32_vnni", name)
    if m is not None and int(m[1]) >= 1:
        _window_intrin(int(m[1]))


def _taps_intrin() -> str:
    """`C[c] += sum_k A[k, c] * B[c, k]` (c < 16, k < 4): 16 channel lanes of a blocked row
    (`schedules.blocked`: 4 consecutive pixels of 16 channels, one 64-byte load), each the dot
    product of its 4 pixels (taps) with 4 weights, as one `vpdpbusd`. The 4x16 bytes are
    transposed to 16x4 by `vpermd` (dword L of pixel k to lane L) and `vpshufb` (the 4x4
    bytes of a lane), AVX-512 F/BW."""
    name = "qcompiler_taps_4x16_u8i8i32_vnni"

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4, 16), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4, 0:16], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk, vi], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4, 16), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4, 0:16], B[0:16, 0:4])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.x86.avx512.pshuf.b.512"),
                    T.reinterpret(T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx512.permvar.si.512"),
                        T.reinterpret(A.vload([0, 0], "uint8x64"), dtype="int32x16"),
                        # dword k of lane L: pixel k's dword L
                        T.ramp(T.int32(0), 1, 16) % 4 * 4 + T.ramp(T.int32(0), 1, 16) // 4,
                        dtype="int32x16"), dtype="int8x64"),
                    # byte 4 i + k of a lane: pixel k's byte i
                    (T.ramp(T.int32(0), 1, 64) % 4 * 4
                     + T.ramp(T.int32(0), 1, 64) % 16 // 4).astype("int8x64"),
                    dtype="int8x64"),
                B.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register(name, desc, impl, override=True)
    return name


VNNI_TAPS_INTRIN = _taps_intrin()


def _taps_vbmi_intrin() -> str:
    """The taps intrinsic (`_taps_intrin`'s description) with the 4x16 transpose as one
    `vpermb` (AVX-512 VBMI): byte 4 c + k of the operand is pixel k's byte c. Both shuffles
    of the F/BW form run on one port, as does this one: a depthwise 3x3 was bound by them."""
    name = "qcompiler_taps_4x16_u8i8i32_vnni_vbmi"

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4, 16), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4, 0:16], B[0:16, 0:4])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.x86.avx512.permvar.qi.512"),
                    T.reinterpret(A.vload([0, 0], "uint8x64"), dtype="int8x64"),
                    (T.ramp(T.int32(0), 1, 64) % 4 * 16
                     + T.ramp(T.int32(0), 1, 64) // 4).astype("int8x64"),
                    dtype="int8x64"),
                B.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register(name, TensorIntrin.get(VNNI_TAPS_INTRIN).desc, impl, override=True)
    return name


VNNI_TAPS_VBMI_INTRIN = _taps_vbmi_intrin()
