"""`vpmaddwd` (AVX2, int16 x int16 -> int32 pair sums, 8 lanes x 2) as a TVM tensor intrinsic:
the exact int8 dot product of CPUs without VNNI.

AVX2's byte instruction `vpmaddubsw` (u8 x s8) saturates its 16-bit pair sums (255 * 127 * 2
does not fit), which ONNX Runtime and oneDNN accept or work around by halving the weights;
neither is our numeric contract. Widened to 16 bits first, the pair sum is exact: the kernel
packs activations as int16 pairs (zero point in the padding), the weights stay int8 in memory
and are sign-extended by the intrinsic (`vpmovsxbw`).

    C[i] += A[0] * B[i, 0] + A[1] * B[i, 1]      (i < 8; one activation pair broadcast)
"""
from __future__ import annotations

from qcompiler.schedules.intrinsics import lane_dot_description
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

NAME = "qcompiler_dot_8x2_i16i8i32_avx2"


_desc = lane_dot_description(8, 2, "int16")


@T.prim_func(s_tir=True)
def _impl(A: T.Buffer((2,), "int16", offset_factor=1),
          B: T.Buffer((8, 2), "int8", offset_factor=1),
          C: T.Buffer((8,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        # One expression (a bound name would become a workspace buffer: see `vnni`).
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8),
                          dtype="int16x16"),
            T.cast(B.vload([0, 0], dtype="int8x16"), "int16x16"), dtype="int32x8")


TensorIntrin.register(NAME, _desc, _impl, override=True)
AVX2_DOT_8x2_INTRIN = NAME
