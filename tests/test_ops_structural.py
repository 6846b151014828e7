"""Pad, Transpose, Slice, Split, ReduceMean, ReduceSum, Resize and ConvTranspose, alone in a
graph: integer, bit-exact against the reference in the TVM library and in the runtime-free C
library, and (for the ops that compute) close to the float op."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import compile_and_compare, make_model
from onnx import helper, numpy_helper
from support.qdq import kernel_weights
from tvm import relax

from qcompiler.backend.runtime import StandaloneModel
from qcompiler.reference import Reference
from qcompiler.relax_access import bindings, op_name


def _const(name: str, values: list, dtype: type = np.int64) -> helper.NodeProto:
    return helper.make_node("Constant", [], [name],
                            value=numpy_helper.from_array(np.array(values, dtype)))


def _compile(nodes: list, shape: tuple, tmp_path, rng, outputs: tuple = ("y",),
             inits: dict | None = None, opset: int = 17, **options: object):
    """Compile a one-op graph; the TVM library and the C library both equal the reference."""
    model = make_model(nodes, {"x": shape}, {o: None for o in outputs}, inits, opset=opset)
    calib = {"x": rng.standard_normal((8, *shape[1:])).astype(np.float32)}
    # min/max calibration: no output saturates on calibration data, so the float comparisons
    # below measure the integer arithmetic alone.
    compiled, lib = compile_and_compare(model, tmp_path, calib, observer="minmax", **options)
    c_lib = StandaloneModel(tmp_path / "out")
    ref = Reference(compiled.quantized, compiled.tvm_target)
    spec = lib.inputs[0]
    lo, hi = np.iinfo(spec["dtype"]).min, np.iinfo(spec["dtype"]).max
    q = rng.integers(lo, hi + 1, spec["shape"]).astype(spec["dtype"])
    for got, want in zip(c_lib.run_int(q), ref.run(q), strict=True):
        np.testing.assert_array_equal(got, want)
    return compiled, lib, calib["x"]


def _ops(lib) -> list[tuple[str, str]]:
    return [(x["op"], x["status"]) for x in lib.meta["layers"]]


def _lsb_errors(compiled, lib, x: np.ndarray) -> list[np.ndarray]:
    """|dequantized integer output - float op output| in output LSBs, with the float graph fed
    the dequantized integer input (so input rounding is not counted). The input is 0.9x a
    calibration sample, so a linear op's output stays inside the calibrated range (whose
    ends the zero point's rounding may have moved by up to half an LSB)."""
    spec = lib.inputs[0]
    q = lib.quantize_inputs(np.float32(0.9) * x)[0]
    xd = (q.astype(np.int32) - spec["zero_point"]).astype(np.float32) * np.float32(spec["scale"])
    vm = relax.VirtualMachine(tvm.compile(compiled.float_mod, compiled.tvm_target), tvm.cpu())
    res = vm["main"](tvm.runtime.tensor(xd))
    floats = [res.numpy()] if hasattr(res, "numpy") else [r.numpy() for r in res]
    out = []
    for got, f, o in zip(lib.run_int(q), floats, lib.outputs, strict=True):
        deq = (got.astype(np.int32) - o["zero_point"]) * np.float64(o["scale"])
        out.append(np.abs(deq - f) / o["scale"])
    return out


# ---- data movement: the integers move, the qparams pass through (exact vs the float op) ----
PADS = [  # (mode, pads, value)
    ("constant", [0, 0, 1, 2, 0, 0, 2, 1], 0.0),
    ("constant", [0, 1, 1, 0, 1, 0, 0, 1], 0.75),    # channels too, a nonzero fill
    ("constant", [0, 0, 2, 2, 0, 0, 2, 2], 40.0),    # fill outside the input range
    ("constant", [0, 0, -1, 2, 0, 0, 2, -1], 0.0),   # negative pads crop
    ("reflect", [0, 0, 2, 1, 0, 0, 1, 2], 0.0),
    ("edge", [0, 0, 3, 0, 0, 0, 1, 2], 0.0),
]


@pytest.mark.parametrize("mode,pads,value", PADS, ids=[f"{m}{i}" for i, (m, _, _) in
                                                       enumerate(PADS)])
