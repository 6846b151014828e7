"""4-bit weights stored two per byte (`numerics.nibbles`): the packing round-trips, the kernels'
integer unpack equals numpy's, a 4-bit compile stays bit-exact in the TVM module and the C
library on every target, and its weight bytes are about half of an 8-bit compile's."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import compile_and_compare, cpu_has, make_model, save_calib, save_model
from onnx import helper
from support.qdq import weight_constants
from tvm import te

from qcompiler import kernels
from qcompiler.api import compile_only
from qcompiler.backend.emit import emit
from qcompiler.backend.runtime import StandaloneModel
from qcompiler.numerics import nibbles
from qcompiler.reference import Reference

WEIGHTED = ("conv2d", "dense", "conv2d_transpose")


@pytest.mark.parametrize("n", [1, 2, 15, 16, 29, 30])
def test_round_trip_every_value_odd_and_even_lengths(n, rng):
    w = rng.permutation(np.resize(np.arange(-7, 8, dtype=np.int8), max(n, 15)))[:n]
    if n >= 15:
        assert set(w.tolist()) == set(range(-7, 8))
    packed = nibbles.pack(w)
    assert packed.dtype == np.uint8 and packed.shape == ((n + 1) // 2,)
    np.testing.assert_array_equal(nibbles.unpack(packed, (n,)), w)


def test_layout_low_nibble_first_odd_count_padded_with_zero():
    """The documented order: element 2i in the low nibble, two's complement, pad 0."""
    packed = nibbles.pack(np.array([1, -2, -7], np.int8))
    assert packed.tolist() == [(1 & 0xF) | ((-2 & 0xF) << 4), -7 & 0xF]


def test_minus_eight_round_trips_and_wider_values_are_refused():
    w = np.array([[-8, 7], [0, -8]], np.int8)
    np.testing.assert_array_equal(nibbles.unpack(nibbles.pack(w), w.shape), w)
    for bad in (8, -9, 127):
        with pytest.raises(ValueError, match=r"^4-bit storage holds \[-8, 7\], got values in"):
            nibbles.pack(np.array([0, bad], np.int8))
    with pytest.raises(ValueError, match=r"^2 bytes of uint8 do not hold 5 nibbles$"):
        nibbles.unpack(np.zeros(2, np.uint8), (5,))


@pytest.mark.parametrize("shape", [(3, 5, 3, 3), (7,), (1,), (2, 4, 16, 4)])
def test_kernel_unpack_stage_equals_numpy(shape, rng):
    """The stage every nibble kernel starts with, scheduled as in the kernels, compiled,
    against `nibbles.unpack` (odd counts: the last pair's second weight is out of bounds)."""
    w = rng.integers(-8, 8, shape).astype(np.int8)
    packed, read = kernels.weight_operand(shape, nibbles.storage_attrs(shape))
    sch = tvm.s_tir.Schedule(te.create_prim_func([packed, read]))
    kernels.unpack_in_pairs(sch, "w_unpack")
    func = tvm.compile(sch.mod["main"], target="llvm")
    out = tvm.runtime.tensor(np.zeros(shape, np.int8))
    func(tvm.runtime.tensor(nibbles.pack(w)), out)
    np.testing.assert_array_equal(out.numpy(), w)


