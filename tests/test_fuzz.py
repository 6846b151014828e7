"""Fuzzing: random valid graphs compiled vs the reference, and malformed models vs the CLI."""
from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import AVX2_TARGET, VNNI_TARGET, cpu_has, requires_cpu_for, vnni_target
from hypothesis import HealthCheck, given, settings
from qcompiler.targets.x86 import x86_target
from support.fuzz_graphs import (
    EXPORTED_KINDS,
    KINDS,
    GraphCase,
    base_model,
    check_case,
    cnn_graphs,
    found_on,
    load_case,
    mutate,
    save_case,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "fuzz").glob("*.onnx"))
# CI draws the same graphs on every run (derandomize: the examples follow from the test's
# source), so a verdict never depends on luck; new graphs are the job of the randomized long
# run (`pytest -m fuzz_long`, `tools/fuzz.py`), whose findings land in FIXTURES.
FUZZ = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck),
            print_blob=False)
CI = dict(FUZZ, derandomize=True)


# The CI graphs hold every layer kind the rules claim (`test_generator_draws_what_the_rules_
# accept` checks these very graphs); more cost 4 s each on 2 cores. The CNN graphs are those
# of the sessions before the exported layers (the same draws); the exported ones add tables,
# written-out chains, SE gates, Resize and ConvTranspose among convs and adds.
CI_GRAPHS = 60
CI_EXPORTED_GRAPHS = 24


@functools.cache
def ci_cases() -> list[GraphCase]:
    """The CI graphs: the derandomized draw (the seed follows from `draw`'s source, so both
    pytest-xdist workers and every run get the same list)."""
    cases: list[GraphCase] = []

    @settings(max_examples=CI_GRAPHS, **CI)
    @given(cnn_graphs())
    def draw(case: GraphCase) -> None:
        cases.append(case)

    draw()
    return cases


@functools.cache
def ci_exported_cases() -> list[GraphCase]:
    """The CI graphs of exported layers, drawn as `ci_cases`."""
    cases: list[GraphCase] = []

    @settings(max_examples=CI_EXPORTED_GRAPHS, **CI)
    @given(cnn_graphs(max_layers=4, max_channels=64, kinds=EXPORTED_KINDS))
    def draw(case: GraphCase) -> None:
        cases.append(case)

    draw()
    return cases


@pytest.mark.parametrize("index", range(CI_GRAPHS))
def test_random_graph_matches_reference(index):
    """On this machine's x86 target (AVX2 or VNNI, blocked layout where it has one); a
    schedule fallback fails too (`check_case`). One test a graph: the workers share them."""
    assert check_case(ci_cases()[index]) is None


@pytest.mark.parametrize("index", range(CI_EXPORTED_GRAPHS))
def test_random_exported_graph_matches_reference(index):
    """Graphs of the layers real exports add (tables, written-out chains, SE gates, Resize,
    ConvTranspose), on this machine's x86 target."""
    assert check_case(ci_exported_cases()[index]) is None


def _vnni_runs() -> bool:
    return all(cpu_has(f) for f in ("avx512f", "avx512bw", "avx512_vnni", "avx512vbmi"))


def test_16_random_graphs_build_for_x86_vnni_blocked_and_nchw():
    """The VNNI kernels (blocked layout and NCHW) are built for every graph whatever this CPU
    is, so a rule that raises or code LLVM rejects fails here; they run only where the CPU
    has VNNI (else the test ends skipped, after building)."""
    runs = _vnni_runs()

    @settings(max_examples=16, **CI)  # two builds each, ~10 s
    @given(cnn_graphs(max_layers=4, max_channels=64))
    def check(case: GraphCase) -> None:
        for blocked in (True, False):
            assert check_case(case, target=vnni_target(), blocked_layout=blocked,
                              run=runs) is None, f"blocked_layout={blocked}"

    check()
    requires_cpu_for(VNNI_TARGET)


@pytest.mark.skipif(not x86_target().has("avx512vnni"),
                    reason="this machine's own x86 target is AVX2: the 60 graphs above")
@settings(max_examples=30, **CI)
@given(cnn_graphs(max_layers=4, max_channels=64))
def test_30_random_graphs_match_reference_on_avx2(case):
    """AVX2 explicitly, for machines whose own target is VNNI (the 200 above cover it
    elsewhere)."""
    avx2 = dataclasses.replace(vnni_target(), tvm_target=AVX2_TARGET)
    assert check_case(case, target=avx2) is None


@settings(max_examples=20, **CI)
@given(cnn_graphs(max_layers=4, max_channels=64))
def test_20_random_graphs_match_reference_on_arm_under_qemu(case):
    assert check_case(case, target="arm") is None


@settings(max_examples=20, **CI)
@given(cnn_graphs(max_layers=4, max_channels=64))
def test_20_random_graphs_match_reference_on_hexagon_under_qemu(case):
    assert check_case(case, target="hexagon") is None


