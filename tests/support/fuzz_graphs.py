"""Fuzzing support: random valid CNN graphs (hypothesis strategies) checked compiled-vs-reference,
and mutations of valid models that must end in a compile or a one-line error.

Used by `tools/fuzz.py`, `tools/fuzz_malformed.py` and the tests. Needs `hypothesis`.
"""
from __future__ import annotations

import io
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qcompiler.numerics.shapes import pool2d_ceil_padding, pool2d_out_hw


@dataclass
class GraphCase:
    """A generated model, its calibration data, the batch to compile it at, and the precision
    options to compile it with (`CompileConfig`'s weight_bits, activation_bits, per_channel)."""

    model: onnx.ModelProto
    calib: np.ndarray
    batch: int
    seed: int
    weight_bits: int = 8
    activation_bits: int = 8
    per_channel: bool = True


def _conv_groups(cin: int, cout: int, choice: int) -> int:
    common = [g for g in range(1, min(cin, cout) + 1) if cin % g == 0 and cout % g == 0]
    return common[choice % len(common)]


# Output widths the rules treat apart, drawn now and then beside the small ones: whole and
# nearly whole 16-column vectors (`x86.columns`: rows that pad to vectors with little waste),
# more than a register block (`x86.blocked`: 15 columns), HVX rows of 64 bytes and more
# (`hexagon.vector`: pools vectorize from there).
WIDE = (14, 15, 16, 17, 28, 30, 31, 32, 33, 64, 66)


# int16 activations only where every layer's int32 accumulator is safe: a fan-in of K taps
# needs K x 2^15 x 127 + |bias| < 2^31, else the compile refuses the model (by design:
# `passes.quantize`, "the int32 accumulator could overflow").
MAX_INT16_TAPS = 256


# Upsampled or transposed-conv maps stay at most this many pixels (the targets under qemu).
MAX_PIXELS = 2048


def _table_layer(draw: Callable, rng: np.random.Generator, i: int, src: str, chw: tuple,
                 nodes: list, inits: dict) -> tuple | None:
    """One op with a lookup table, or a chain of elementwise math on one tensor written out
    as exporters write it (hard-swish `x * Clip(x + 3, 0, 6) / 6`, SiLU `x * Sigmoid(x)`,
    an affine `x * a + b`): one table either way (`passes.fuse_elementwise`)."""
    from hypothesis import strategies as st

    out, op = f"t{i}", draw(st.sampled_from(
        ["Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "hswish", "silu",
         "affine"]))
    if op == "hswish":
        inits[f"k3_{i}"], inits[f"k0_{i}"], inits[f"k6_{i}"] = (np.array(v) for v in (3, 0, 6))
        nodes += [helper.make_node("Add", [src, f"k3_{i}"], [f"{out}_a"]),
                  helper.make_node("Clip", [f"{out}_a", f"k0_{i}", f"k6_{i}"], [f"{out}_c"]),
                  helper.make_node("Mul", [src, f"{out}_c"], [f"{out}_m"]),
                  helper.make_node("Div", [f"{out}_m", f"k6_{i}"], [out])]
    elif op == "silu":
        nodes += [helper.make_node("Sigmoid", [src], [f"{out}_s"]),
                  helper.make_node("Mul", [src, f"{out}_s"], [out])]
    elif op == "affine":
        inits[f"ka_{i}"], inits[f"kb_{i}"] = np.array(rng.uniform(-2, 2)), \
            np.array(rng.uniform(-1, 1))
        nodes += [helper.make_node("Mul", [src, f"ka_{i}"], [f"{out}_m"]),
                  helper.make_node("Add", [f"{out}_m", f"kb_{i}"], [out])]
    else:
        extra = {"alpha": float(rng.uniform(0.01, 0.3))} if op == "LeakyRelu" else {}
        nodes.append(helper.make_node(op, [src], [out], **extra))
    return chw, 0