def mixed_layers(rng: np.random.Generator, cin: int = 5, width: int = 7) -> tuple:
    """conv 3x3 -> ReLU -> depthwise 3x3 -> ConvTranspose 2x2/2 -> dilated ConvTranspose 3x3
    -> flatten -> gemm: every weighted kernel (dot-product conv and dense, portable depthwise,
    the strided transposed conv as the conv of its phases, the dilated one zero-inserted),
    with odd weight counts (315, 63, 81) so a padding nibble is in play."""
    inits = {"w": rng.standard_normal((width, cin, 3, 3)) * 0.3,
             "b": rng.standard_normal(width) * 0.1,
             "wd": rng.standard_normal((width, 1, 3, 3)) * 0.3,
             "wt": rng.standard_normal((width, 3, 2, 2)) * 0.3,
             "wu": rng.standard_normal((3, 3, 3, 3)) * 0.3,
             "wg": rng.standard_normal((6, 3 * 8 * 8)) * 0.1, "bg": rng.standard_normal(6)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "wd"], ["d"], kernel_shape=[3, 3], pads=[1] * 4,
                              group=width),
             helper.make_node("ConvTranspose", ["d", "wt"], ["t"], strides=[2, 2]),
             helper.make_node("ConvTranspose", ["t", "wu"], ["u"], dilations=[2, 2],
                              pads=[2] * 4),
             helper.make_node("Flatten", ["u"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    model = make_model(nodes, {"x": ("N", cin, 4, 4)}, {"y": None}, inits)
    return model, {"x": rng.standard_normal((8, cin, 4, 4)).astype(np.float32)}


@pytest.mark.parametrize("schedules", [True, False], ids=["vnni", "portable"])
def test_4bit_compile_stores_nibbles_bit_exact(schedules, tmp_path, rng):
    """Through the TVM module (compile_and_compare) and the runtime-free C library."""
    if schedules and not cpu_has("avx512_vnni"):  # this machine's x86 build has no dot product
        pytest.skip("this CPU has no avx512_vnni: the native x86 build has no dot-product "
                    "kernels to unpack nibbles in (arm and hexagon cases cover them here)")
    model, calib = mixed_layers(rng)
    compiled, _ = compile_and_compare(model, tmp_path, calib, weight_bits=4,
                                      schedules=schedules)
    ops = weight_constants(compiled, WEIGHTED)
    assert [op for op, _, _ in ops] == ["conv2d", "conv2d", "conv2d", "conv2d_transpose",
                                        "dense"]
    assert ("packed_lanes" in ops[0][1]) == schedules
    for _, attrs, w in ops:
        assert attrs["weight_storage"] == "int4x2"
        assert w.dtype == np.uint8
        assert w.shape == ((int(np.prod(attrs["nibble_shape"])) + 1) // 2,)
    assert any(int(np.prod(a["nibble_shape"])) % 2 for _, a, _ in ops)  # a padding nibble
    c_lib, ref = StandaloneModel(tmp_path / "out"), Reference(compiled.quantized)
    spec = c_lib.inputs[0]
    for _ in range(2):
        q = rng.integers(0, 256, spec["shape"]).astype(spec["dtype"])
        np.testing.assert_array_equal(c_lib.run_int(q)[0], ref.run(q)[0])


def test_4bit_weights_take_about_half_the_bytes(tmp_path, rng):
    """A model whose weights dominate its constants: the library's weight bytes (and the
    blob they come from) shrink below 0.6x of the 8-bit compile's."""
    inits = {"w1": rng.standard_normal((64, 32, 3, 3)) * 0.1,
             "w2": rng.standard_normal((64, 64, 3, 3)) * 0.1,
             "wg": rng.standard_normal((16, 64 * 4 * 4)) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Flatten", ["c2"], ["f"]),
             helper.make_node("Gemm", ["f", "wg"], ["y"], transB=1)]
    model = make_model(nodes, {"x": ("N", 32, 4, 4)}, {"y": None}, inits)
    calib = {"x": rng.standard_normal((4, 32, 4, 4)).astype(np.float32)}
    sizes = {}
    for bits in (8, 4):
        (tmp_path / str(bits)).mkdir()
        _, lib = compile_and_compare(model, tmp_path / str(bits), calib, n_checks=1,
                                     weight_bits=bits)
        sizes[bits] = lib.meta["standalone"]["weights_bytes"]
    assert sizes[4] < 0.6 * sizes[8], sizes


@pytest.mark.parametrize("target", ["arm", "hexagon"])
def test_4bit_bit_exact_under_qemu(target, tmp_path, rng):
    """sdot and vrmpy kernels on nibble-stored weights, run under qemu."""
    model, calib = mixed_layers(rng)
    compiled = compile_only(save_model(model, tmp_path), save_calib(calib, tmp_path),
                            tmp_path / "out", target=target, weight_bits=4)
    emit(compiled, None, tmp_path / "out")
    ops = weight_constants(compiled, WEIGHTED)
    assert "packed_lanes" in ops[0][1] and all(w.dtype == np.uint8 for _, _, w in ops)
    lib, ref = StandaloneModel(tmp_path / "out"), Reference(compiled.quantized)
    spec = lib.inputs[0]
    lo, hi = np.iinfo(spec["dtype"]).min, np.iinfo(spec["dtype"]).max
    q = rng.integers(lo, hi + 1, spec["shape"]).astype(spec["dtype"])
    np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])
