"""Elementwise ops: table activations, PRelu and Mul alone in a graph, bit for bit against the
reference, compiled as integer kernels; a MobileNetV3-style block; and the tables against the
float op."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import compile_and_compare, make_model
from onnx import helper
from onnx.reference import ReferenceEvaluator

from qcompiler.relax_access import bindings

TABLE_CASES = [
    # (op type, ONNX attributes, meta op name)
    ("Sigmoid", {}, "sigmoid"),
    ("Tanh", {}, "tanh"),
    ("HardSigmoid", {}, "hardsigmoid"),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.6}, "hardsigmoid"),
    ("HardSwish", {}, "hardswish"),
    ("LeakyRelu", {}, "leakyrelu"),
    ("LeakyRelu", {"alpha": 0.2}, "leakyrelu"),
    ("LeakyRelu", {"alpha": 1.7}, "leakyrelu"),
]
SHAPES = [(2, 5, 7, 7), (1, 3, 4, 6), (2, 13)]


def _ops(lib) -> list[tuple[str, str]]:
    return [(x["op"], x["status"]) for x in lib.meta["layers"]]


def _one_op(op: str, attrs: dict, shape: tuple, inits: dict | None = None, extra: tuple = ()):
    node = helper.make_node(op, ["x", *extra], ["y"], **attrs)
    return make_model([node], {"x": shape}, {"y": None}, inits)


def _calib(rng, shape: tuple, scale: float = 2.0) -> dict[str, np.ndarray]:
    return {"x": (rng.standard_normal((8, *shape[1:])) * scale).astype(np.float32)}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", TABLE_CASES, ids=lambda c: c[0] + "".join(
    f"_{k}{v}" for k, v in c[1].items()))
def test_table_activation(case, shape, tmp_path, rng):
    op, attrs, name = case
    model = _one_op(op, attrs, shape)
    _, lib = compile_and_compare(model, tmp_path, _calib(rng, shape), batch=shape[0])
    assert _ops(lib) == [(name, "integer")]


@pytest.mark.parametrize("slope_shape,shape", [((5, 1, 1), (2, 5, 6, 6)), ((1,), (1, 3, 5, 5)),
                                               ((7,), (2, 7))])
def test_prelu(slope_shape, shape, tmp_path, rng):
    slope = rng.uniform(-1.5, 1.5, slope_shape).astype(np.float32)
    model = _one_op("PRelu", {}, shape, {"slope": slope}, ("slope",))
    _, lib = compile_and_compare(model, tmp_path, _calib(rng, shape), batch=shape[0])
    assert _ops(lib) == [("prelu", "integer")]


@pytest.mark.parametrize("const_shape,per_channel", [((), True), ((6, 1, 1), True),
                                                     ((6, 1, 1), False), ((6, 5, 5), True),
                                                     ((1, 6, 1, 1), True)])
def test_mul_constant(const_shape, per_channel, tmp_path, rng):
    k = rng.uniform(-3, 3, const_shape).astype(np.float32)
    model = _one_op("Mul", {}, (2, 6, 5, 5), {"k": k}, ("k",))
    compiled, lib = compile_and_compare(model, tmp_path, _calib(rng, (2, 6, 5, 5)), batch=2,
                                        per_channel=per_channel)
    assert _ops(lib) == [("multiply", "integer")]
    k_q, m0 = _kernel_constants(compiled.quantized, "mul")[:2]
    assert k_q.dtype == np.int8 and np.abs(k_q).max() == 127
    # One multiplier per channel for a per-channel constant, else one for the tensor.
    assert m0.size == (6 if per_channel and const_shape in ((6, 1, 1), (1, 6, 1, 1)) else 1)


@pytest.mark.parametrize("op,const_shape,const_first", [
    ("Add", (2, 6, 5, 5), False),  # a constant per element (a detector's cell grid)
    ("Add", (1, 1, 5, 5), True),   # broadcast over batch and channels, written first
    ("Sub", (6, 5, 5), False),
], ids=["add", "add-first", "sub"])
def test_add_of_a_constant_per_element(op, const_shape, const_first, tmp_path, rng):
    """No table row per channel holds it: the constant is an 8-bit tensor of its own range
    and the two-tensor add runs, bit-exact; within 1 LSB of the output, plus half the
    constant's step, of the float op on the dequantized input."""
    c = (rng.uniform(-20, 60, const_shape)).astype(np.float32)
    shape = (2, 6, 5, 5)
    operands = ["c", "x"] if const_first else ["x", "c"]
    model = make_model([helper.make_node(op, operands, ["y"])], {"x": shape}, {"y": None},
                       {"c": c})
    compiled, lib = compile_and_compare(model, tmp_path, _calib(rng, shape), batch=2)
    assert [status for _, status in _ops(lib)] == ["integer"]
    (c_q,) = _kernel_constants(compiled.quantized, "add")
    assert c_q.dtype == np.uint8 and c_q.shape == shape and c_q.max() == 255
    x = (rng.standard_normal(shape) * 1.5).astype(np.float32)
    (q,) = lib.quantize_inputs(x)
    sx, zx = lib.inputs[0]["scale"], lib.inputs[0]["zero_point"]
    x_deq = (q.astype(np.int32) - zx).astype(np.float32) * np.float32(sx)
    (want,) = ReferenceEvaluator(model).run(None, {"x": x_deq})
    c_step = (c.max() - min(c.min(), 0)) / 255
    err = np.abs(lib.run(x_deq)[0].astype(np.float64) - want)
    assert err.max() <= lib.outputs[0]["scale"] + c_step / 2