def test_pad(mode, pads, value, tmp_path, rng):
    nodes = [_const("p", pads), _const("v", value, np.float32),
             helper.make_node("Pad", ["x", "p", *(["v"] if mode == "constant" else [])], ["y"],
                              mode=mode)]
    compiled, lib, calib = _compile(nodes, (2, 3, 5, 6), tmp_path, rng)
    assert ("pad", "integer") in _ops(lib)
    assert all(status == "integer" for _, status in _ops(lib))
    (err,) = _lsb_errors(compiled, lib, calib[:2])
    # The moved integers are exact; a nonzero fill is rounded to the grid (half an LSB), and
    # one outside the input's range is reached by requantizing to the output's qparams.
    assert err.max() <= (0.5 + 1e-3 if value else 1e-3)
    assert ("requantize" in compiled.quantized.script()) == (value == 40.0)


def test_explicit_same_pad_before_a_strided_depthwise_conv(tmp_path, rng):
    """tf2onnx's 'SAME' (Pad one more at the bottom and right, then a stride-2 conv): the pad
    is the conv's own asymmetric padding, one kernel, bit-exact."""
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    nodes = [_const("pads", [0, 0, 0, 0, 0, 0, 1, 1]),
             helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Conv", ["p", "w"], ["y"], group=6, strides=[2, 2])]
    model = make_model(nodes, {"x": (1, 6, 10, 10)}, {"y": None}, {"w": w})
    calib = {"x": rng.standard_normal((4, 6, 10, 10)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert [x["op"] for x in lib.meta["layers"]] == ["conv2d"]
    assert lib.outputs[0]["shape"] == [1, 6, 5, 5]


def test_pad_zero_fill_is_the_zero_point(tmp_path, rng):
    nodes = [_const("p", [0, 0, 1, 1, 0, 0, 1, 1]), helper.make_node("Pad", ["x", "p"], ["y"])]
    _, lib, _ = _compile(nodes, (1, 2, 3, 3), tmp_path, rng)
    q = lib.quantize_inputs(np.ones((1, 2, 3, 3), np.float32))[0]
    y = lib.run_int(q)[0]
    assert (y[:, :, 0] == lib.outputs[0]["zero_point"]).all()
    assert lib.outputs[0]["scale"] == lib.inputs[0]["scale"]


@pytest.mark.parametrize("perm,shape", [([0, 2, 3, 1], (2, 5, 4, 3)), ([1, 0], (3, 7)),
                                        ([0, 3, 1, 2], (1, 3, 2, 6))])
def test_transpose(perm, shape, tmp_path, rng):
    compiled, lib, calib = _compile([helper.make_node("Transpose", ["x"], ["y"], perm=perm)],
                                    shape, tmp_path, rng)
    assert _ops(lib) == [("permute_dims", "integer")]
    assert _lsb_errors(compiled, lib, calib[:shape[0]])[0].max() < 1e-3


@pytest.mark.parametrize("op,axes,shape,relax_op", [
    ("Squeeze", [2, 3], (2, 5, 1, 1), "squeeze"),  # after a pool, as Keras exports write it
    ("Unsqueeze", [1], (2, 5), "expand_dims"),
])
def test_squeeze_and_unsqueeze_rename_integers(op, axes, shape, relax_op, tmp_path, rng):
    nodes = [_const("ax", axes), helper.make_node(op, ["x", "ax"], ["y"])]
    compiled, lib, calib = _compile(nodes, shape, tmp_path, rng)
    assert _ops(lib) == [(relax_op, "integer")]
    assert lib.outputs[0]["scale"] == lib.inputs[0]["scale"]
    assert _lsb_errors(compiled, lib, calib[:shape[0]])[0].max() < 1e-3


SLICES = [  # (starts, ends, axes, steps)
    ([1, 0], [5, 6], [2, 3], [2, 1]),
    ([0, 2], [3, 100], [1, 3], [1, 2]),              # end past the dimension
    ([-1], [-100], [3], [-2]),                       # negative start and step
    ([1, -4], [-1, 5], [2, 1], [1, 1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES, ids=range(len(SLICES)))
def test_slice(starts, ends, axes, steps, tmp_path, rng):
    nodes = [_const("s", starts), _const("e", ends), _const("a", axes), _const("st", steps),
             helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])]
    compiled, lib, calib = _compile(nodes, (2, 5, 6, 7), tmp_path, rng)
    assert _ops(lib) == [("strided_slice", "integer")]
    assert _lsb_errors(compiled, lib, calib[:2])[0].max() < 1e-3


@pytest.mark.parametrize("axis,split,shape", [(1, [2, 3], (2, 5, 4, 4)), (2, None, (1, 3, 6, 5)),
                                              (3, [1, 4, 2], (1, 3, 2, 7))])
def test_split(axis, split, shape, tmp_path, rng):
    nodes = [*([_const("sp", split)] if split else []),
             helper.make_node("Split", ["x", *(["sp"] if split else [])],
                              [f"y{i}" for i in range(len(split or [0, 0]))], axis=axis)]
    outs = tuple(f"y{i}" for i in range(len(split or [0, 0])))
    compiled, lib, calib = _compile(nodes, shape, tmp_path, rng, outputs=outs)
    assert _ops(lib) == [("split", "integer")]
    assert len(lib.outputs) == len(outs)
    assert all(o["scale"] == lib.inputs[0]["scale"] for o in lib.outputs)
    assert max(e.max() for e in _lsb_errors(compiled, lib, calib[:shape[0]])) < 1e-3


def test_split_parts_feed_integer_ops(tmp_path, rng):
    """Tuple items used inside the graph (not only as outputs): split -> add and concat."""
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=1),
             helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("Concat", ["s", "a"], ["y"], axis=1)]
    _, lib, _ = _compile(nodes, (1, 4, 3, 3), tmp_path, rng)
    assert [op for op, _ in _ops(lib)] == ["split", "add", "concat"]
    assert all(status == "integer" for _, status in _ops(lib))


def test_concat_inputs_take_the_concat_qparams(tmp_path, rng):
    """A conv read only by a concat writes the concat's scale and zero point itself (no
    requantize kernel between them, as TFLite's converter quantizes); a conv also read
    elsewhere keeps its own, and is requantized for the concat. Bit-exact throughout."""
    w = {f"w{i}": numpy_helper.from_array((rng.standard_normal((c, 3, 1, 1)) * s)
                                          .astype(np.float32), f"w{i}")
         for i, c, s in ((1, 5, 0.3), (2, 6, 2.0), (3, 4, 1.0))}
    nodes = [*(helper.make_node("Constant", [], [k], value=v) for k, v in w.items()),
             helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "w2"], ["b"], name="conv_b"),
             helper.make_node("Conv", ["x", "w3"], ["c"], name="conv_c"),
             helper.make_node("Concat", ["a", "b", "c"], ["cat"], axis=1),
             helper.make_node("Relu", ["c"], ["rc"]),  # (c has a second reader)
             helper.make_node("Concat", ["cat", "rc"], ["y"], axis=1)]  # (a concat's input)
    compiled, lib, _ = _compile(nodes, (1, 3, 5, 4), tmp_path, rng, blocked_layout=False)
    main = compiled.quantized["main_int"]
    values = {b.var: b.value for b in bindings(main)}
    cat = [v for v in values.values() if op_name(v) == "relax.concat"][0]
    producers = [str(compiled.quantized[values[p].args[0]].attrs["qcompiler.op"])
                 for p in cat.args[0].fields]
    assert producers == ["conv2d", "conv2d", "requantize"]  # a and b: straight from the conv
    # the inner concat's grid is the outer one's (concats are resolved from the last)
    layers = lib.meta["layers"]
    grid = {(x["scale"], x["zero_point"]) for x in layers if x["op"] == "concat"}
    convs = {x["name"]: (x["scale"], x["zero_point"]) for x in layers if x["op"] == "conv2d"}
    assert len(grid) == 1 and {convs["conv_a"], convs["conv_b"]} == grid
    assert convs["conv_c"] not in grid


