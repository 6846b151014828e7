"""`vrmpy` (HVX, u8 x s8 -> s32, 32 lanes x 4) as a tensor intrinsic that knows its operands'
alignment.

TVM's `VRMPY_u8i8i32_INTRIN` declares every operand with `offset_factor=1`, so LLVM must
assume the 4 activation bytes broadcast to the lanes are unaligned and assembles them from
four byte loads, shifts and ors before each `vsplat`: more packets than the `vrmpy` itself.
In the packed kernels the 4 bytes are always one aligned word (`x_packed[.., 0:4]`), the
weights one 128-byte block and the accumulator 32 aligned words; this is the same
description and implementation with those offsets declared, the word read as one int32, and
no named temporaries (each became a workspace allocation per parallel task).
"""
from __future__ import annotations

from qcompiler.schedules.intrinsics import lane_dot_description
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

NAME = "qcompiler_dot_32x4_u8i8i32_vrmpy_aligned"


_desc = lane_dot_description(32, 4, "uint8", (4, 128, 32))


@T.prim_func(s_tir=True)
def _impl(A: T.Buffer((4,), "uint8", offset_factor=4),
          B: T.Buffer((32, 4), "int8", offset_factor=128),
          C: T.Buffer((32,), "int32", offset_factor=32)) -> None:
    with T.sblock("root"):
        T.reads(C[0:32], A[0:4], B[0:32, 0:4])
        T.writes(C[0:32])
        a_word = T.decl_buffer((1,), "int32", data=A.data, elem_offset=A.elem_offset // 4)
        C[T.ramp(T.int32(0), 1, 32)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.hexagon.V6.vrmpybusv.acc.128B"),
            C[T.ramp(T.int32(0), 1, 32)], T.broadcast(a_word[0], 32),
            T.reinterpret(B.vload([0, 0], dtype="int8x128"), dtype="int32x32"),
            dtype="int32x32")


TensorIntrin.register(NAME, _desc, _impl, override=True)
VRMPY_ALIGNED_INTRIN = NAME
