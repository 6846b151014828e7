"""MaxPool/AveragePool with ceil_mode=1 (squeezenet, googlenet): the last window may run past
the padded input; it must start inside the input or its top/left padding. Bit-exact against
the reference on every target, and the reference's semantics are ONNX Runtime's."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import VNNI_TARGET, compile_and_compare, make_model, requires_cpu_for, vnni_target
from onnx import helper
from support.fuzz_graphs import GraphCase, check_case

# (op, h, w, kernel, strides, pads, count_include_pad): each grows the bottom/right padding;
# "drop" cases would start a last window past the input without the ONNX rule.
CASES = [
    ("MaxPool", 13, 13, [3, 3], [2, 2], [0, 0, 0, 0], 0),     # squeezenet's 3x3/2
    ("MaxPool", 5, 5, [2, 2], [2, 2], [1, 1, 1, 1], 0),       # drop
    ("MaxPool", 7, 8, [3, 2], [3, 2], [1, 0, 0, 1], 0),       # drop (columns), asymmetric
    ("AveragePool", 7, 7, [3, 3], [3, 3], [0, 0, 0, 0], 0),   # grows by 2
    ("AveragePool", 9, 9, [4, 4], [3, 3], [2, 1, 0, 2], 0),
    ("AveragePool", 7, 7, [3, 3], [3, 3], [0, 0, 0, 0], 1),
    ("AveragePool", 6, 5, [3, 3], [2, 2], [1, 1, 1, 1], 1),   # counts the declared padding only
    ("AveragePool", 5, 5, [2, 2], [2, 2], [1, 1, 1, 1], 1),   # drop
]


def _pool(op: str, k: list, s: list, pads: list, include: int, src: str = "x",
          out: str = "y") -> helper.NodeProto:
    extra = {"count_include_pad": include} if op == "AveragePool" else {}
    return helper.make_node(op, [src], [out], kernel_shape=k, strides=s, pads=pads,
                            ceil_mode=1, **extra)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}{c[1]}x{c[2]}k{c[3][0]}"
                         f"s{c[4][0]}p{''.join(map(str, c[5]))}i{c[6]}")
def test_ceil_mode_pool_is_exact_and_onnxruntimes(case, tmp_path, rng):
    """Bit-exact against the reference; on the dequantized input, ONNX Runtime's float pool
    (shape and values): a max pool's qparams pass through (equal), an average is one
    fixed-point rounding (within 1/2 LSB + float32 noise) wherever it is inside the output
    range. A wrong window count is off by far more."""
    import onnxruntime as ort

    op, h, w, k, s, pads, include = case
    model = make_model([_pool(op, k, s, pads, include)], {"x": (1, 3, h, w)}, {"y": None})
    calib = {"x": rng.standard_normal((8, 3, h, w)).astype(np.float32)}
    _, lib = compile_and_compare(model, tmp_path, calib)
    assert [x["status"] for x in lib.meta["layers"]] == ["integer"]
    x = rng.standard_normal((1, 3, h, w)).astype(np.float32) * 1.5
    (q,) = lib.quantize_inputs(x)
    spec = lib.inputs[0]
    x_deq = (q.astype(np.int32) - spec["zero_point"]).astype(np.float32) * \
        np.float32(spec["scale"])
    got = lib.run(x_deq)[0].astype(np.float64)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"x": x_deq})
    assert got.shape == want.shape
    out = lib.outputs[0]
    lo, hi = (np.array([0, 255]) if out["dtype"] == "uint8" else np.array([-128, 127]))
    lo, hi = (lo - out["zero_point"]) * out["scale"], (hi - out["zero_point"]) * out["scale"]
    inside = (want >= lo) & (want <= hi)
    assert inside.mean() > 0.9
    tolerance = 1e-6 if op == "MaxPool" else 0.5 * out["scale"] * (1 + 1e-4) + 1e-6
    assert np.abs(got - want)[inside].max() <= tolerance


def _conv_pools_case(channels: int, h: int, w: int, strides: list) -> GraphCase:
    """conv 3x3 -> ceil max pool -> ceil average pools (both count_include_pad values)."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             _pool("MaxPool", [3, 3], strides, [0, 0, 0, 0], 0, "c", "m"),
             _pool("AveragePool", [3, 3], strides, [1, 1, 1, 1], 1, "m", "a"),
             _pool("AveragePool", [2, 2], strides, [1, 0, 0, 1], 0, "a", "y")]
    model = make_model(nodes, {"x": (1, 3, h, w)}, {"y": None},
                       {"cw": rng.standard_normal((channels, 3, 3, 3)) * 0.3})
    calib = rng.standard_normal((4, 3, h, w)).astype(np.float32)
    return GraphCase(model, calib, 1, seed=7)


def test_pools_with_unequal_strides_on_x86():
    """Strides 2x1 through a max pool and both average pools (count_include_pad 0 and 1)."""
    assert check_case(_conv_pools_case(8, 11, 13, [2, 1]), target="x86") is None


@pytest.mark.parametrize("target", ["arm", "hexagon"])
def test_ceil_mode_pools_under_qemu(target):
    """The runtime-free library under qemu equals the reference (hexagon: the strided pools
    keep the portable kernel)."""
    assert check_case(_conv_pools_case(8, 11, 13, [2, 2]), target=target) is None


def test_ceil_mode_max_pool_is_blocked_for_vnni(tmp_path):
    """On 16 channels the x86 VNNI target plans NCHW16c: its blocked max pool takes the grown
    padding. Built on every machine, run against the reference where the CPU has VNNI."""
    import tvm

    from qcompiler.backend.emit import build
    from qcompiler.config import CompileConfig
    from qcompiler.frontend.onnx_import import graph_inputs
    from qcompiler.numerics.calibrate import load_calibration
    from qcompiler.pipeline import compile_model

    case = _conv_pools_case(16, 11, 13, [2, 2])
    np.savez(tmp_path / "c.npz", x=case.calib)
    calib = load_calibration(tmp_path / "c.npz", graph_inputs(case.model, 1))
    compiled = compile_model(case.model, calib, CompileConfig(batch=1), progress=False,
                             target=vnni_target())
    pools = [str(f.attrs["qcompiler.schedule"]) for f in compiled.quantized.functions.values()
             if isinstance(f, tvm.tirx.PrimFunc)
             and str(f.attrs.get("qcompiler.op", "")) == "max_pool2d"]
    assert len(pools) == 1 and "blocked" in pools[0], pools
    build(compiled)
    requires_cpu_for(VNNI_TARGET)
    assert check_case(case, target=vnni_target()) is None
