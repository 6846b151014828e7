"""Fuzzing: random valid graphs compiled vs the reference, and malformed models vs the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from support.fuzz_graphs import (
    GraphCase,
    base_model,
    check_case,
    cnn_graphs,
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


@settings(max_examples=200, **CI)
@given(cnn_graphs())
def test_200_random_graphs_match_reference(case):
    assert check_case(case) is None


@settings(max_examples=20, **CI)
@given(cnn_graphs(max_layers=4, max_channels=64))
def test_20_random_graphs_match_reference_on_arm_under_qemu(case):
    assert check_case(case, target="arm") is None


@settings(max_examples=20, **CI)
@given(cnn_graphs(max_layers=4, max_channels=64))
def test_20_random_graphs_match_reference_on_hexagon_under_qemu(case):
    assert check_case(case, target="hexagon") is None


@pytest.mark.fuzz_long
@settings(max_examples=2000, **FUZZ)
@given(cnn_graphs())
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


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_regression_fixture_matches_reference(path):
    """Each saved fuzz finding compiles for this machine and equals the reference bit for bit
    (depthwise_1x1_stride2_dilation2: a 1x1 depthwise conv whose taps all read one column
    phase, which once broke the x86 depthwise schedule)."""
    assert check_case(load_case(path)) is None, path.name


def test_generator_covers_the_supported_ops():
    from hypothesis import find

    ops_seen: set[str] = set()

    def covers(case: GraphCase) -> bool:
        ops_seen.update(n.op_type for n in case.model.graph.node)
        return {"Conv", "Add", "Concat", "MaxPool", "AveragePool", "Gemm",
                "BatchNormalization", "Clip", "Relu"} <= ops_seen

    find(cnn_graphs(), covers, settings=settings(max_examples=2000, **CI))


def test_mutations_really_change_the_model():
    base = base_model().SerializeToString()
    kinds = {mutate(base_model(), s)[0] for s in range(20)}
    assert len(kinds) == 9
    assert all(mutate(base_model(), s)[1] != base for s in range(20))


def test_500_malformed_models_never_traceback(tmp_path):
    # A separate process: a hard crash (not just an exception) fails this test too.
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz_malformed.py"), "--n", "500",
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                         timeout=1800)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "500 malformed models" in res.stdout and "0 tracebacks/timeouts, 0 failures" in res.stdout
