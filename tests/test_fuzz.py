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
FUZZ = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=200, **FUZZ)
@given(cnn_graphs())
def test_200_random_graphs_match_reference(case):
    assert check_case(case) is None


@settings(max_examples=20, **FUZZ)
@given(cnn_graphs(max_layers=4, max_channels=64))
def test_20_random_graphs_match_reference_on_arm_under_qemu(case):
    assert check_case(case, target="arm") is None


@settings(max_examples=20, **FUZZ)
@given(cnn_graphs(max_layers=4, max_channels=64))
def test_20_random_graphs_match_reference_on_hexagon_under_qemu(case):
    assert check_case(case, target="hexagon") is None


@pytest.mark.fuzz_long
@settings(max_examples=2000, **FUZZ)
@given(cnn_graphs())
def test_2000_random_graphs_match_reference(case):
    assert check_case(case) is None


def test_regression_fixtures_round_trip_and_pass(tmp_path):
    """Every saved fuzz regression still matches; a fresh case survives save/load unchanged."""
    from hypothesis import find

    case = find(cnn_graphs(), lambda c: len(c.model.graph.node) > 2,
                settings=settings(**FUZZ))
    save_case(case, tmp_path / "case")
    back = load_case(tmp_path / "case.onnx")
    assert back.model.SerializeToString() == case.model.SerializeToString()
    np.testing.assert_array_equal(back.calib, case.calib)
    assert (back.batch, back.seed) == (case.batch, case.seed)
    for path in [tmp_path / "case.onnx", *FIXTURES]:
        assert check_case(load_case(path)) is None, path.name


def test_generator_covers_the_supported_ops():
    from hypothesis import find

    ops_seen: set[str] = set()

    def covers(case: GraphCase) -> bool:
        ops_seen.update(n.op_type for n in case.model.graph.node)
        return {"Conv", "Add", "Concat", "MaxPool", "AveragePool", "Gemm",
                "BatchNormalization", "Clip", "Relu"} <= ops_seen

    find(cnn_graphs(), covers, settings=settings(max_examples=2000, **FUZZ))


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