def _kernel_constants(mod, op: str) -> list[np.ndarray]:
    """The constant operands of the (single) call of kernel `op` in `main_int`."""
    from qcompiler.relax_access import const_array, is_tensor_const

    for b in bindings(mod["main_int"]):
        if "call_tir" in str(getattr(b.value, "op", "")) \
                and str(mod[b.value.args[0]].attrs["qcompiler.op"]) == op:
            return [const_array(a) for a in b.value.args[1].fields if is_tensor_const(a)]
    raise AssertionError(f"no {op} kernel in main_int")


def _producer(rng, name: str, src: str, out_shape: tuple, k: int = 1) -> tuple[list, dict]:
    """A conv (4-D) or Gemm (2-D) from src to `out_shape` channels/features (1 for a
    broadcasting operand), so that both Mul operands are tensors of one single-input graph."""
    if len(out_shape) == 2:
        return [helper.make_node("Gemm", [src, f"{name}_w"], [name], transB=1)], \
            {f"{name}_w": rng.standard_normal((out_shape[1], 6))}
    return [helper.make_node("Conv", [src, f"{name}_w"], [name], kernel_shape=[k, k],
                             pads=[k // 2] * 4)], \
        {f"{name}_w": rng.standard_normal((out_shape[1], 3, k, k)) * 0.5}


@pytest.mark.parametrize("a_shape,b_shape,gap_b", [
    ((2, 5, 5, 5), (2, 5, 1, 1), True),    # squeeze-excitation: x[N,C,H,W] * g[N,C,1,1]
    ((2, 1, 5, 5), (2, 4, 1, 1), True),    # both operands broadcast
    ((2, 4, 5, 5), (2, 4, 5, 5), False),   # same shape
    ((2, 4), (2, 1), False),               # 2-D, a column
], ids=["se", "both", "same", "2d"])
@pytest.mark.parametrize("swap", [False, True])
def test_mul_tensors_broadcast(a_shape, b_shape, gap_b, swap, tmp_path, rng):
    x_shape = (2, 6) if len(a_shape) == 2 else (2, 3, 5, 5)
    nodes, inits = _producer(rng, "a", "x", a_shape)
    more, more_inits = _producer(rng, "b0" if gap_b else "b", "x", b_shape, k=3)
    nodes, inits = nodes + more, {**inits, **more_inits}
    if gap_b:
        nodes.append(helper.make_node("GlobalAveragePool", ["b0"], ["b"]))
    nodes.append(helper.make_node("Mul", ["b", "a"] if swap else ["a", "b"], ["y"]))
    model = make_model(nodes, {"x": x_shape}, {"y": None}, inits)
    _, lib = compile_and_compare(model, tmp_path, _calib(rng, x_shape), batch=2)
    ops = _ops(lib)
    assert ops[-1] == ("multiply", "integer") and all(s == "integer" for _, s in ops)
    assert lib.outputs[0]["shape"] == list(np.broadcast_shapes(a_shape, b_shape))


def test_squeeze_excitation_gate(tmp_path, rng):
    """x * HardSigmoid(conv(GAP(x))): the gate is a tensor of shape (N, C, 1, 1)."""
    c = 5
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["s"]),
             helper.make_node("Conv", ["s", "w", "b"], ["z"], kernel_shape=[1, 1]),
             helper.make_node("HardSigmoid", ["z"], ["g"]),
             helper.make_node("Mul", ["x", "g"], ["y"])]
    inits = {"w": rng.standard_normal((c, c, 1, 1)), "b": rng.standard_normal(c)}
    model = make_model(nodes, {"x": ("N", c, 6, 6)}, {"y": None}, inits)
    _, lib = compile_and_compare(model, tmp_path, _calib(rng, (2, c, 6, 6)), batch=2)
    # HardSigmoid after a conv is `clip(alpha conv + beta, 0, 1)`: fold_channel_affine moves
    # alpha and beta into the conv's weights and bias, the clip becomes its clamp.
    assert _ops(lib) == [("mean", "integer"), ("conv2d", "integer"), ("multiply", "integer")]


def _conv_bn(rng, name: str, src: str, cin: int, cout: int, k: int, stride: int = 1,
             group: int = 1) -> tuple[list, dict]:
    """Conv (no bias) -> BatchNormalization, as exported from a trained network."""
    inits = {f"{name}_w": rng.standard_normal((cout, cin // group, k, k)) * 0.4,
             f"{name}_g": rng.uniform(0.5, 1.5, cout), f"{name}_b": rng.standard_normal(cout) * .1,
             f"{name}_m": rng.standard_normal(cout) * 0.1, f"{name}_v": rng.uniform(0.5, 2, cout)}
    nodes = [helper.make_node("Conv", [src, f"{name}_w"], [f"{name}_c"], kernel_shape=[k, k],
                              strides=[stride] * 2, pads=[k // 2] * 4, group=group),
             helper.make_node("BatchNormalization", [f"{name}_c", f"{name}_g", f"{name}_b",
                                                     f"{name}_m", f"{name}_v"], [name])]
    return nodes, inits


def _mobilenet_v3_block(rng):
    """Stem, inverted residual with depthwise conv and squeeze-excitation, classifier."""
    nodes, inits = [], {}
    for args in (("stem", "x", 3, 8, 3, 2), ("exp", "a", 8, 16, 1), ("dw", "e", 16, 16, 3, 1, 16),
                 ("proj", "se", 16, 8, 1)):
        n, i = _conv_bn(rng, *args)
        nodes += n
        inits.update(i)
    hs = [helper.make_node("HardSwish", [src], [dst]) for src, dst in
          (("stem", "a"), ("exp", "e"), ("dw", "d"))]
    se = [helper.make_node("GlobalAveragePool", ["d"], ["sq"]),
          helper.make_node("Conv", ["sq", "se1_w", "se1_b"], ["se1"], kernel_shape=[1, 1]),
          helper.make_node("Relu", ["se1"], ["se1r"]),
          helper.make_node("Conv", ["se1r", "se2_w", "se2_b"], ["se2"], kernel_shape=[1, 1]),
          helper.make_node("HardSigmoid", ["se2"], ["gate"], alpha=1 / 6),
          helper.make_node("Mul", ["d", "gate"], ["se"])]
    inits.update({"se1_w": rng.standard_normal((4, 16, 1, 1)) * 0.3,
                  "se1_b": rng.standard_normal(4) * 0.1,
                  "se2_w": rng.standard_normal((16, 4, 1, 1)) * 0.3,
                  "se2_b": rng.standard_normal(16) * 0.1,
                  "fc_w": rng.standard_normal((10, 8)) * 0.5, "fc_b": rng.standard_normal(10)})
    head = [helper.make_node("Add", ["proj", "a"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["y"])]
    # Topological order: stem, exp, dw each followed by their HardSwish.
    order = nodes[0:2] + hs[0:1] + nodes[2:4] + hs[1:2] + nodes[4:6] + hs[2:3] + se \
        + nodes[6:8] + head
    return make_model(order, {"x": ("N", 3, 16, 16)}, {"y": None}, inits)


@pytest.mark.parametrize("batch", [1, 2])
def test_mobilenet_v3_block_all_integer_but_softmax(batch, tmp_path, rng):
    model = _mobilenet_v3_block(rng)
    calib = {"x": rng.standard_normal((8, 3, 16, 16)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib, batch=batch)
    ops = _ops(lib)
    assert [op for op, status in ops if status == "float"] == ["nn.softmax"]
    names = [op for op, _ in ops]
    # The gate's HardSigmoid folds into the conv before it (see test_squeeze_excitation_gate).
    assert names.count("hardswish") == 3 and names.count("conv2d") == 6
    assert "multiply" in names and "add" in names


def _build_and_run(func, *args: np.ndarray, out_shape: tuple, out_dtype: str) -> np.ndarray:
    import tvm

    mod = tvm.tirx.build(tvm.IRModule({"main": func}), tvm.target.Target({"kind": "llvm"}))
    y = tvm.runtime.tensor(np.zeros(out_shape, out_dtype))
    mod["main"](*[tvm.runtime.tensor(a) for a in args], y)
    return y.numpy()


@pytest.mark.parametrize("fn,channel_params", [("tanh", [{}]),
                                               ("prelu", [{"alpha": 0.25}, {"alpha": -0.5}])])
def test_int16_table_kernel(fn, channel_params, rng):
    """16-bit inputs (no target uses them yet) get 65,536-entry tables, same kernel."""
    from qcompiler import kernels, reference
    from qcompiler.numerics import lut
    from qcompiler.numerics.qparams import QParams

    attrs = lut.lut_attrs(fn, channel_params, 1, QParams(3e-4, 17, "int16"),
                          QParams(1 / 30000, -5, "int16"))
    table = lut.tables(attrs)
    assert table.shape == (len(channel_params), 65536)
    x = rng.integers(-32768, 32768, (3, len(channel_params), 50)).astype(np.int16)
    x[0, 0, :2] = [-32768, 32767]
    got = _build_and_run(kernels.lut(x.shape, "int16", table.shape, attrs), x, table,
                         out_shape=x.shape, out_dtype="int16")
    np.testing.assert_array_equal(got, reference.lut(x, table, attrs))


def test_mul_kernel_broadcasts_a_lower_rank_operand(rng):
    """b of rank 3 against a of rank 4 (right-aligned, as numpy): the graph never builds this
    today (constants are reshaped to full rank), the kernel and the reference still agree."""
    from qcompiler import kernels, reference

    attrs = {"zp_a": 7, "zp_b": -3, "zp_y": 2, "lo": -128, "hi": 127, "out_dtype": "int8"}
    a = rng.integers(-128, 128, (2, 3, 4, 4)).astype(np.int8)
    b = rng.integers(-128, 128, (3, 1, 4)).astype(np.int8)
    m0, shift = np.array([[[1 << 30]]], np.int32), np.array([[[-7]]], np.int32)
    func = kernels.mul(a.shape, a.shape, "int8", b.shape, "int8", m0.shape, attrs)
    got = _build_and_run(func, a, b, m0, shift, out_shape=a.shape, out_dtype="int8")
    np.testing.assert_array_equal(got, reference.mul(a, b, m0, shift, attrs))
    assert len(np.unique(got)) > 20  # not saturated to a constant


SANITY_CASES = TABLE_CASES + [("PRelu", {}, "prelu"), ("Mul", {}, "multiply")]


@pytest.mark.parametrize("case", SANITY_CASES, ids=lambda c: c[0] + "".join(
    f"_{k}{v}" for k, v in c[1].items()))
def test_integer_op_within_half_lsb_of_float_op(case, tmp_path, rng):
    """Dequantized output vs the float ONNX op (onnx.reference, independent of qcompiler) on the
    dequantized input: a table entry, or Mul's product, is rounded once, so the error is at
    most 1/2 LSB of the output (+ float32 noise) wherever the result is inside the output
    range; an entry off by one LSB fails."""
    op, attrs, _ = case
    shape = (1, 4, 8, 8)
    inits, extra = {}, ()
    if op == "PRelu":
        inits, extra = {"slope": np.array([-0.7, 0.1, 0.5, 1.3]).reshape(4, 1, 1)}, ("slope",)
    if op == "Mul":
        extra = ("x",)  # x * x: tensor x tensor
    model = _one_op(op, attrs, shape, inits, extra)
    _, lib = compile_and_compare(model, tmp_path, _calib(rng, shape, 3.0), n_checks=1)
    x = np.linspace(-8, 8, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    (q,) = lib.quantize_inputs(x)
    sx, zx = lib.inputs[0]["scale"], lib.inputs[0]["zero_point"]
    x_deq = (q.astype(np.int32) - zx).astype(np.float32) * np.float32(sx)
    got = lib.run(x_deq)[0].astype(np.float64)
    (want,) = ReferenceEvaluator(model).run(None, {"x": x_deq})
    spec = lib.outputs[0]
    lo, hi = (np.array([0, 255]) if spec["dtype"] == "uint8" else np.array([-128, 127]))
    lo, hi = (lo - spec["zero_point"]) * spec["scale"], (hi - spec["zero_point"]) * spec["scale"]
    inside = (want >= lo) & (want <= hi)
    assert inside.mean() > 0.5  # the check covers most of the range
    err = np.abs(got - want.astype(np.float64))[inside]
    assert err.max() <= 0.5 * spec["scale"] * (1 + 1e-4) + 1e-6


def _every_elementwise_op(rng):
    """conv -> each table op -> Mul by a per-channel constant -> Mul by its own GAP."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("HardSwish", ["c"], ["h"]),
             helper.make_node("PRelu", ["h", "slope"], ["p"]),
             helper.make_node("LeakyRelu", ["p"], ["l"], alpha=0.2),
             helper.make_node("Tanh", ["l"], ["t"]),
             helper.make_node("Mul", ["t", "k"], ["m"]),
             helper.make_node("GlobalAveragePool", ["m"], ["g"]),
             helper.make_node("HardSigmoid", ["g"], ["hs"]),
             helper.make_node("Mul", ["m", "hs"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["y"])]
    inits = {"w": rng.standard_normal((5, 3, 3, 3)), "slope": rng.uniform(-1, 1, (5, 1, 1)),
             "k": rng.uniform(-2, 2, (5, 1, 1))}
    return make_model(nodes, {"x": (1, 3, 7, 7)}, {"y": None}, inits)


@pytest.mark.parametrize("target", ["x86", "arm", "hexagon"])
def test_c_library_matches_reference(target, tmp_path, rng):
    """The runtime-free C library, natively or in qemu; int8 activations (arm) index the tables
    from -128."""
    from qcompiler.api import compile_only, write_outputs
    from qcompiler.backend.runtime import StandaloneModel
    from qcompiler.numerics.qparams import dtype_range
    from qcompiler.reference import Reference

    mpath, cpath = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx_model = _every_elementwise_op(rng)
    mpath.write_bytes(onnx_model.SerializeToString())
    np.savez(cpath, x=rng.standard_normal((8, 3, 7, 7)).astype(np.float32))
    compiled = compile_only(mpath, cpath, tmp_path / "out", target=target)
    write_outputs(compiled, tmp_path / "out")
    lib = StandaloneModel(tmp_path / "out")
    assert all(x["status"] == "integer" for x in lib.meta["layers"])
    spec = lib.inputs[0]
    assert spec["dtype"] == {"x86": "uint8", "arm": "int8", "hexagon": "uint8"}[target]
    lo, hi = dtype_range(spec["dtype"])
    ref = Reference(compiled.quantized)
    for _ in range(2):
        q = rng.integers(lo, hi + 1, spec["shape"]).astype(spec["dtype"])
        np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])


def test_prelu_with_a_slope_per_element_is_a_one_line_error(tmp_path, rng):
    from qcompiler.errors import UnsupportedModelError
    from qcompiler.frontend.onnx_import import check_supported

    model = _one_op("PRelu", {}, (1, 3, 4, 4), {"slope": rng.uniform(0, 1, (3, 4, 4))},
                    ("slope",))
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(model)
    assert str(err.value) == ("unsupported: attribute y (PRelu): slope shape [3, 4, 4] "
                              "(qcompiler takes one slope per channel or one for all)")


# ---- elementwise chains on one tensor: one table each (`passes.fuse_elementwise`) ---------

def _c(name: str, value: float) -> tuple[str, np.ndarray]:
    return name, np.array(value, np.float32)


def _chain(spec: list[tuple], consts: dict) -> list:
    """ONNX nodes from (op, inputs, output[, attributes]); constants as initializers."""
    return [helper.make_node(op, list(ins), [out], **(rest[0] if rest else {}))
            for op, ins, out, *rest in spec]


# (id, nodes, constants, opset, the summary's op)
CHAINS = [
    ("hardswish_div_last", [("Add", "x3", "a"), ("Clip", ("a", "zero", "six"), "c"),
                            ("Mul", "xc", "m"), ("Div", ("m", "six"), "y")],
     {"three": 3.0, "zero": 0.0, "six": 6.0}, 17, "elementwise(add,clip,multiply,divide)"),
    ("hardsigmoid_written_out", [("Add", "x3", "a"), ("Clip", ("a", "zero", "six"), "c"),
                                 ("Div", ("c", "six"), "y")],
     {"three": 3.0, "zero": 0.0, "six": 6.0}, 17, "elementwise(add,clip,divide)"),
    ("silu", [("Sigmoid", ("x",), "s"), ("Mul", ("x", "s"), "y")], {}, 17,
     "elementwise(sigmoid,multiply)"),
    ("mish_op", [("Mish", ("x",), "y")], {}, 18, "elementwise(exp,add,log,tanh,multiply)"),
    ("mish_softplus", [("Softplus", ("x",), "p"), ("Tanh", ("p",), "t"),
                       ("Mul", ("x", "t"), "y")], {}, 17, None),
    ("gelu_erf", [("Div", ("x", "sqrt2"), "d"), ("Erf", ("d",), "e"),
                  ("Add", ("e", "one"), "p"), ("Mul", ("x", "p"), "m"),
                  ("Mul", ("m", "half"), "y")],
     {"sqrt2": np.sqrt(2.0), "one": 1.0, "half": 0.5}, 17,
     "elementwise(divide,erf,add,multiply,multiply)"),
    ("gelu_tanh_op", [("Gelu", ("x",), "y", {"approximate": "tanh"})], {}, 20,
     "elementwise(gelu_tanh)"),
    ("affine_scalars", [("Sub", ("x", "half"), "s"), ("Div", ("s", "quarter"), "d"),
                        ("Add", ("d", "one"), "y")],
     {"half": 0.5, "quarter": 0.25, "one": 1.0}, 17, "elementwise(subtract,divide,add)"),
    ("pow_exp", [("Pow", ("x", "two"), "p"), ("Neg", ("p",), "n"), ("Exp", ("n",), "y")],
     {"two": 2.0}, 17, "elementwise(power,negative,exp)"),
    ("elu", [("Elu", ("x",), "y", {"alpha": 0.7})], {}, 17, None),
    ("per_channel", [("Exp", ("x",), "e"), ("Mul", ("e", "k"), "y")],
     {"k": np.array([0.5, -1.0, 2.0, 0.25], np.float32).reshape(4, 1, 1)}, 17,
     "elementwise(exp,multiply)"),
]


def _chain_model(nodes: list[tuple], consts: dict, opset: int):
    named = {"x3": ("x", "three"), "xc": ("x", "c")}
    spec = [(op, named.get(ins, ins), out, *rest) for op, ins, out, *rest in nodes]
    inits = {k: np.asarray(v, np.float32) for k, v in consts.items()}
    return make_model(_chain(spec, inits), {"x": (1, 4, 8, 8)}, {"y": None}, inits,
                      opset=opset)


@pytest.mark.parametrize("case", CHAINS, ids=[c[0] for c in CHAINS])
def test_elementwise_chain_is_one_table(case, tmp_path, rng):
    """Each spelling: one integer table, no float op, bit-exact against the reference; and
    within 1/2 LSB of the output (+ float32 noise: ONNX Runtime evaluates the chain in
    float32, the table in float64) of ONNX Runtime's float model on the dequantized input,
    wherever that is inside the output range: an entry is f at the exact dequantized input,
    rounded once."""
    import onnxruntime as ort

    _, nodes, consts, opset, label = case
    model = _chain_model(nodes, consts, opset)
    _, lib = compile_and_compare(model, tmp_path, _calib(rng, (1, 4, 8, 8), 2.0), batch=1)
    ops = _ops(lib)
    assert len(ops) == 1 and ops[0][1] == "integer" and ops[0][0].startswith("elementwise(")
    if label is not None:
        assert ops[0][0] == label
    x = np.linspace(-6, 6, 256, dtype=np.float32).reshape(1, 4, 8, 8)
    (q,) = lib.quantize_inputs(x)
    sx, zx = lib.inputs[0]["scale"], lib.inputs[0]["zero_point"]
    x_deq = (q.astype(np.int32) - zx).astype(np.float32) * np.float32(sx)
    got = lib.run(x_deq)[0].astype(np.float64)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"x": x_deq})
    spec = lib.outputs[0]
    lo, hi = (np.array([0, 255]) if spec["dtype"] == "uint8" else np.array([-128, 127]))
    lo, hi = (lo - spec["zero_point"]) * spec["scale"], (hi - spec["zero_point"]) * spec["scale"]
    inside = (want >= lo) & (want <= hi)
    assert inside.mean() > 0.5
    err = np.abs(got - want.astype(np.float64))[inside]
    assert err.max() <= 0.5 * spec["scale"] * (1 + 1e-4) + 1e-5


def test_written_out_hardswish_after_a_conv(tmp_path, rng):
    """The text detector's spelling `x * Clip(x + 3, 0, 6) / 6` on a conv: conv2d, then one
    table; before, the Add and the Div ran in float between a dequantize and a quantize."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["x1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Add", ["x1", "three"], ["a"]),
             helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
             helper.make_node("Mul", ["x1", "c"], ["m"]),
             helper.make_node("Div", ["m", "six"], ["y"])]
    inits = {"w": rng.standard_normal((6, 3, 3, 3)) * 0.5, "b": rng.standard_normal(6),
             "three": np.array(3.0), "zero": np.array(0.0), "six": np.array(6.0)}
    model = make_model(nodes, {"x": ("N", 3, 8, 8)}, {"y": None}, inits)
    _, lib = compile_and_compare(model, tmp_path, _calib(rng, (2, 3, 8, 8)), batch=2)
    assert _ops(lib) == [("conv2d", "integer"),
                         ("elementwise(add,clip,multiply,divide)", "integer")]


def test_two_tensor_div_stays_float_and_is_listed(tmp_path, rng):
    """x / sigmoid(conv(x)): two different tensors, no table; the Div is a float op."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Div", ["x", "s"], ["y"])]
    model = make_model(nodes, {"x": (1, 3, 5, 5)}, {"y": None},
                       {"w": rng.standard_normal((3, 3, 1, 1))})
    _, lib = compile_and_compare(model, tmp_path, _calib(rng, (1, 3, 5, 5)), batch=1)
    assert _ops(lib) == [("conv2d", "integer"), ("sigmoid", "integer"), ("divide", "float")]