def _se_layer(draw: Callable, rng: np.random.Generator, i: int, src: str, chw: tuple,
              nodes: list, inits: dict) -> tuple | None:
    """A squeeze-and-excitation block: global pool, two 1x1 convs, a sigmoid gate (as a table)
    and the gate's Mul of the map (two tensors: an integer kernel, broadcast over h x w)."""
    from hypothesis import strategies as st

    c, out = chw[0], f"t{i}"
    r = max(1, c // draw(st.sampled_from([2, 4])))
    for name, shape in ((f"se_w1_{i}", (r, c, 1, 1)), (f"se_w2_{i}", (c, r, 1, 1))):
        inits[name] = rng.standard_normal(shape) / np.sqrt(shape[1])
    inits[f"se_b1_{i}"], inits[f"se_b2_{i}"] = rng.normal(0, .1, r), rng.normal(0, .1, c)
    gate = draw(st.sampled_from(["Sigmoid", "HardSigmoid"]))
    nodes += [helper.make_node("GlobalAveragePool", [src], [f"{out}_p"]),
              helper.make_node("Conv", [f"{out}_p", f"se_w1_{i}", f"se_b1_{i}"], [f"{out}_r"],
                               kernel_shape=[1, 1]),
              helper.make_node("Relu", [f"{out}_r"], [f"{out}_q"]),
              helper.make_node("Conv", [f"{out}_q", f"se_w2_{i}", f"se_b2_{i}"], [f"{out}_e"],
                               kernel_shape=[1, 1]),
              helper.make_node(gate, [f"{out}_e"], [f"{out}_g"]),
              helper.make_node("Mul", [src, f"{out}_g"], [out])]
    return chw, max(c, r)


def _resize_layer(draw: Callable, rng: np.random.Generator, i: int, src: str, chw: tuple,
                  nodes: list, inits: dict) -> tuple | None:
    """Resize by scales, the same or apart per axis, up or down (each exact in binary, so
    every reader's floor(n x scale) agrees); nearest (each rounding) or linear, under each
    coordinate mode the kernels take. (Sizes need the batch in opset 17: not drawn.)"""
    from hypothesis import strategies as st

    c, h, w = chw
    mode = draw(st.sampled_from(["nearest", "nearest", "linear"]))
    coords = draw(st.sampled_from(["asymmetric", "half_pixel", "pytorch_half_pixel",
                                   "align_corners"]))
    extra = {"nearest_mode": draw(st.sampled_from(
        ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))} if mode == "nearest" \
        else {}
    scales = st.sampled_from([2.0, 2.0, 3.0, 0.5, 0.75, 1.25, 1.5])
    fh = draw(scales)
    fw = fh if draw(st.booleans()) else draw(scales)
    oh, ow = int(h * fh), int(w * fw)
    inits[f"rs_{i}"] = np.array([1, 1, fh, fw])
    inputs = [src, "", f"rs_{i}"]
    if oh < 1 or ow < 1 or oh * ow > MAX_PIXELS:
        return None
    if coords == "align_corners" and 1 in (oh, ow) and (oh not in (1, h) or ow not in (1, w)):
        return None  # refused by name (`normalize.resize_align_corners_to_one`)
    nodes.append(helper.make_node("Resize", inputs, [f"t{i}"], mode=mode,
                                  coordinate_transformation_mode=coords, **extra))
    return (c, oh, ow), 0


def _conv_transpose_layer(draw: Callable, rng: np.random.Generator, i: int, src: str, chw: tuple,
                          nodes: list, inits: dict) -> tuple | None:
    """ConvTranspose (a detector's or segmenter's upsampling): kernels 1 to 4, strides and
    dilations 1 or 2 (apart per axis), padding and output padding, groups 1 or a divisor."""
    from hypothesis import strategies as st

    c, h, w = chw
    k = [draw(st.sampled_from([1, 2, 2, 3, 4])) for _ in range(2)]
    s = [draw(st.sampled_from([1, 2, 2, 3])) for _ in range(2)]
    d = [draw(st.sampled_from([1, 1, 2])) for _ in range(2)]
    pads = [draw(st.integers(0, d[a] * (k[a] - 1))) for a in (0, 1, 0, 1)]
    opad = [draw(st.integers(0, s[a] - 1)) for a in (0, 1)]  # (below the stride: TVM's bound)
    cout = draw(st.integers(1, 32))
    groups = _conv_groups(c, cout, draw(st.integers(0, 300)))
    oh, ow = ((n - 1) * s[a] - pads[a] - pads[a + 2] + d[a] * (k[a] - 1) + opad[a] + 1
              for a, n in enumerate((h, w)))
    if oh < 1 or ow < 1 or oh * ow > MAX_PIXELS:
        return None
    fan_in = c // groups * k[0] * k[1]
    inits[f"w{i}"] = rng.standard_normal((c, cout // groups, *k)) / np.sqrt(fan_in)
    inits[f"b{i}"] = rng.standard_normal(cout) * 0.1
    nodes.append(helper.make_node(
        "ConvTranspose", [src, f"w{i}", f"b{i}"], [f"t{i}"], kernel_shape=k, strides=s,
        pads=pads, dilations=d, output_padding=opad, group=groups))
    return (cout, oh, ow), fan_in


# Each appends its nodes (output `t<i>`) and constants and returns the output's (c, h, w) and
# its largest fan-in (for the int16 accumulator bound), or None where it does not fit.
EXPORTED_LAYERS = {"table": _table_layer, "se": _se_layer, "resize": _resize_layer,
                   "conv_transpose": _conv_transpose_layer}


# Layer kinds, drawn with these weights: a CNN's (CNN_KINDS, the default: the derandomized
# CI graphs stay those drawn before the exported layers came) and what real exports add
# (`EXPORTED_LAYERS`, one kind among them; `tools/fuzz.py` draws KINDS).
CNN_KINDS = ("conv", "conv", "conv", "pool", "add", "concat")
KINDS = (*CNN_KINDS, "exported")
EXPORTED_KINDS = ("conv", "exported", "exported", "add")  # mostly exported layers


def cnn_graphs(max_layers: int = 6, max_channels: int = 300, kinds: tuple = CNN_KINDS):
    # -> SearchStrategy[GraphCase]
    """Small valid ONNX CNNs from the supported ops, shrinking toward fewer, simpler layers.

    Draws what the schedule rules accept (their docstrings in `qcompiler.schedules`): batch 1
    or 2; inputs of h != w, now and then a wide one (WIDE); convs with kernels 1, 2, 3, 5
    (kh != kw too), strides 1 to 3 and dilations 1 to 3 (height and width apart), asymmetric
    padding, groups 1, a common divisor, or depthwise (multiplier 1 or 2); pools with
    kh != kw, strides apart, asymmetric padding; add, concat; a dense head after a global
    pool or on the flattened map; 4-bit weights, int16 activations and per-tensor weights
    (the case's precision options), 8-bit per-channel most often. `kinds` adds the layers of
    real exports (`EXPORTED_LAYERS`): tables and written-out elementwise chains, SE gates,
    Resize, ConvTranspose.
    """
    from hypothesis import strategies as st

    channels = st.one_of(st.integers(1, 16), st.integers(1, max_channels))
    sizes = st.sampled_from([1, 1, 3, 3, 5, 2])  # a filter's side
    steps = st.sampled_from([1, 1, 1, 2, 2, 3])  # a stride or a dilation

    def pair(draw, values):
        a = draw(values)
        return (a, a) if draw(st.integers(0, 2)) else (a, draw(values))

    @st.composite
    def build(draw):
        seed = draw(st.integers(0, 2**31 - 1))
        rng = np.random.default_rng(seed)
        batch = draw(st.integers(1, 2))
        c0, h0 = draw(st.integers(1, 8)), draw(st.integers(3, 12))
        w0 = draw(st.sampled_from([h0, h0, h0, draw(st.integers(3, 12)), draw(
            st.sampled_from(WIDE))]))
        wide = w0 > 12
        tensors = {"x": (c0, h0, w0)}
        nodes, inits = [], {}
        order = ["x"]
        taps = 0  # the largest fan-in of a conv or dense layer
        for i in range(draw(st.integers(1, max_layers))):
            kind = draw(st.sampled_from(list(kinds)))
            src = draw(st.sampled_from(order))
            c, h, w = tensors[src]
            out = f"t{i}"
            if kind == "exported":  # what real exports add: tables, SE gates, upsampling
                layer = draw(st.sampled_from(list(EXPORTED_LAYERS)))
                made = EXPORTED_LAYERS[layer](draw, rng, i, src, (c, h, w), nodes, inits)
                if made is None:
                    continue
                tensors[out], fan_in = made
                taps = max(taps, fan_in)
            elif kind == "conv":
                (kh, kw), (sh, sw), (dh, dw) = pair(draw, sizes), pair(draw, steps), \
                    pair(draw, steps)
                shape = draw(st.sampled_from(["same", "any", "any", "depthwise"]))
                if shape == "depthwise" and c > 1:
                    cout, groups = c * draw(st.sampled_from([1, 1, 2])), c
                else:
                    cout = c if shape == "same" and c > 1 else \
                        draw(st.integers(1, 64) if wide else channels)
                    groups = _conv_groups(c, cout, draw(st.integers(0, 300)))
                pads = [draw(st.integers(0, (k - 1) * d // 2 + (k == 2)))
                        for k, d in ((kh, dh), (kw, dw), (kh, dh), (kw, dw))]
                if h + pads[0] + pads[2] < dh * (kh - 1) + 1 or \
                        w + pads[1] + pads[3] < dw * (kw - 1) + 1:
                    continue
                fan_in = c // groups * kh * kw
                taps = max(taps, fan_in)
                wt = rng.standard_normal((cout, c // groups, kh, kw)) / np.sqrt(fan_in)
                inits[f"w{i}"], inits[f"b{i}"] = wt, rng.standard_normal(cout) * 0.1
                conv_out = out if draw(st.booleans()) else f"{out}_c"
                nodes.append(helper.make_node(
                    "Conv", [src, f"w{i}", f"b{i}"], [conv_out], kernel_shape=[kh, kw],
                    strides=[sh, sw], pads=pads, dilations=[dh, dw], group=groups))
                if conv_out != out:
                    act = draw(st.sampled_from(["Relu", "Clip", "BN"]))
                    if act == "Relu":
                        nodes.append(helper.make_node("Relu", [conv_out], [out]))
                    elif act == "Clip":
                        inits[f"lo{i}"], inits[f"hi{i}"] = np.array(0.0), np.array(6.0)
                        nodes.append(helper.make_node("Clip", [conv_out, f"lo{i}", f"hi{i}"],
                                                      [out]))
                    else:
                        for n, v in (("g", rng.uniform(0.5, 2, cout)), ("be", rng.normal(0, .1, cout)),
                                     ("m", rng.normal(0, .1, cout)), ("v", rng.uniform(.5, 2, cout))):
                            inits[f"{n}{i}"] = v
                        nodes.append(helper.make_node(
                            "BatchNormalization",
                            [conv_out, f"g{i}", f"be{i}", f"m{i}", f"v{i}"], [out]))
                oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
                ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
                tensors[out] = (cout, oh, ow)
            elif kind == "pool":
                kh = draw(st.integers(1, min(3, h)))
                kw = kh if draw(st.booleans()) else draw(st.integers(1, min(3, w)))
                kw = min(kw, w)
                sh, sw = pair(draw, st.integers(1, 2))
                pads = [draw(st.integers(0, (k - 1) // 2)) for k in (kh, kw, kh, kw)]
                op = draw(st.sampled_from(["MaxPool", "AveragePool", "GlobalAveragePool"]))
                if op == "GlobalAveragePool":
                    nodes.append(helper.make_node(op, [src], [out]))
                    tensors[out] = (c, 1, 1)
                else:
                    extra = {"count_include_pad": draw(st.integers(0, 1))} \
                        if op == "AveragePool" else {}
                    ceil = draw(st.sampled_from([0, 0, 1]))
                    nodes.append(helper.make_node(op, [src], [out], kernel_shape=[kh, kw],
                                                  strides=[sh, sw], pads=pads, ceil_mode=ceil,
                                                  **extra))
                    geo = {"kernel": [kh, kw], "strides": [sh, sw], "padding": pads}
                    if ceil:
                        geo["padding"] = pool2d_ceil_padding((h, w), geo)
                    tensors[out] = (c, *pool2d_out_hw((h, w), geo))
            else:
                same = [t for t in order if t != src and tensors[t][1:] == (h, w)
                        and (kind == "concat" or tensors[t][0] == c)]
                if not same:
                    continue
                other = draw(st.sampled_from(same))
                if kind == "add":
                    nodes.append(helper.make_node("Add", [src, other], [out]))
                    tensors[out] = (c, h, w)
                else:
                    nodes.append(helper.make_node("Concat", [src, other], [out], axis=1))
                    tensors[out] = (c + tensors[other][0], h, w)
            order.append(out)
        last = order[-1]
        head = draw(st.sampled_from(["none", "gap", "gap", "flat"]))
        c, h, w = tensors[last]
        if head == "flat" and c * h * w > 4096:
            head = "gap"
        if head != "none":  # a classifier head: on the global pool or the flattened map
            k = c if head == "gap" else c * h * w
            taps = max(taps, k)
            n_out = draw(st.integers(1, 12))
            inits["fc_w"] = rng.standard_normal((n_out, k)) / np.sqrt(k)
            inits["fc_b"] = rng.standard_normal(n_out) * 0.1
            if head == "gap":
                nodes.append(helper.make_node("GlobalAveragePool", [last], ["gap"]))
            nodes += [helper.make_node("Flatten", ["gap" if head == "gap" else last], ["flat"]),
                      helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1)]
        else:
            nodes.append(helper.make_node("Identity", [last], ["y"]))
        graph = helper.make_graph(
            nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                          ["N", c0, h0, w0])],
            [helper.make_value_info("y", helper.make_tensor_type_proto(TensorProto.FLOAT, None))],
            [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model)
        calib = rng.standard_normal((batch * draw(st.integers(1, 2)), c0, h0, w0))
        precision = {"weight_bits": draw(st.sampled_from([8, 8, 8, 4])),
                     "activation_bits": draw(st.sampled_from(
                         [8, 8, 8, 8, 16] if taps <= MAX_INT16_TAPS else [8])),
                     "per_channel": draw(st.sampled_from([True, True, True, False]))}
        return GraphCase(model, calib.astype(np.float32), batch, seed, **precision)

    return build()


def save_case(case: GraphCase, stem: Path, found_on: str = "x86") -> None:
    """A regression fixture: `<stem>.onnx` and `<stem>.npz` (calibration, batch, seed, and the
    target it failed on: the fixture test checks it there as well as on x86)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(case.model, str(stem.with_suffix(".onnx")))
    np.savez(stem.with_suffix(".npz"), x=case.calib, batch=np.array(case.batch),
             seed=np.array(case.seed), weight_bits=np.array(case.weight_bits),
             activation_bits=np.array(case.activation_bits),
             per_channel=np.array(case.per_channel), found_on=np.array(found_on))


def found_on(path: Path) -> str:
    """The target a saved case failed on (x86 for fixtures saved before this was kept)."""
    data = np.load(path.with_suffix(".npz"))
    return str(data["found_on"]) if "found_on" in data else "x86"


def load_case(path: Path) -> GraphCase:
    """A saved case; fixtures saved before the precision options compile at 8/8 per-channel."""
    data = np.load(path.with_suffix(".npz"))
    options = {k: type(getattr(GraphCase, k))(data[k]) for k in
               ("weight_bits", "activation_bits", "per_channel") if k in data}
    return GraphCase(onnx.load(str(path.with_suffix(".onnx"))), data["x"], int(data["batch"]),
                     int(data["seed"]), **options)


def check_case(case: GraphCase, n_inputs: int = 2, target: str | object = "x86",
               blocked_layout: bool = True, run: bool = True) -> str | None:
    """Compile the case for `target` (a name, or a `Target`: e.g. x86 with VNNI on a machine
    without it) and compare the library and the reference on fresh inputs.

    x86 runs the TVM module in process; other targets run the runtime-free C library through
    its runner (under qemu). Returns None when they agree bit for bit, else the first mismatch,
    or the layers a target rule failed on (`graph_meta.schedule_fallbacks`: the compile would
    hide them behind the portable kernel, so the fuzzer reports them). `run=False`: compile
    and build only (code for an ISA this CPU lacks).
    """
    import tvm
    from tvm import relax

    from qcompiler.backend.emit import build, emit
    from qcompiler.backend.runtime import StandaloneModel
    from qcompiler.config import CompileConfig
    from qcompiler.frontend.onnx_import import graph_inputs
    from qcompiler.graph_meta import schedule_fallbacks
    from qcompiler.numerics.calibrate import load_calibration
    from qcompiler.numerics.qparams import dtype_range
    from qcompiler.pipeline import compile_model
    from qcompiler.reference import Reference

    name = target if isinstance(target, str) else target.name
    config = CompileConfig(batch=case.batch, target=name, blocked_layout=blocked_layout,
                           weight_bits=case.weight_bits, activation_bits=case.activation_bits,
                           per_channel=case.per_channel)
    inputs = graph_inputs(case.model, case.batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.npz"
        np.savez(path, x=case.calib)
        calib = load_calibration(path, inputs)
        compiled = compile_model(case.model, calib, config, progress=False,
                                 target=None if isinstance(target, str) else target)
        fallbacks = schedule_fallbacks(compiled.quantized)  # hidden by the portable kernel
        if fallbacks:
            return "schedule fallback: " + "; ".join(f.summary() for f in fallbacks)
        if compiled.target.runs_natively:
            exe = build(compiled)  # LLVM code generation: also where ISA-specific code fails
            if not run:
                return None
            vm = relax.VirtualMachine(exe, tvm.cpu())

            def execute(q: np.ndarray) -> list[np.ndarray]:
                got = vm["main_int"](tvm.runtime.tensor(q))
                return [got.numpy()] if hasattr(got, "numpy") else [g.numpy() for g in got]
        else:
            emit(compiled, None, Path(tmp) / "out")
            if not run:
                return None
            execute = StandaloneModel(Path(tmp) / "out").run_int
        ref = Reference(compiled.quantized)
        qp = compiled.in_qparams[0]
        lo, hi = dtype_range(qp.dtype)
        rng = np.random.default_rng(case.seed + 1)
        for i in range(n_inputs):
            q = rng.integers(lo, hi + 1, inputs[0].shape).astype(qp.dtype)
            for g, w in zip(execute(q), ref.run(q)):
                if g.shape != w.shape or not np.array_equal(g, w):
                    bad = int((g != w).sum()) if g.shape == w.shape else -1
                    return f"input {i}: {bad} of {w.size} output elements differ"
    return None


# ---- malformed models --------------------------------------------------------------------

MUTATIONS = ("flip_bytes", "truncate", "attr_type", "dangling_input", "bad_initializer",
             "cycle", "drop_node", "bad_dtype", "zero_dim")


def base_model() -> onnx.ModelProto:
    """A small valid model with conv, BN, ReLU, add, pooling and a dense head."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((4, 2, 3, 3)), "b1": rng.standard_normal(4),
             "w2": rng.standard_normal((4, 4, 1, 1)), "g": np.ones(4), "be": np.zeros(4),
             "m": np.zeros(4), "v": np.ones(4), "fc": rng.standard_normal((3, 4)),
             "fcb": np.zeros(3)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[1, 1], name="conv2"),
             helper.make_node("BatchNormalization", ["c2", "g", "be", "m", "v"], ["n2"],
                              name="bn2"),
             helper.make_node("Add", ["n2", "r1"], ["a"], name="add"),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2],
                              name="pool"),
             helper.make_node("GlobalAveragePool", ["p"], ["gp"], name="gap"),
             helper.make_node("Flatten", ["gp"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(
        nodes, "base", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mutate(model: onnx.ModelProto, seed: int) -> tuple[str, bytes]:
    """One random corruption of a valid model, as file bytes."""
    r = random.Random(seed)
    kind = MUTATIONS[seed % len(MUTATIONS)]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if kind == "flip_bytes":
        data = bytearray(m.SerializeToString())
        for _ in range(r.randint(1, 8)):
            data[r.randrange(len(data))] = r.randrange(256)
        return kind, bytes(data)
    if kind == "truncate":
        data = m.SerializeToString()
        return kind, data[: r.randrange(len(data))]
    if kind == "attr_type":
        node = r.choice([n for n in g.node if n.attribute])
        attr = r.choice(node.attribute)
        new = r.choice([helper.make_attribute(attr.name, "text"),
                        helper.make_attribute(attr.name, 2.5),
                        helper.make_attribute(attr.name, [r.randint(-3, 9)] * r.randint(1, 5)),
                        helper.make_attribute(attr.name, r.randint(-5, 40))])
        attr.CopyFrom(new)
    elif kind == "dangling_input":
        node = r.choice(list(g.node))
        node.input[r.randrange(len(node.input))] = f"nowhere_{seed}"
    elif kind == "bad_initializer":
        init = r.choice(list(g.initializer))
        arr = numpy_helper.to_array(init)
        shape = list(arr.shape) or [1]
        shape[r.randrange(len(shape))] += r.choice([-1, 1, 3])
        shape = [max(s, 0) for s in shape]
        init.CopyFrom(numpy_helper.from_array(
            np.random.default_rng(seed).standard_normal(shape).astype(np.float32), init.name))
    elif kind == "cycle":
        i = r.randrange(1, len(g.node))
        g.node[r.randrange(i)].input[0] = g.node[i].output[0]
    elif kind == "drop_node":
        del g.node[r.randrange(len(g.node))]
    elif kind == "bad_dtype":
        init = r.choice(list(g.initializer))
        arr = numpy_helper.to_array(init)
        dtype = r.choice([np.float64, np.int64, np.int8, np.float16])
        init.CopyFrom(numpy_helper.from_array(arr.astype(dtype), init.name))
    elif kind == "zero_dim":
        dims = g.input[0].type.tensor_type.shape.dim
        dims[r.randrange(1, len(dims))].dim_value = r.choice([0, 1, 100])
    buf = io.BytesIO()
    buf.write(m.SerializeToString())
    return kind, buf.getvalue()
