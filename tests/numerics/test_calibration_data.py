"""Calibration inputs: npz and folder forms, and what the compiled qparams come from."""
from __future__ import annotations

import numpy as np
import pytest

from qcompiler.errors import CalibrationDataError
from qcompiler.frontend.onnx_import import ModelInput
from qcompiler.numerics.calibrate import calibration_batch, load_calibration

INPUTS = [ModelInput("image", (1, 1, 4, 4), "float32", True)]


def test_folder_of_npy_files_is_stacked(tmp_path, rng):
    a = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)
    b = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "part0.npy", a)
    np.save(tmp_path / "part1.npy", b)
    data = load_calibration(tmp_path, INPUTS)
    np.testing.assert_array_equal(data["image"], np.concatenate([a, b]))


def test_folder_with_named_input_file(tmp_path, rng):
    a = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "image.npy", a)
    np.save(tmp_path / "other.npy", np.zeros((9, 9), np.float32))  # ignored: name wins
    np.testing.assert_array_equal(load_calibration(tmp_path, INPUTS)["image"], a)


def test_npz_limit_and_missing_key(tmp_path, rng):
    path = tmp_path / "c.npz"
    np.savez(path, image=rng.standard_normal((10, 1, 4, 4)).astype(np.float32))
    assert load_calibration(path, INPUTS, limit=4)["image"].shape == (4, 1, 4, 4)
    two = [*INPUTS, ModelInput("mask", (1, 4), "float32", True)]
    with pytest.raises(CalibrationDataError, match=r"c\.npz: no array for model input 'mask'"):
        load_calibration(path, two)


def test_unreadable_file_is_a_calibration_error(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CalibrationDataError, match=r"c\.npz: cannot read calibration data"):
        load_calibration(path, INPUTS)


@pytest.mark.parametrize("n,expect", [(256, 32), (7, 7), (37, 1), (60, 30)])
def test_calibration_batch_divides(n, expect):
    assert calibration_batch(n) == expect


def test_a_graph_calibrated_again_is_not_compiled_again(rng, monkeypatch):
    """Two imports of one model give one probe build; the qparams are the same."""
    import tvm
    from conftest import make_model
    from onnx import helper
    from qcompiler.targets.x86 import x86_target

    from qcompiler.numerics.calibrate import calibrate
    from qcompiler.pipeline import float_graph

    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["image", "w"], ["y"], kernel_shape=[3, 3])],
                       {"image": (1, 1, 6, 6)}, {"y": None}, {"w": w})
    data = {"image": rng.standard_normal((3, 1, 6, 6)).astype(np.float32)}
    host = tvm.target.Target(x86_target().tvm_target)
    built = []
    real = tvm.compile
    monkeypatch.setattr(tvm, "compile", lambda *a, **k: built.append(a) or real(*a, **k))
    inputs = [ModelInput("image", (1, 1, 6, 6), "float32", True)]
    runs = [calibrate(float_graph(model, inputs), data, "percentile", "uint8", 99.99, host,
                      False) for _ in range(2)]
    assert len(built) <= 1  # none if an earlier test built this graph
    assert runs[0] == runs[1]
