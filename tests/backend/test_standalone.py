"""The runtime-free C library on x86 (native) and aarch64 (qemu): bit-exact against the
reference, self-contained (no undefined symbol beyond libc/libm), sdot in the ARM conv."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import BUNDLED_CALIB, BUNDLED_MODEL, ROOT, make_model, save_calib, save_model
from onnx import helper

from qcompiler.api import compile_only, write_outputs
from qcompiler.backend.runtime import StandaloneModel
from qcompiler.errors import TargetError
from qcompiler.numerics.qparams import dtype_range
from qcompiler.reference import Reference

TARGETS = ["x86", "arm", "hexagon"]
ZIG = [sys.executable, "-m", "ziglang", "cc", "-static", "-target"]
CC = {"x86": ["cc"], "arm": [*ZIG, "aarch64-linux-musl"],
      "hexagon": [*ZIG, "hexagon-linux-musl", "-mcpu=hexagonv68+hvxv68+hvx_length128b"]}
RUN = {"x86": [], "arm": ["qemu-aarch64", "-cpu", "max"], "hexagon": ["qemu-hexagon", "-cpu", "v67"]}
NM = {"x86": "nm", "arm": "aarch64-linux-gnu-nm", "hexagon": "llvm-nm"}
# What a C library may still need from the system: libc, libm, pthreads; nothing of TVM
# or Python.
LIBC_LIBM = {"memcpy", "memset", "memmove", "abort", "__stack_chk_fail", "expf", "exp", "logf",
             "log", "tanhf", "tanh", "sqrtf", "sqrt", "powf", "pow", "floorf", "ceilf", "roundf",
             "nearbyintf", "fmaxf", "fminf", "fabsf", "erff", "erf", "__cxa_finalize",
             "_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__",
             "_GLOBAL_OFFSET_TABLE_",  # provided by the linker itself
             "__hexagon_divsi3", "__hexagon_udivsi3", "__hexagon_modsi3", "__hexagon_umodsi3",
             "__hexagon_divdi3", "__hexagon_udivdi3", "__hexagon_moddi3", "__hexagon_umoddi3",
             "__hexagon_memcpy_likely_aligned_min32bytes_mult8bytes",  # compiler-rt
             "__tls_get_addr",  # the thread-local pointer to the call's state
             *(f"pthread_{f}" for f in ("create", "join", "mutex_init", "mutex_destroy",
                                        "mutex_lock", "mutex_unlock", "cond_init",
                                        "cond_destroy", "cond_wait", "cond_signal",
                                        "cond_broadcast")),  # the kernels' thread pool
             "clock_gettime"}  # how long the pool's threads poll before they sleep


def _compile(model_path, calib_path, out, target, **kw):
    compiled = compile_only(model_path, calib_path, out, target=target, **kw)
    write_outputs(compiled, out)
    return compiled, StandaloneModel(out)


def _check(lib: StandaloneModel, compiled, rng, n=2, float_too=True):
    ref = Reference(compiled.quantized)
    spec = lib.inputs[0]
    lo, hi = dtype_range(spec["dtype"])
    for _ in range(n):
        q = rng.integers(lo, hi + 1, spec["shape"]).astype(spec["dtype"])
        np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])
    if float_too:
        x = rng.standard_normal(spec["shape"]).astype(np.float32)
        want = ref.run(lib.quantize_inputs(x)[0])[0]
        o = lib.outputs[0]
        deq = (want.astype(np.int32) - o["zero_point"]).astype(np.float32) * np.float32(o["scale"])
        np.testing.assert_array_equal(lib.run(x)[0], deq)


@pytest.fixture(scope="module", params=TARGETS)
def bundled(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"bundled_{request.param}")
    compiled, lib = _compile(BUNDLED_MODEL, BUNDLED_CALIB, out, request.param)
    return request.param, out, compiled, lib


def test_c_example_builds_with_the_readme_line_and_matches_reference(bundled, tmp_path):
    target, out, compiled, _ = bundled
    exe = tmp_path / "run_model"
    subprocess.run([*CC[target], "-O2", "-DMODEL=model", "-I", str(out),
                    str(ROOT / "examples" / "run_model.c"), str(out / "libmodel.a"), "-lm",
                    "-lpthread", "-o", str(exe)], check=True)
    images = np.load(BUNDLED_CALIB)["image"][:8]
    ref = Reference(compiled.quantized)
    lib = StandaloneModel(out)
    for x in images:
        q = lib.quantize_inputs(x[None])[0]
        q.tofile(tmp_path / "in.bin")
        res = subprocess.run([*RUN[target], str(exe), str(tmp_path / "in.bin"),
                              str(tmp_path / "out.bin"), "--int"], capture_output=True,
                             text=True, check=True)
        got = np.fromfile(tmp_path / "out.bin", dtype=lib.outputs[0]["dtype"])
        want = ref.run(q)[0].reshape(-1)
        np.testing.assert_array_equal(got, want)
        assert res.stdout.strip() == f"top class: {int(np.argmax(want))}"


def test_bundled_library_float_entry(bundled, rng):
    _, _, compiled, lib = bundled
    _check(lib, compiled, rng, n=3)


def test_no_undefined_symbols_beyond_libc_libm(bundled):
    target, out, _, _ = bundled
    for lib in ("libmodel.so", "libmodel.a"):
        res = subprocess.run([NM[target], "-u", str(out / lib)], capture_output=True, text=True,
                             check=True)
        # nm may print glibc's symbol versions (memset@GLIBC_2.2.5): the name is what counts.
        undefined = {ln.split()[-1].split("@")[0] for ln in res.stdout.splitlines()
                     if ln.strip() and not ln.endswith(":")}
        defined_res = subprocess.run([NM[target], "--defined-only", str(out / lib)],
                                     capture_output=True, text=True, check=True)
        defined = {ln.split()[-1] for ln in defined_res.stdout.splitlines()
                   if len(ln.split()) == 3}
        assert undefined - defined <= LIBC_LIBM, (lib, sorted(undefined - defined - LIBC_LIBM))


def test_arm_conv_kernel_uses_sdot(tmp_path):
    _, out = None, tmp_path / "arm"
    compile_only  # noqa: B018 - compiled below with a plain 3x3 conv
    w = np.random.default_rng(0).standard_normal((16, 8, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3],
                                         pads=[1] * 4)], {"x": (1, 8, 6, 6)}, {"y": None},
                       {"w": w})
    mp = save_model(model, tmp_path)
    cp = save_calib({"x": np.random.default_rng(1).standard_normal((4, 8, 6, 6))
                     .astype(np.float32)}, tmp_path)
    compiled, lib = _compile(mp, cp, out, "arm")
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn",
                          str(out / "libmodel.a")], capture_output=True, text=True, check=True)
    # The function bodies of the conv kernel (TVM names its body <kernel>_compute_).
    bodies = dis.stdout.split("\n\n")
    conv = [b for b in bodies if "conv2d_compute_>:" in b]
    assert conv and all("sdot" in b for b in conv)
    assert "sdot" not in "".join(b for b in bodies if "max_pool" in b)
    _check(lib, compiled, np.random.default_rng(2))


def _conv(cin, cout, k, s, p, g, hw=7):
    rng = np.random.default_rng(cin * 100 + cout)
    w = (rng.standard_normal((cout, cin // g, k, k)) * 0.4).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[s, s],
                            pads=[p] * 4, group=g)
    return [node, helper.make_node("Relu", ["c"], ["y"])], {"x": (1, cin, hw, hw)}, \
        {"w": w, "b": rng.standard_normal(cout).astype(np.float32)}


def _graph(kind: str, variant: int):
    rng = np.random.default_rng(variant)
    if kind == "conv":
        return _conv(*[(3, 8, 3, 1, 1, 1), (5, 7, 3, 2, 1, 1), (13, 6, 1, 1, 0, 1)][variant])
    if kind == "depthwise":
        c = [4, 9][variant]
        return _conv(c, c, 3, 1 + variant, 1, c)
    if kind == "dense":
        k, n = [(17, 5), (64, 10)][variant]
        return [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"x": (1, k)}, \
            {"w": rng.standard_normal((n, k)).astype(np.float32),
             "b": rng.standard_normal(n).astype(np.float32)}
    c = [3, 6][variant]
    shape = {"x": (1, c, 6, 6)}
    wa = rng.standard_normal((c, c, 1, 1)).astype(np.float32)
    wb = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.3
    two = [helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[1, 1]),
           helper.make_node("Conv", ["x", "wb"], ["b"], kernel_shape=[3, 3], pads=[1] * 4)]
    if kind == "add":
        return [*two, helper.make_node("Add", ["a", "b"], ["y"])], shape, {"wa": wa, "wb": wb}
    if kind == "concat":
        return [*two, helper.make_node("Concat", ["a", "b"], ["y"], axis=1)], shape, \
            {"wa": wa, "wb": wb}
    if kind == "identity":  # fuzz regression: no kernel writes the output (a memcpy does)
        return [helper.make_node("Identity", ["x"], ["y"])], {"x": (1, 1, 3, 3)}, {}
    if kind == "maxpool":
        return [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                 pads=[variant] * 4)], shape, {}
    if kind == "avgpool":
        return [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                 strides=[2, 2], pads=[1] * 4)], shape, {}
    return [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
            helper.make_node("Flatten", ["g"], ["y"])], shape, {}


OPS = [("conv", 0), ("conv", 1), ("conv", 2), ("depthwise", 0), ("depthwise", 1), ("dense", 0),
       ("dense", 1), ("add", 0), ("add", 1), ("concat", 0), ("concat", 1), ("maxpool", 0),
       ("maxpool", 1), ("avgpool", 0), ("gap_flatten", 0), ("gap_flatten", 1), ("identity", 0)]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind,variant", OPS, ids=[f"{k}{v}" for k, v in OPS])
def test_one_op_graphs_bit_exact(kind, variant, target, tmp_path, rng):
    nodes, inputs, inits = _graph(kind, variant)
    model = make_model(nodes, inputs, {"y": None}, inits)
    shape = next(iter(inputs.values()))
    calib = {"x": rng.standard_normal((4, *shape[1:])).astype(np.float32)}
    compiled, lib = _compile(save_model(model, tmp_path), save_calib(calib, tmp_path),
                             tmp_path / "out", target)
    _check(lib, compiled, rng, float_too=variant == 0)


def test_missing_cross_tools_are_named_with_the_install_line(tmp_path, monkeypatch):
    from qcompiler.targets import ARM, check_toolchain

    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64 on this PATH
    with pytest.raises(TargetError, match=r"qemu-aarch64 is missing \(it runs arm programs "
                                          r"here\): pip install ziglang .* apt-get install "
                                          r"qemu-user"):
        check_toolchain(ARM)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(TargetError, match=r"the arm cross compiler \(zig\) is missing"):
        check_toolchain(ARM)


def test_zig_steps_run_the_binary_python_m_ziglang_execs():
    from qcompiler.backend.toolchain import _zig_binary

    via_python = [sys.executable, "-m", "ziglang", "version"]
    direct = _zig_binary(via_python)
    assert direct[0].endswith("/ziglang/zig") and direct[1:] == ["version"]
    assert _zig_binary(["cc", "-c", "x.c"]) == ["cc", "-c", "x.c"]
    outputs = [subprocess.run(c, capture_output=True, text=True, check=True).stdout
               for c in (via_python, direct)]
    assert outputs[0] == outputs[1]


def test_missing_qemu_is_a_one_line_cli_error_before_any_output(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "qcompiler.cli", str(BUNDLED_MODEL), "--calib",
                          str(BUNDLED_CALIB), "--target", "arm", "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "qcompile: error: qemu-aarch64 is missing (it runs arm programs here): pip install "
        "ziglang (cross compiler) and apt-get install qemu-user (emulator)"]
    assert not (tmp_path / "o").exists()