# ---- ReduceMean: integer sum, one fixed-point divide ------------------------------------------
MEANS = [([2, 3], 1, (2, 5, 4, 6)), ([1], 0, (2, 7, 3, 3)), ([1, 3], 0, (1, 5, 6, 6)),
         ([-1], 1, (2, 3, 9)), ([0, 1, 2], 1, (1, 4, 5, 3)),
         (None, 0, (1, 3, 4, 4))]  # no axes: all of them, a scalar output


@pytest.mark.parametrize("axes,keepdims,shape", MEANS)
def test_reduce_mean(axes, keepdims, shape, tmp_path, rng):
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], keepdims=keepdims,
                              **({"axes": axes} if axes else {}))]
    compiled, lib, calib = _compile(nodes, shape, tmp_path, rng)
    assert _ops(lib) == [("mean", "integer")]
    assert _lsb_errors(compiled, lib, calib[:shape[0]])[0].max() <= 0.5 + 1e-3


def test_reduce_mean_opset18_axes_input(tmp_path, rng):
    nodes = [_const("ax", [1]), helper.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=0)]
    _, lib, _ = _compile(nodes, (2, 6, 3, 3), tmp_path, rng, opset=18)
    assert _ops(lib) == [("mean", "integer")]
    assert lib.outputs[0]["shape"] == [2, 3, 3]


