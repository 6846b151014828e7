"""Bad input: one line on stderr naming the file/node/op, exit status 2, no traceback, and no
output written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import BUNDLED_CALIB, BUNDLED_MODEL, make_model
from onnx import helper


def qcompile(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qcompiler.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_user_error(res: subprocess.CompletedProcess, pattern: str, out: Path) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("qcompile: error: ")
    assert "Traceback" not in res.stderr + res.stdout
    import re
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def test_missing_model_file(tmp_path, out):
    res = qcompile(tmp_path / "nope.onnx", "--calib", BUNDLED_CALIB, "-o", out, cwd=tmp_path)
    assert_user_error(res, r"nope\.onnx: no such file$", out)


def test_file_that_is_not_onnx(tmp_path, out):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a protobuf\n" * 10)
    res = qcompile(bad, "--calib", BUNDLED_CALIB, "-o", out, cwd=tmp_path)
    assert_user_error(res, r"notes\.onnx: not an ONNX model", out)


def test_graph_that_fails_the_checker(tmp_path, out):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (1, 4)}, {"y": None})
    model.graph.node[0].input[0] = "undefined_tensor"
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    res = qcompile(path, "--calib", BUNDLED_CALIB, "-o", out, cwd=tmp_path)
    assert_user_error(res, r"broken\.onnx: fails onnx\.checker: .*undefined_tensor", out)


def test_unsupported_ops_listed_in_one_error(tmp_path, out):
    nodes = [helper.make_node("Cos", ["x"], ["a"], name="cos_1"),
             helper.make_node("Relu", ["a"], ["b"], name="relu_1"),
             helper.make_node("Floor", ["b"], ["c"], name="floor_1"),
             helper.make_node("Cos", ["c"], ["y"], name="cos_2")]
    path = tmp_path / "ops.onnx"
    onnx.save(make_model(nodes, {"x": (1, 4)}, {"y": None}), str(path))
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.zeros((2, 4), np.float32))
    res = qcompile(path, "--calib", calib, "-o", out, cwd=tmp_path)
    assert_user_error(res, r"unsupported: op Cos at node\(s\) cos_1, cos_2; "
                           r"op Floor at node\(s\) floor_1$", out)


def test_window_larger_than_its_input_named(tmp_path, out):
    """ONNX's shape inference rounds this pool's output up to 1x1 (the checker passes it);
    TVM makes it 0x0, and the mean after it once divided by zero in a later pass."""
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool_7", kernel_shape=[7, 7],
                              strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["y"], name="gap")]
    path = tmp_path / "window.onnx"
    onnx.save(make_model(nodes, {"x": (1, 2, 6, 6)}, {"y": None}), str(path))
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.zeros((2, 2, 6, 6), np.float32))
    res = qcompile(path, "--calib", calib, "-o", out, cwd=tmp_path)
    assert_user_error(res, r"node 'pool_7' \(MaxPool\): its output has shape \[1, 2, 0, 0\], "
                           r"with no elements", out)


def test_unsupported_attribute_named(tmp_path, out):
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool_9", kernel_shape=[2, 2],
                            ceil_mode=1, auto_pad="SAME_UPPER")
    path = tmp_path / "attr.onnx"
    onnx.save(make_model([node], {"x": (1, 1, 5, 5)}, {"y": None}), str(path))
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.zeros((2, 1, 5, 5), np.float32))
    res = qcompile(path, "--calib", calib, "-o", out, cwd=tmp_path)
    assert_user_error(res, r"attribute pool_9 \(MaxPool\): ceil_mode=1 with "
                           r"auto_pad=SAME_UPPER", out)


@pytest.mark.parametrize("data,pattern", [
    (np.zeros((4, 1, 27, 28), np.float32),
     r"input 'image' has shape \(4, 1, 27, 28\), expected \(N, 1, 28, 28\)"),
    (np.zeros((4, 1, 28, 28), np.float64), r"input 'image' has dtype float64, expected float32"),
    (np.zeros((0, 1, 28, 28), np.float32), r"input 'image' has 0 samples"),
    (np.full((4, 1, 28, 28), np.nan, np.float32), r"input 'image' contains NaN or Inf"),
], ids=["shape", "dtype", "empty", "nan"])
def test_bad_calibration_data(data, pattern, tmp_path, out):
    calib = tmp_path / "calib.npz"
    np.savez(calib, image=data)
    res = qcompile(BUNDLED_MODEL, "--calib", calib, "-o", out, cwd=tmp_path)
    assert_user_error(res, r"calib\.npz: " + pattern, out)


def test_missing_calibration_file(tmp_path, out):
    res = qcompile(BUNDLED_MODEL, "--calib", tmp_path / "none.npz", "-o", out, cwd=tmp_path)
    assert_user_error(res, r"none\.npz: no such calibration file or folder", out)


def test_unknown_target(tmp_path, out):
    res = qcompile(BUNDLED_MODEL, "--calib", BUNDLED_CALIB, "--target", "riscv", "-o", out,
                   cwd=tmp_path)
    assert_user_error(res, r"unknown target 'riscv': choose one of x86", out)


def test_zero_threads(tmp_path, out):
    res = qcompile(BUNDLED_MODEL, "--calib", BUNDLED_CALIB, "--threads", "0", "-o", out,
                   cwd=tmp_path)
    assert_user_error(res, r"--threads 0: must be at least 1", out)


def test_output_folder_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "sub"
    res = qcompile(BUNDLED_MODEL, "--calib", BUNDLED_CALIB, "-o", out, cwd=tmp_path)
    assert_user_error(res, r"sub: cannot create output folder \(.*a_file is a file\)", out)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("args,pattern", [
    (["--tune", "2", "--rpc-tracker", "localhost"], r"rpc_tracker 'localhost': give HOST:PORT:KEY"),
    (["--rpc-tracker", "127.0.0.1:9190:k"], r"rpc_tracker is where tuning runs: give tune_trials"),
    (["--tune", "-3"], r"tune_trials must be >= 0, got -3"),
    (["--target", "hexagon", "--tune", "2", "--rpc-tracker", "127.0.0.1:9190:k"],
     r"hexagon is measured by counting instructions under qemu"),
])
def test_bad_tuning_options(tmp_path, out, args, pattern):
    res = qcompile(BUNDLED_MODEL, "--calib", BUNDLED_CALIB, "-o", out, *args, cwd=tmp_path)
    assert_user_error(res, pattern, out)


def test_tuning_database_that_cannot_be_created(tmp_path, out):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = qcompile(BUNDLED_MODEL, "--calib", BUNDLED_CALIB, "-o", out, "--tune", "1",
                   "--tuning-db", blocker / "db", cwd=tmp_path)
    assert_user_error(res, r"tuning database \S*file/db: \S*file is not writable", out)