# Exported-layer graphs run again under qemu (~6 s a graph on Hexagon): 8 of the 24 with
# Resize, ConvTranspose, tables, chains and gates among them (the draws repeat a graph while
# hypothesis mutates it; `test_exported_graphs_draw_every_exported_layer` checks the mix).
QEMU_EXPORTED = (2, 3, 9, 10, 11, 16, 20, 21)


@pytest.mark.parametrize("target", ["arm", "hexagon"])
@pytest.mark.parametrize("index", QEMU_EXPORTED)
def test_exported_graph_matches_reference_under_qemu(index, target):
    assert check_case(ci_exported_cases()[index], target=target) is None


@pytest.mark.fuzz_long
@settings(max_examples=2000, **FUZZ)
@given(cnn_graphs(kinds=KINDS))
def test_2000_random_graphs_match_reference(case):
    assert check_case(case) is None


def _ci_graphs(n: int) -> list[bytes]:
    """The first `n` graphs the CI settings draw, serialized."""
    seen: list[bytes] = []

    @settings(max_examples=n, **CI)
    @given(cnn_graphs())
    def draw(case: GraphCase) -> None:
        seen.append(case.model.SerializeToString() + case.calib.tobytes())

    draw()
    return seen


def test_ci_draws_the_same_graphs_on_every_run():
    first = _ci_graphs(30)
    assert len(first) == 30 and len(set(first)) > 20
    assert _ci_graphs(30) == first


def test_a_case_round_trips_through_save_and_load(tmp_path):
    from hypothesis import find

    case = find(cnn_graphs(), lambda c: len(c.model.graph.node) > 2, settings=settings(**CI))
    save_case(case, tmp_path / "case")
    back = load_case(tmp_path / "case.onnx")
    assert back.model.SerializeToString() == case.model.SerializeToString()
    np.testing.assert_array_equal(back.calib, case.calib)
    assert (back.batch, back.seed) == (case.batch, case.seed)
    assert check_case(back) is None


FIXTURE_RUNS = [(path, target) for path in FIXTURES
                for target in dict.fromkeys(("x86", found_on(path)))]


@pytest.mark.parametrize(("path", "target"), FIXTURE_RUNS,
                         ids=[f"{p.stem}-{t}" for p, t in FIXTURE_RUNS])
def test_regression_fixture_matches_reference(path, target):
    """Each saved fuzz finding compiles for this machine, and for the target it was found on,
    and equals the reference bit for bit (depthwise_1x1_stride2_dilation2: a 1x1 depthwise
    conv whose taps all read one column phase, which once broke the x86 depthwise schedule;
    depthwise_1x3_one_output_column: one output column, where the x86 depthwise epilogue
    vectorized the row loop; dense_batch2_input_not_whole_vectors: a batch-2 dense layer whose
    packed input, vectorized across the batch, became an HVX table lookup LLVM rejected;
    resize_align_corners_to_one_pixel: a 1x1 map resized to 1x1 under align_corners, whose
    (in - 1) / (out - 1) TVM divided by zero: `normalize.resize_align_corners_to_one`;
    depthwise_stride3_reads_two_phases: a 1x2 depthwise filter at width stride 3, whose taps
    read 2 of the 3 column phases, which the x86 depthwise schedule took for stride 2's
    deinterleave: a tensorize error, the layer left on its portable kernel;
    dw_window_one_row: a 2x1 depthwise conv on a 1x1 map, whose padded rows, compacted to a
    small stack array, the VNNI window intrinsic's 64-byte load read past: LLVM made the
    padding row's bytes undefined, now a load masked to the window; hvx_add_48_lanes: a
    residual add of 3 4x4 planes, one 48-lane HVX vector, whose last 16 lanes LLVM's HVX
    backend computed as the zero point: power-of-two chunks, `hexagon.loops.vectorize_loop`)."""
    assert check_case(load_case(path), target=target) is None, path.name


def test_generator_covers_the_supported_ops():
    from hypothesis import find

    ops_seen: set[str] = set()

    def covers(case: GraphCase) -> bool:
        ops_seen.update(n.op_type for n in case.model.graph.node)
        return {"Conv", "Add", "Concat", "MaxPool", "AveragePool", "Gemm",
                "BatchNormalization", "Clip", "Relu", "Mul", "Div", "Sigmoid", "Tanh",
                "HardSigmoid", "HardSwish", "LeakyRelu", "Resize", "ConvTranspose"} <= ops_seen

    find(cnn_graphs(kinds=KINDS), covers, settings=settings(max_examples=2000, **CI))