@pytest.mark.parametrize("axes,keepdims,shape", [([-1], 0, (2, 3, 4, 8)), ([1, 2], 1,
                                                                           (1, 5, 3, 4))])
def test_reduce_sum(axes, keepdims, shape, tmp_path, rng):
    """ReduceSum (a detector head's integral over distance bins): the mean's kernel, its
    multiplier without the count; axes an input since opset 13."""
    nodes = [_const("ax", axes),
             helper.make_node("ReduceSum", ["x", "ax"], ["y"], keepdims=keepdims)]
    compiled, lib, calib = _compile(nodes, shape, tmp_path, rng, opset=13)
    assert _ops(lib) == [("sum", "integer")]
    assert _lsb_errors(compiled, lib, calib[:shape[0]])[0].max() <= 0.5 + 1e-3


# ---- Resize ---------------------------------------------------------------------------------
RESIZES = [  # (mode, coordinate mode, nearest mode, scale, shape)
    ("nearest", "asymmetric", "floor", 2.0, (2, 3, 4, 5)),             # PyTorch nearest
    ("nearest", "half_pixel", "round_prefer_floor", 2.0, (1, 5, 3, 3)),
    ("nearest", "half_pixel", "round_prefer_ceil", 1.5, (1, 3, 6, 4)),  # ties at k + 1/2
    ("nearest", "align_corners", "round_prefer_floor", 1.75, (1, 2, 4, 4)),
    ("linear", "half_pixel", "", 2.0, (2, 3, 4, 5)),
    ("linear", "pytorch_half_pixel", "", 2.0, (1, 5, 3, 3)),
    ("linear", "asymmetric", "", 1.5, (1, 3, 6, 4)),
    ("linear", "align_corners", "", 1.75, (1, 2, 4, 4)),
    ("linear", "half_pixel", "", 0.6, (1, 3, 10, 5)),                   # downsampling
]


@pytest.mark.parametrize("mode,coord,nearest,scale,shape", RESIZES,
                         ids=[f"{r[0]}-{r[1]}-{r[3]}" for r in RESIZES])
def test_resize(mode, coord, nearest, scale, shape, tmp_path, rng):
    extra = {"nearest_mode": nearest} if nearest else {}
    nodes = [_const("sc", [1.0, 1.0, scale, scale], np.float32),
             helper.make_node("Resize", ["x", "", "sc"], ["y"], mode=mode,
                              coordinate_transformation_mode=coord, **extra)]
    compiled, lib, calib = _compile(nodes, shape, tmp_path, rng)
    assert _ops(lib) == [("resize2d", "integer")]
    kernel = "resize_nearest" if mode == "nearest" else "resize_bilinear"
    assert kernel in compiled.quantized.script()
    err = _lsb_errors(compiled, lib, calib[:shape[0]])[0]
    # Nearest copies integers: exact. Bilinear: the output round (1/2 LSB) plus 2^-10 weights.
    assert err.max() < (1e-3 if mode == "nearest" else 0.55)


