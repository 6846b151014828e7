"""The ONNX wheel's light model zoo: each compiles for x86 with every conv, pool, add and concat
integer, runs bit for bit like the reference, and stays close to the float model."""
from __future__ import annotations

import os

import onnx
import pytest
from support.model_zoo import LIGHT_MODELS, MUST_BE_INTEGER, check_model, light_model_path

# What may stay float: the pieces TVM's frontend makes of LRN (no integer kernel by design).
LRN_PIECES = {"expand_dims", "power", "nn.avg_pool3d", "squeeze", "multiply", "divide"}


# The two largest (6 and 5 minutes on CI's 2 cores) add no layer kind the others lack (dense
# blocks' concats: inception; plain 3x3 stacks: alexnet, zfnet512, resnet50): they run with
# QCOMPILER_ZOO_FULL=1, as the full real-export zoo does.
FULL_ONLY = {"densenet121", "vgg19"}
FULL = os.environ.get("QCOMPILER_ZOO_FULL") == "1"


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.skipif(n in FULL_ONLY and not FULL,
                                             reason="QCOMPILER_ZOO_FULL=1 runs the largest"))
    for n in LIGHT_MODELS])
def test_zoo_model(name, tmp_path):
    r = check_model(name, tmp_path / "lib")
    assert r.bit_exact
    not_integer = [x["op"] for x in r.layers
                   if x["op"] in MUST_BE_INTEGER and x["status"] != "integer"]
    # An LRN is `x / (k + alpha/n sum x^2)^beta`: its add of the constant k is the only float
    # add allowed, in the float island (or, with what follows it, one integer table:
    # `passes.fuse_elementwise`).
    n_lrn = sum(n.op_type == "LRN" for n in onnx.load(str(light_model_path(name))).graph.node)
    assert set(not_integer) <= {"add"} and len(not_integer) <= n_lrn, not_integer
    assert set(r.float_ops) <= (LRN_PIECES | {"add"} if n_lrn else set()), r.float_ops
    assert sum(x["op"] == "conv2d" for x in r.layers) >= 5
    # Softmax outputs of untrained networks: int8 within a few percent of the float model.
    assert r.sqnr_db > 20.0, r.sqnr_db