def _features(case: GraphCase) -> set[str]:
    """What of the rules' accepted space (`cnn_graphs`' docstring) one case draws."""
    from onnx import helper

    seen = {f"weight_bits={case.weight_bits}", f"activation_bits={case.activation_bits}",
            f"per_channel={case.per_channel}", f"batch={case.batch}"}
    dims = [d.dim_value for d in case.model.graph.input[0].type.tensor_type.shape.dim]
    seen |= {"h!=w"} if dims[2] != dims[3] else set()
    seen |= {"wide"} if dims[3] > 12 else set()
    inits = {i.name: i for i in case.model.graph.initializer}
    for node in case.model.graph.node:
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        if node.op_type in ("Conv", "MaxPool", "AveragePool"):
            kh, kw = a["kernel_shape"]
            sh, sw = a.get("strides", [1, 1])
            pads = a.get("pads", [0] * 4)
            seen |= {f"{node.op_type} kh!=kw"} if kh != kw else set()
            seen |= {f"{node.op_type} sh!=sw"} if sh != sw else set()
            seen |= {f"{node.op_type} asymmetric pads"} if pads[:2] != pads[2:] else set()
        if node.op_type == "Conv":
            dh, dw = a.get("dilations", [1, 1])
            seen |= {f"dilation {max(dh, dw)}", f"stride {max(a.get('strides', [1, 1]))}",
                     f"kernel {max(a['kernel_shape'])}"}
            seen |= {"dh!=dw"} if dh != dw else set()
            cout, cin_g = inits[node.input[1]].dims[:2]
            g = a.get("group", 1)
            seen |= {"depthwise x2" if cout == 2 * g and cin_g == 1 else
                     "depthwise" if cout == g and cin_g == 1 and g > 1 else
                     "grouped" if g > 1 else "groups 1"}
        if node.op_type == "Flatten" and node.input[0] != "gap":
            seen.add("dense on a flattened map")
        if node.op_type == "ConvTranspose":
            seen |= {"ConvTranspose"} | ({"ConvTranspose stride > 1"}
                                         if max(a["strides"]) > 1 else set())
        if node.op_type == "Resize":
            seen.add(f"Resize {a['mode'].decode()}")
        if node.op_type in ("Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu"):
            seen.add("table")
        if node.op_type == "Div" or node.op_type == "Mul" and node.input[1].endswith("_s"):
            seen.add("written-out chain")  # hard-swish or SiLU as elementwise ops
        if node.op_type == "Mul" and node.input[1].endswith("_g"):
            seen.add("SE gate")
    return seen


def test_generator_draws_what_the_rules_accept():
    """The CI graphs include every kind of layer the schedule rules claim (their docstrings):
    a rule that raises on one of them is a fallback `check_case` reports."""
    wanted = {"weight_bits=4", "activation_bits=16", "per_channel=False", "batch=2", "h!=w",
              "wide", "Conv kh!=kw", "Conv sh!=sw", "dh!=dw", "Conv asymmetric pads",
              "MaxPool kh!=kw", "MaxPool asymmetric pads", "dilation 3",
              "stride 3", "kernel 2", "kernel 5", "depthwise", "depthwise x2", "grouped",
              "groups 1", "dense on a flattened map"}
    # (an AveragePool with unequal strides: tests/test_pool_ceil_mode.py draws it explicitly,
    # since the ceil_mode draw moved the fixed seed's graphs)
    assert len(ci_cases()) == CI_GRAPHS
    seen = set().union(*map(_features, ci_cases()))
    assert wanted <= seen, sorted(wanted - seen)


def test_exported_graphs_draw_every_exported_layer():
    wanted = {"ConvTranspose", "ConvTranspose stride > 1", "Resize nearest", "Resize linear",
              "table", "written-out chain", "SE gate", "activation_bits=16"}
    assert len(ci_exported_cases()) == CI_EXPORTED_GRAPHS
    seen = set().union(*map(_features, ci_exported_cases()))
    assert wanted <= seen, sorted(wanted - seen)
    under_qemu = {n.op_type for i in QEMU_EXPORTED
                  for n in ci_exported_cases()[i].model.graph.node}
    assert {"Resize", "ConvTranspose", "Mul", "Div", "Sigmoid", "HardSigmoid"} <= under_qemu


def test_mutations_really_change_the_model():
    base = base_model().SerializeToString()
    kinds = {mutate(base_model(), s)[0] for s in range(20)}
    assert len(kinds) == 9
    assert all(mutate(base_model(), s)[1] != base for s in range(20))


def test_200_malformed_models_never_traceback(tmp_path):
    # A separate process: a hard crash (not just an exception) fails this test too.
    # (200: every mutation kind many times over; `tools/fuzz_malformed.py --n 1000` before
    # a submission that touches the frontend)
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz_malformed.py"), "--n", "200",
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                         timeout=1800)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "200 malformed models" in res.stdout and "0 tracebacks/timeouts, 0 failures" in res.stdout
