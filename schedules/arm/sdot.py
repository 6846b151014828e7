"""`sdot` (the AArch64 dot-product extension, s8 x s8 -> s32, 4 lanes x 4) as a tensor
intrinsic with no named temporaries and its operands' alignment declared.

TVM's `ARM_DOT_4x4_i8_SDOT_INTRIN` binds five names in its implementation (the activation
word, its broadcast, the weights, the accumulator...); in TVM 0.27 each became a buffer of its
own, and the compiled kernels asked the runtime for workspace around every tensorized call
(mobilenet_v3_small at 64x64: 15% of all instructions executed were the library's allocator).
This is the same description and instruction in one expression. In the packed kernels the 4
activation bytes are one aligned word (`x_packed[.., 0:4]`), the weights one 16-byte block
and the accumulator 4 aligned words.
"""
from __future__ import annotations

from qcompiler.schedules.intrinsics import lane_dot_description
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

NAME = "qcompiler_dot_4x4_i8i8i32_sdot"


_desc = lane_dot_description(4, 4, "int8", (4, 16, 4))


@T.prim_func(s_tir=True)
def _impl(A: T.Buffer((4,), "int8", offset_factor=4),
          B: T.Buffer((4, 4), "int8", offset_factor=16),
          C: T.Buffer((4,), "int32", offset_factor=4)) -> None:
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([0], dtype="int32x4"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4),
                          dtype="int8x16"),
            B.vload([0, 0], dtype="int8x16"), dtype="int32x4")


TensorIntrin.register(NAME, _desc, _impl, override=True)
SDOT_INTRIN = NAME


# Four output columns at once: their activations, adjacent in the packed input, are one
# 16-byte load, and each `sdot` takes its column's word by lane index (`sdot v.4s, w.16b,
# x.4b[c]`: the weights first, the indexed operand second, or LLVM broadcasts each word with
# a `dup`). Against one column a call (an `ld1r` and an address per `sdot`), a 3x3 conv
# 16 -> 32 channels at 16x16: 204,721 -> 132,657 instructions under qemu-aarch64.
COLUMNS = 4
COLUMNS_NAME = "qcompiler_dot_4x4_i8i8i32_sdot_4col"


@T.prim_func(s_tir=True)
def _columns_desc(A: T.Buffer((4, 4), "int8", offset_factor=4),
                  B: T.Buffer((4, 4), "int8", offset_factor=16),
                  C: T.Buffer((4, 4), "int32", offset_factor=4)) -> None:
    with T.sblock("root"):
        T.reads(C[0:4, 0:4], A[0:4, 0:4], B[0:4, 0:4])
        T.writes(C[0:4, 0:4])
        for c, i, k in T.grid(4, 4, 4):
            with T.sblock("update"):
                vc, vi, vk = T.axis.remap("SSR", [c, i, k])
                C[vc, vi] = C[vc, vi] + T.cast(A[vc, vk], "int32") * T.cast(B[vi, vk], "int32")


def _column_sdot(c: int):
    @T.macro
    def body(A, B, C):
        C[c, T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([c, 0], dtype="int32x4"), B.vload([0, 0], dtype="int8x16"),
            T.reinterpret(T.Shuffle([T.reinterpret(A.vload([0, 0], "int8x16"),
                                                   dtype="int32x4")], [c, c, c, c]),
                          dtype="int8x16"),
            dtype="int32x4")

    return body


_sdot0, _sdot1, _sdot2, _sdot3 = (_column_sdot(c) for c in range(COLUMNS))


@T.prim_func(s_tir=True)
def _columns_impl(A: T.Buffer((4, 4), "int8", offset_factor=4),
                  B: T.Buffer((4, 4), "int8", offset_factor=16),
                  C: T.Buffer((4, 4), "int32", offset_factor=4)) -> None:
    with T.sblock("root"):
        T.reads(C[0:4, 0:4], A[0:4, 0:4], B[0:4, 0:4])
        T.writes(C[0:4, 0:4])
        _sdot0(A, B, C)
        _sdot1(A, B, C)
        _sdot2(A, B, C)
        _sdot3(A, B, C)


TensorIntrin.register(COLUMNS_NAME, _columns_desc, _columns_impl, override=True)
SDOT_COLUMNS_INTRIN = COLUMNS_NAME
