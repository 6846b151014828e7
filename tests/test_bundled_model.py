"""The bundled Fashion-MNIST CNN: bit-exact library, accuracy on the real test set, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import BUNDLED_CALIB, BUNDLED_MODEL

import qcompiler
from qcompiler.evaluation.datasets import load_fashion_mnist
from qcompiler.evaluation.metrics import float_predictions, int8_predictions


@pytest.fixture(scope="module")
def test_set():
    return load_fashion_mnist("t10k")


@pytest.fixture(scope="module")
def batch100(tmp_path_factory):
    """Compiled once at batch 100 with the default observer, plus its reference."""
    from qcompiler.api import compile_only, write_outputs
    from qcompiler.reference import Reference

    out = tmp_path_factory.mktemp("fashion") / "out"
    compiled = compile_only(BUNDLED_MODEL, BUNDLED_CALIB, out, batch=100)
    write_outputs(compiled, out)
    return qcompiler.load(out), Reference(compiled.quantized, compiled.tvm_target)


def test_all_ops_integer_and_bn_folded(batch100):
    lib, ref = batch100
    layers = lib.meta["layers"]
    assert all(x["status"] == "integer" for x in layers)
    ops = [x["op"] for x in layers]
    assert ops.count("conv2d") == 6 and "add" in ops and "concat" in ops and "dense" in ops
    assert "batch_norm" not in ref.mod.script()


def test_library_equals_reference_on_1000_test_images(batch100, test_set):
    lib, ref = batch100
    images, _ = test_set
    _, bad, total = int8_predictions(lib, ref, images[:1000])
    assert total == 1000 * 10 and bad == 0


def test_calls_share_one_staged_input_and_stay_independent(batch100, test_set):
    """Every call copies its input into the same aligned tensor (`CompiledModel._check`): a
    call's result depends on its own input only, however calls interleave."""
    lib, ref = batch100
    images, _ = test_set
    shape = lib.inputs[0]["shape"]
    a, b = (images[i * 100:(i + 1) * 100].reshape(shape).astype(np.float32) for i in (0, 1))
    qa, qb = lib.quantize_inputs(a)[0], lib.quantize_inputs(b)[0]
    first = lib.run(a)[0]
    other = lib.run_int(qb)[0]
    lib.run(b)
    np.testing.assert_array_equal(lib.run(a)[0], first)
    np.testing.assert_array_equal(other, ref.run(qb)[0])
    np.testing.assert_array_equal(lib.run_int(qa)[0], ref.run(qa)[0])
    assert not np.array_equal(lib.run_int(qa)[0], other)
    assert sorted(lib._staged) == ["float", "int"]
    assert all(len(s) == 1 for s in lib._staged.values())


def test_inputs_of_the_wrong_shape_or_dtype_are_refused_before_the_copy(batch100, test_set):
    from qcompiler.errors import QCompileError

    lib, ref = batch100
    images, _ = test_set
    shape = lib.inputs[0]["shape"]
    q = lib.quantize_inputs(images[:100].reshape(shape).astype(np.float32))[0]
    with pytest.raises(QCompileError, match=r"expected uint8 \[100, 1, 28, 28\], got int8"):
        lib.run_int(q.astype(np.int8))
    with pytest.raises(QCompileError,
                       match=r"expected float32 \[100, 1, 28, 28\], got float32 \[1"):
        lib.run(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(QCompileError, match="expected 1 input"):
        lib.run_int(q, q)
    # an input in another memory order is copied as what it is
    np.testing.assert_array_equal(lib.run_int(np.asfortranarray(q))[0], ref.run(q)[0])


@pytest.mark.slow
@pytest.mark.parametrize("observer", ["percentile", "minmax", "mse"])
def test_int8_top1_within_one_point_of_float(observer, tmp_path, test_set):
    images, labels = test_set
    lib = qcompiler.compile(BUNDLED_MODEL, BUNDLED_CALIB, tmp_path / "o", batch=500,
                            observer=observer)
    int8, _, _ = int8_predictions(lib, None, images)
    fl = float_predictions(str(BUNDLED_MODEL), images, "image")
    top_f, top_i = (fl == labels).mean(), (int8 == labels).mean()
    print(f"{observer}: float {100 * top_f:.2f}% int8 {100 * top_i:.2f}%")
    assert len(int8) == 10000
    assert top_f > 0.85  # the model is really trained
    assert abs(top_i - top_f) <= 0.01


def test_main_job_cli_summary(tmp_path):
    out = tmp_path / "build"
    # A torch that ends the process if imported: TVM's FFI imports torch when it is there
    # (5 s of start-up, the export extra installs it), and the compiler never needs it.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise SystemExit('torch was imported')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    res = subprocess.run([sys.executable, "-m", "qcompiler.cli", str(BUNDLED_MODEL), "--calib",
                          str(BUNDLED_CALIB), "--eval", "fashion-mnist", "--eval-limit", "300",
                          "-o", str(out), "--quiet"], check=False, capture_output=True,
                         text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "ops:        12/12 integer; no float fallback" in text
    assert "bit-exact:  yes" in text and "(3000/3000 output elements equal over 300 images)" in text
    assert "top-1:      float" in text and "latency:" in text
    meta = json.loads((out / "model.json").read_text())
    assert meta["target"] == "x86" and meta["inputs"][0]["dtype"] == "uint8"
    assert meta["inputs"][0]["shape"] == [1, 1, 28, 28]
    assert {"scale", "zero_point"} <= set(meta["outputs"][0])
    assert sorted(p.name for p in out.iterdir()) == [
        "fashion_cnn.h", "libfashion_cnn.a", "libfashion_cnn.so", "model.json", "model.so",
        "run_model"]  # the C library takes the model file's stem as its name
    assert "library:    libfashion_cnn.a" in text and "workspace" in text
    x = np.load(BUNDLED_CALIB)["image"][:1]
    assert qcompiler.load(out).run(x)[0].shape == (1, 10)
