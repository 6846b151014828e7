"""The C library in an application: three models in one program (static and shared), called
from 4 threads with their own workspaces, under ThreadSanitizer and AddressSanitizer +
UBSan, and under qemu for arm; bad arguments give codes and messages (multi_model.c). Also
`--name`, the symbols a library exports, and `CompiledModel.run` from several threads."""
from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLED_CALIB, BUNDLED_MODEL, make_model, save_calib, save_model
from onnx import helper

from qcompiler.api import compile_only
from qcompiler.backend.c_source import exported_symbols
from qcompiler.backend.emit import build, emit
from qcompiler.backend.runtime import CompiledModel
from qcompiler.backend.toolchain import compile_library
from qcompiler.config import CompileConfig
from qcompiler.errors import QCompileError
from qcompiler.reference import Reference

PROGRAM = Path(__file__).parent / "multi_model.c"
ZIG_ARM = [sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-musl"]
NAMES = ("ma", "mb", "mc")


def _small_graph(kind: str, folder: Path) -> tuple[Path, Path]:
    """Two small generated models: a conv stack with pooling, and two convs added."""
    rng = np.random.default_rng(len(kind))
    w = {k: (rng.standard_normal(s) * 0.3).astype(np.float32)
         for k, s in (("wa", (8, 3, 3, 3)), ("wb", (8, 8, 3, 3)), ("wc", (8, 3, 1, 1)))}
    if kind == "stack":
        nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
                 helper.make_node("Relu", ["a"], ["r"]),
                 helper.make_node("Conv", ["r", "wb"], ["b"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1] * 4),
                 helper.make_node("GlobalAveragePool", ["b"], ["g"]),
                 helper.make_node("Flatten", ["g"], ["y"])]
    else:
        nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
                 helper.make_node("Conv", ["x", "wc"], ["c"], kernel_shape=[1, 1]),
                 helper.make_node("Add", ["a", "c"], ["y"])]
    inits = {k: v for k, v in w.items() if any(k in n.input for n in nodes)}
    model = make_model(nodes, {"x": (1, 3, 16, 16)}, {"y": None}, inits)
    calib = {"x": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    return save_model(model, folder, f"{kind}.onnx"), save_calib(calib, folder, f"{kind}.npz")


def _build_three(target: str, root: Path) -> dict:
    """ma: the bundled CNN (with model.so where it runs here), mb, mc: generated graphs."""
    models = {"ma": (BUNDLED_MODEL, BUNDLED_CALIB), "mb": _small_graph("stack", root),
              "mc": _small_graph("add", root)}
    built = {}
    for name, (mp, cp) in models.items():
        out, src = root / name, root / f"{name}_src"
        src.mkdir(parents=True)
        compiled = compile_only(mp, cp, out, target=target)
        exe = build(compiled) if name == "ma" else None
        emit(compiled, exe, out, name, sources=src)
        built[name] = (out, src, compiled)
    return built


@pytest.fixture(scope="module")
def x86_three(tmp_path_factory):
    return _build_three("x86", tmp_path_factory.mktemp("three_x86"))


def _rebuild(built: dict, root: Path, cflags: tuple[str, ...]) -> dict[str, Path]:
    """Each library again from its sources with `cflags` (the sanitizer instruments the
    driver: the pool, the hooks, the state in the workspace)."""
    folders = {}
    for name, (_, src, compiled) in built.items():
        folders[name] = root / name
        shutil.copytree(src, folders[name])
        compile_library(compiled.target, folders[name], name, exported_symbols(name), cflags)
    return folders


def _link_and_run(cc: list[str], folders: dict[str, Path], exe: Path, flags: list[str],
                  shared: bool, run: list[str]) -> subprocess.CompletedProcess:
    libs = [a for n, f in folders.items() for a in
            ((f"-L{f}", f"-l{n}", f"-Wl,-rpath,{f}") if shared else (str(f / f"lib{n}.a"),))]
    subprocess.run([*cc, "-O1", "-g", "-std=c11", *flags,
                    *[f"-I{f}" for f in folders.values()], str(PROGRAM), *libs, "-lm",
                    "-lpthread", "-o", str(exe)], check=True)
    return subprocess.run([*run, str(exe)], capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.mark.slow
@pytest.mark.parametrize("sanitizer", ["thread", "address,undefined"])
def test_three_models_four_threads_under_sanitizers(x86_three, sanitizer, tmp_path):
    flags = [f"-fsanitize={sanitizer}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    folders = _rebuild(x86_three, tmp_path, tuple(flags))
    for shared in (False, True):
        res = _link_and_run(["cc"], folders, tmp_path / f"multi_{shared}", flags, shared, [])
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.strip() == "ok 400"
        assert "Sanitizer" not in res.stderr and "runtime error" not in res.stderr


@pytest.mark.slow
def test_three_models_four_threads_on_arm_under_qemu(tmp_path):
    (tmp_path / "build").mkdir()
    built = _build_three("arm", tmp_path / "build")
    folders = {n: out for n, (out, _, _) in built.items()}
    res = _link_and_run(ZIG_ARM, folders, tmp_path / "multi", ["-static"], False,
                        ["qemu-aarch64", "-cpu", "max"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "ok 400"


@pytest.mark.slow
def test_every_global_symbol_is_the_named_librarys(x86_three):
    for name, (out, _, _) in x86_three.items():
        for lib in (f"lib{name}.a", f"lib{name}.so"):
            res = subprocess.run(["nm", "-g", "--defined-only", str(out / lib)],
                                 capture_output=True, text=True, check=True)
            defined = {ln.split()[-1] for ln in res.stdout.splitlines() if len(ln.split()) == 3}
            assert defined == set(exported_symbols(name)), (lib, sorted(defined))
        header = (out / f"{name}.h").read_text()
        assert f"#define {name.upper()}_ABI_VERSION" in header
        assert f"static const {name}_tensor {name}_inputs[{name.upper()}_NUM_INPUTS]" in header


@pytest.mark.slow
def test_compiled_model_run_from_a_thread_pool_is_bit_exact(x86_three, rng):
    out, _, compiled = x86_three["ma"]
    lib = CompiledModel(out)
    ref = Reference(compiled.quantized)
    xs = [rng.standard_normal(lib.inputs[0]["shape"]).astype(np.float32) for _ in range(12)]
    qs = [lib.quantize_inputs(x)[0] for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: (lib.run(xs[i])[0], lib.run_int(qs[i])[0]),
                            [i % 12 for i in range(48)]))
    o = lib.outputs[0]
    for i, (f, q) in enumerate(got):
        want = ref.run(qs[i % 12])[0]
        np.testing.assert_array_equal(q, want)
        deq = (want.astype(np.int32) - o["zero_point"]).astype(np.float32) * np.float32(o["scale"])
        np.testing.assert_array_equal(f, deq)


def test_name_is_a_c_identifier():
    for bad in ("1net", "my-net", "", "int", "a b"):
        with pytest.raises(QCompileError, match=r"^name .*(C identifier|C keyword)"):
            CompileConfig(name=bad)
    assert CompileConfig(name="text_det2").name == "text_det2"


def test_cli_refuses_a_name_that_is_no_c_identifier(tmp_path):
    out = tmp_path / "o"
    res = subprocess.run([sys.executable, "-m", "qcompiler.cli", str(BUNDLED_MODEL), "--calib",
                          str(BUNDLED_CALIB), "--name", "my-net", "-o", str(out)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        ("qcompile: error: name 'my-net': give a C identifier (a letter, then letters, digits "
         "or _)")]
    assert not out.exists()


def test_default_name_is_the_model_stem(tmp_path):
    from qcompiler.backend.c_name import name_from_stem

    assert name_from_stem("fashion_cnn") == "fashion_cnn"
    assert name_from_stem("resnet-50.v1") == "resnet_50_v1"
    assert name_from_stem("2stage") == "m_2stage"


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_c_library_in_process_matches_the_reference(x86_three, threads, rng):
    from qcompiler.backend.c_binding import CLibrary

    for name in NAMES:
        out, _, compiled = x86_three[name]
        lib, ref = CLibrary(out, threads), Reference(compiled.quantized)
        spec = lib.inputs[0]
        for _ in range(2):
            q = rng.integers(0, 256, spec["shape"]).astype(spec["dtype"])
            np.testing.assert_array_equal(lib.run_int(q)[0], ref.run(q)[0])
        with pytest.raises(QCompileError, match=r"^input .*: expected uint8"):
            lib.run_int(q.astype(np.float32))


def test_float_entry_reads_and_writes_the_callers_buffers_at_any_address(tmp_path, rng):
    """The float entry quantizes the caller's float input where it is and dequantizes into
    the caller's output (no aligned copy in the workspace): buffers 4 bytes off any 64-byte
    boundary give the bits of aligned ones and of the TVM module, and the workspace of a
    graph whose float input is larger than all its activations is smaller than that input."""
    from qcompiler.api import compile_to_dir
    from qcompiler.backend.c_binding import CLibrary

    w = (rng.standard_normal((8, 3, 4, 4)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[4, 4], strides=[4, 4])]
    model = save_model(make_model(nodes, {"x": (1, 3, 64, 64)}, {"y": None}, {"w": w}),
                       tmp_path, "shrink.onnx")
    calib = save_calib({"x": rng.standard_normal((4, 3, 64, 64)).astype(np.float32)},
                       tmp_path, "shrink.npz")
    result = compile_to_dir(model, calib, tmp_path / "out")
    tvm_model = result[0]
    lib = CLibrary(tmp_path / "out")
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert lib._bytes < x.nbytes  # no float copy of the input in the workspace
    want = tvm_model.run(x)[0]

    def off_aligned(shape: tuple) -> np.ndarray:
        raw = np.zeros(int(np.prod(shape)) * 4 + 128, np.uint8)
        start = -raw.ctypes.data % 64 + 4
        return raw[start:start + int(np.prod(shape)) * 4].view(np.float32).reshape(shape)

    xu, yu = off_aligned(x.shape), off_aligned(want.shape)
    xu[...] = x
    assert xu.ctypes.data % 64 == 4 and yu.ctypes.data % 64 == 4
    np.testing.assert_array_equal(lib.run(x)[0], want)
    np.testing.assert_array_equal(lib.run(xu, out=[yu])[0], want)
    assert len(np.unique(want)) > 50