def test_bilinear_is_not_nearest(tmp_path, rng):
    """The bilinear kernel interpolates: on a ramp, upsampled values fall between the inputs."""
    nodes = [_const("sc", [1.0, 1.0, 2.0, 2.0], np.float32),
             helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")]
    _, lib, _ = _compile(nodes, (1, 1, 4, 4), tmp_path, rng)
    ramp = np.tile(np.linspace(-1, 1, 4, dtype=np.float32), (1, 1, 4, 1))
    y = lib.run(ramp)[0][0, 0, 0]
    assert len(np.unique(np.round(y, 3))) == 8


def test_resize_cubic_stays_float(tmp_path, rng):
    nodes = [_const("sc", [1.0, 1.0, 2.0, 2.0], np.float32),
             helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic")]
    _, lib, _ = _compile(nodes, (1, 2, 4, 4), tmp_path, rng)
    assert _ops(lib) == [("image.resize2d", "float")]


# ---- ConvTranspose ----------------------------------------------------------------------------
CONV_T = [  # (cin, cout, k, stride, pads, output_padding, groups, dilation, bias, relu)
    (3, 5, 3, 1, (1, 1, 1, 1), (0, 0), 1, 1, True, False),
    (4, 6, 3, 2, (1, 1, 1, 1), (1, 1), 1, 1, True, True),
    (5, 3, 4, 2, (1, 1, 1, 1), (0, 0), 1, 1, False, False),   # the usual 2x upsampler
    (6, 4, 3, 2, (0, 1, 2, 0), (1, 0), 2, 1, True, False),    # grouped, asymmetric pads
    (7, 9, 2, 3, (0, 0, 0, 0), (2, 1), 1, 1, True, True),     # odd channels, stride 3
    (4, 4, 3, 1, (2, 2, 2, 2), (0, 0), 1, 2, True, False),    # dilated
]


@pytest.mark.parametrize("case", CONV_T, ids=lambda c: f"c{c[0]}x{c[1]}k{c[2]}s{c[3]}g{c[6]}")
@pytest.mark.parametrize("batch", [1, 2])
def test_conv_transpose(case, batch, tmp_path, rng):
    cin, cout, k, s, pads, out_pad, groups, dil, bias, relu = case
    inits = {"w": (rng.standard_normal((cin, cout // groups, k, k)) * 0.3).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(cout).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", *(["b"] if bias else [])],
                            ["c" if relu else "y"], strides=[s, s], pads=list(pads),
                            output_padding=list(out_pad), group=groups, dilations=[dil, dil])
    nodes = [node, *([helper.make_node("Relu", ["c"], ["y"])] if relu else [])]
    compiled, lib, calib = _compile(nodes, (batch, cin, 5, 4), tmp_path, rng, inits=inits)
    assert _ops(lib) == [("conv2d_transpose", "integer")]  # bias and ReLU fused
    # Against the float op with the float weights: output rounding plus int8 weights.
    assert _lsb_errors(compiled, lib, calib[:batch])[0].max() <= 2.0


def test_conv_transpose_weights_are_per_output_channel(tmp_path, rng):
    """Output channels with weights 1000x apart: per-tensor scales would zero the small ones.
    The strided layer runs as the conv of its four phases (`numerics.transpose_phases`):
    channel 1 is each phase's channel 1, its taps spread over the phases."""
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    w[:, 1] *= 1e-3
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1] * 4)
    compiled, lib, calib = _compile([node], (1, 3, 4, 4), tmp_path, rng, inits={"w": w})
    err = _lsb_errors(compiled, lib, calib[:1])[0]
    assert err.max() <= 2.0
    (w_q,) = kernel_weights(compiled)
    assert w_q.shape == (4 * 4, 3, 2, 2)  # (phases x cout, cin, ceil(3 / 2) taps a side)
    assert np.abs(w_q.reshape(4, 4, -1)[:, 1]).max() == 127


def test_unsupported_conv_transpose_output_shape_is_named():
    from qcompiler.errors import UnsupportedModelError
    from qcompiler.frontend.onnx_import import check_supported

    w = np.zeros((2, 2, 3, 3), np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], output_shape=[7, 7],
                            name="up1")
    model = make_model([node], {"x": (1, 2, 3, 3)}, {"y": None}, {"w": w})
    with pytest.raises(UnsupportedModelError, match=r"up1 \(ConvTranspose\): output_shape"):
        check_supported(model)


def test_conv_transpose_output_padding_not_below_stride_is_named():
    """PyTorch allows output padding below the dilation too; TVM's importer takes only less
    than the stride (its error named no node): refused by name (a fuzz finding)."""
    from qcompiler.errors import UnsupportedModelError
    from qcompiler.frontend.onnx_import import check_supported

    w = np.zeros((2, 2, 3, 3), np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[1, 2],
                            dilations=[2, 2], output_padding=[1, 1], name="up2")
    model = make_model([node], {"x": (1, 2, 3, 3)}, {"y": None}, {"w": w})
    with pytest.raises(UnsupportedModelError,
                       match=r"up2 \(ConvTranspose\): output_padding=\[1, 1\] not below strides"):
        check_supported(model)


def test_resize_align_corners_to_a_side_of_one_beside_a_resized_side_is_named(tmp_path):
    """A 4x4 map to 1x8 under align_corners: ONNX reads the side of 1 at 0, TVM divides by
    zero; with the other side resized no other mode equals it: a one-line error by name.
    Where every side is 1 or kept, `asymmetric` is the same map: rewritten (and compiled:
    the fuzz fixture `resize_align_corners_to_one_pixel`)."""
    from qcompiler.errors import UnsupportedModelError
    from qcompiler.frontend.normalize import resize_align_corners_to_one

    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", name="up3",
                            coordinate_transformation_mode="align_corners")
    model = make_model([node], {"x": (1, 2, 4, 4)}, {"y": None},
                       {"s": np.array([1, 1, 0.25, 2], np.float32)})
    shapes = {"x": (1, 2, 4, 4), "y": (1, 2, 1, 8)}
    with pytest.raises(UnsupportedModelError, match=r"up3 \(Resize\): align_corners from "
                                                    r"\[4, 4\] to \[1, 8\]"):
        resize_align_corners_to_one(model, shapes)
    kept = resize_align_corners_to_one(model, {"x": (1, 2, 1, 4), "y": (1, 2, 1, 4)})
    modes = {a.name: a.s for a in kept.graph.node[0].attribute}
    assert modes["coordinate_transformation_mode"] == b"asymmetric"  # (the same map here)


@pytest.mark.parametrize("opset", [2, 11])
def test_pad_old_opsets_import_as_relax_pad(opset, tmp_path, rng):
    """Opset 2 takes pads as an attribute, 11 as an input: both become an integer nn.pad."""
    if opset == 2:
        nodes = [helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 0, 0, 0, 0, 2], value=0.5)]
    else:
        nodes = [_const("p", [0, 0, 1, 0, 0, 0, 0, 2]),
                 helper.make_node("Pad", ["x", "p"], ["y"])]
    model = make_model(nodes, {"x": (1, 2, 3, 3)}, {"y": None}, opset=opset)
    calib = {"x": rng.standard_normal((4, 2, 3, 3)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert _ops(lib) == [("pad", "integer")]
    assert lib.outputs[0]["shape"] == [1, 2, 4, 5]


def test_unsupported_pad_mode_is_named():
    from qcompiler.errors import UnsupportedModelError
    from qcompiler.frontend.onnx_import import check_supported

    nodes = [_const("p", [0, 0, 1, 1, 0, 0, 1, 1]),
             helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap", name="pad7")]
    model = make_model(nodes, {"x": (1, 1, 3, 3)}, {"y": None}, opset=19)
    with pytest.raises(UnsupportedModelError, match=r"^unsupported: attribute pad7 \(Pad\): "
                                                    r"mode=wrap$"):
        check_supported(model)


def test_conv_transpose_batch_norm_folds_into_one_kernel(tmp_path, rng):
    """ConvTranspose (grouped) + BatchNormalization + ReLU: one integer kernel, close to float."""
    c = 4
    inits = {"w": (rng.standard_normal((c, 3, 3, 3)) * 0.3).astype(np.float32),
             "g": rng.uniform(0.5, 2, 6).astype(np.float32),
             "be": rng.standard_normal(6).astype(np.float32),
             "m": rng.standard_normal(6).astype(np.float32) * 0.1,
             "v": rng.uniform(0.5, 2, 6).astype(np.float32)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], strides=[2, 2], pads=[1] * 4,
                              group=2),
             helper.make_node("BatchNormalization", ["t", "g", "be", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    compiled, lib, calib = _compile(nodes, (1, c, 4, 4), tmp_path, rng, inits=inits)
    assert _ops(lib) == [("conv2d_transpose", "integer")]
    assert _lsb_errors(compiled, lib, calib[:1])[0].max() <= 2.0


def test_unmerged_rep_block_compiles_to_one_kernel(tmp_path, rng):
    """A RepVGG block exported without its rep(): Conv3x3+BN, Conv1x1+BN and an identity BN
    on one input, summed, ReLU: one integer conv (the merged kernel), close to float."""
    c = 4
    inits = {"w3": (rng.standard_normal((c, c, 3, 3)) * 0.3).astype(np.float32),
             "w1": (rng.standard_normal((c, c, 1, 1)) * 0.3).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w3"], ["t3"], pads=[1] * 4),
             helper.make_node("Conv", ["x", "w1"], ["t1"])]
    for i, t in enumerate(["t3", "t1", "x"]):
        inits |= {f"{k}{i}": v for k, v in (("g", rng.uniform(0.5, 2, c)),
                                            ("b", rng.standard_normal(c)),
                                            ("m", rng.standard_normal(c) * 0.1),
                                            ("v", rng.uniform(0.5, 2, c)))}
        nodes.append(helper.make_node("BatchNormalization",
                                      [t, f"g{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"]))
    nodes += [helper.make_node("Add", ["n0", "n1"], ["s"]),
              helper.make_node("Add", ["s", "n2"], ["s2"]),
              helper.make_node("Relu", ["s2"], ["y"])]
    compiled, lib, calib = _compile(nodes, (1, c, 8, 8), tmp_path, rng, inits=inits)
    assert _ops(lib) == [("conv2d", "integer")]
    assert _lsb_errors(compiled, lib, calib[:1])[0].max() <= 2.0


def test_split_part_is_an_output_and_an_operand(tmp_path, rng):
    """The C library keeps a split part alive for the final copy while later kernels run."""
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=2),
             helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("MaxPool", ["s"], ["y"], kernel_shape=[2, 2])]
    _, lib, _ = _compile(nodes, (1, 3, 6, 4), tmp_path, rng, outputs=("a", "y"))
    assert [o["shape"] for o in lib.outputs] == [[1, 3, 3, 4], [1, 3, 2, 3]]


def test_resize_by_sizes(tmp_path, rng):
    nodes = [_const("sz", [1, 3, 7, 10]),
             helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear")]
    compiled, lib, calib = _compile(nodes, (1, 3, 4, 4), tmp_path, rng)
    assert _ops(lib) == [("resize2d", "integer")] and lib.outputs[0]["shape"] == [1, 3, 7, 10]
    assert _lsb_errors(compiled, lib, calib[:1])[0].max() < 0.55


@pytest.mark.parametrize("op,opset", [("Upsample", 9), ("Resize", 10)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsampling_of_older_opsets(op, opset, mode, tmp_path, rng):
    """What older paddle2onnx and tf2onnx write for an FPN's upsampling: opset 11's Resize
    after import (`normalize.resize_at_opset_11`), integer, bit-exact."""
    nodes = [helper.make_node("Constant", [], ["sc"], value=numpy_helper.from_array(
                 np.array([1, 1, 2, 2], np.float32), "sc")),
             helper.make_node(op, ["x", "sc"], ["y"], mode=mode)]
    compiled, lib, calib = _compile(nodes, (1, 3, 4, 5), tmp_path, rng, opset=opset)
    assert _ops(lib) == [("resize2d", "integer")] and lib.outputs[0]["shape"] == [1, 3, 8, 10]
    assert _lsb_errors(compiled, lib, calib[:1])[0].max() < 0.55


def test_decoder_graph_is_all_integer(tmp_path, rng):
    """Conv, pool, ConvTranspose, skip Concat, Pad, Resize, Slice, Transpose, ReduceMean in one
    graph: every layer integer, bit-exact in both libraries."""
    w = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    inits = {"w1": w(6, 3, 3, 3), "b1": w(6), "wt": w(6, 4, 2, 2), "bt": w(4),
             "w2": w(5, 10, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3],
                              pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("ConvTranspose", ["p1", "wt", "bt"], ["u1"], strides=[2, 2]),
             helper.make_node("Concat", ["u1", "r1"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w2"], ["c2"], kernel_shape=[1, 1]),
             _const("p", [0, 0, 1, 1, 0, 0, 1, 1]),
             helper.make_node("Pad", ["c2", "p"], ["pd"], mode="reflect"),
             _const("sc", [1.0, 1.0, 1.5, 1.5], np.float32),
             helper.make_node("Resize", ["pd", "", "sc"], ["rs"], mode="linear"),
             _const("s", [1]), _const("e", [-1]), _const("a", [2]),
             helper.make_node("Slice", ["rs", "s", "e", "a"], ["sl"]),
             helper.make_node("Transpose", ["sl"], ["tr"], perm=[0, 2, 3, 1]),
             helper.make_node("ReduceMean", ["tr"], ["y"], axes=[1], keepdims=0)]
    _, lib, _ = _compile(nodes, (2, 3, 8, 8), tmp_path, rng, inits=inits)
    assert [op for op, _ in _ops(lib)] == [
        "conv2d", "max_pool2d", "conv2d_transpose", "concat", "conv2d", "pad", "resize2d",
        "strided_slice", "permute_dims", "mean"]
    assert all(status == "integer" for _, status in _ops(lib))
