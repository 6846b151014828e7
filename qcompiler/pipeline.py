"""The compiler as one flat sequence of stages; each can be run and printed alone.

    model.onnx -> import -> float cleanup -> calibrate -> quantize -> build -> emit

A QDQ model brings its own qparams and weights: its Q/DQ nodes are stripped before import and
calibration runs only for tensors the model left unquantized (if data is given).
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import tvm
from tvm import relax

from qcompiler.config import CompileConfig
from qcompiler.errors import CalibrationDataError, QCompileError
from qcompiler.frontend.onnx_import import ModelInput, graph_inputs, import_onnx
from qcompiler.frontend.qdq_bindings import given_qparams
from qcompiler.frontend.qdq_import import is_qdq, strip_qdq
from qcompiler.numerics.adaround import adaround
from qcompiler.numerics.calibrate import (
    calibrate,
    calibration_batch,
    channel_means,
    tensor_bindings,
)
from qcompiler.numerics.mixed_precision import LayerChoice, choose_bits, layer_sensitivity
from qcompiler.numerics.qparams import QParams
from qcompiler.passes import reraise_interrupt
from qcompiler.passes.canonicalize_clip import canonicalize_clip
from qcompiler.passes.equalize_cross_layer import equalize_cross_layer
from qcompiler.passes.fold_batch_norm import fold_batch_norm
from qcompiler.passes.fold_channel_affine import fold_channel_affine
from qcompiler.passes.fold_constants import fold_constants
from qcompiler.passes.fuse_activation import fuse_activation
from qcompiler.passes.fuse_conv_table import fuse_conv_table
from qcompiler.passes.fuse_elementwise import fuse_elementwise
from qcompiler.passes.merge_parallel_convs import merge_parallel_convs
from qcompiler.passes.plan_layout import plan_layout
from qcompiler.passes.quantize import realize
from qcompiler.schedules import apply_schedules
from qcompiler.targets import get_target
from qcompiler.targets.target import Target
from qcompiler.targets.x86 import x86_target

STAGES = ("import", "float", "quantized")


def float_cleanup(equalize: bool = False, merge_branches: bool = True) -> tvm.transform.Pass:
    """`equalize`: cross-layer equalization of conv -> ReLU -> conv pairs (CompileConfig).
    `merge_branches`: summed convs of one input become one (off for a QDQ model, whose
    branches carry their own int8 weights and output qparams)."""
    return tvm.transform.Sequential([
        fold_constants(),      # bias reshapes, weight transposes, Clip's NaN guards -> constants
        canonicalize_clip(),   # the frontend's max/min call_tirs -> one R.clip
        fold_batch_norm(),     # BN into conv weights, before weights are quantized
        relax.transform.DecomposeOpsForInference(),  # a BN with no conv left -> mul/add
        fold_constants(),      # fold what BN folding produced
        relax.transform.CanonicalizeBindings(),  # (x, mean, var)[0] -> x
        relax.transform.DeadCodeElimination(),  # ... and the tuple goes
        fold_channel_affine(),  # per-channel mul/add chains -> into the conv, or a depthwise
        *([merge_parallel_convs()] if merge_branches else []),  # unmerged rep blocks -> one conv
        *([equalize_cross_layer()] if equalize else []),  # on final weights, before fusion
        fuse_activation(),     # producer + bias + ReLU/Clip -> one composite = one kernel
        fuse_elementwise(),    # what is left of float math on one tensor -> one table each
    ], name="qcompiler.float_cleanup")


def float_graph(model: onnx.ModelProto, inputs: list[ModelInput],
                equalize: bool = False, merge_branches: bool = True) -> tvm.IRModule:
    mod = import_onnx(model, inputs)
    with tvm.transform.PassContext(opt_level=3):
        return float_cleanup(equalize, merge_branches)(mod)


def _calibration_graph(model: onnx.ModelProto, inputs: list[ModelInput],
                       float_mod: tvm.IRModule, calib: dict[str, np.ndarray],
                       equalize: bool = False, merge_branches: bool = True
                       ) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    n = next(iter(calib.values())).shape[0]
    if all(i.dynamic_batch for i in inputs):
        cb = calibration_batch(n)
        if cb != inputs[0].shape[0]:
            try:
                shapes = [ModelInput(i.name, (cb, *i.shape[1:]), i.dtype, True) for i in inputs]
                return float_graph(model, shapes, equalize, merge_branches), calib
            except QCompileError:
                pass
    b = inputs[0].shape[0]
    if n < b:
        raise CalibrationDataError(f"{n} calibration sample(s) for a model with batch {b}: "
                                   f"give at least {b}")
    return float_mod, {k: v[: n - n % b] for k, v in calib.items()}


@dataclass
class Compiled:
    """Everything one compile produced, for the emitter and the summary."""

    quantized: tvm.IRModule
    float_mod: tvm.IRModule
    inputs: list[ModelInput]
    target: Target
    tvm_target: tvm.target.Target
    in_qparams: list[QParams]
    timings: dict[str, float] = field(default_factory=dict)
    precision: list[LayerChoice] = field(default_factory=list)  # the mixed-precision choice
    tuning: list = field(default_factory=list)  # qcompiler.tuning.tune.TaskResult per tuned kernel
    observers: list = field(default_factory=list)  # ObserverChoice per tensor binding (calibrated)


def _calibrated(model: onnx.ModelProto, inputs: list[ModelInput], float_mod: tvm.IRModule,
                calib: dict[str, np.ndarray], config: CompileConfig, act_dtype: str,
                host: tvm.target.Target, progress: bool, merge_branches: bool = True
                ) -> tuple[list, list, list | None, list[LayerChoice]]:
    # Calibrate on a copy built at a batch that divides the calibration set (bindings line up
    # by position: both copies come from the same deterministic pipeline). A static batch, or a
    # graph that only imports at the deployment batch (a hard-coded Reshape), keeps its batch.
    # The third result: per-channel input means for bias correction (None when it is off); the
    # fourth: the mixed-precision choice, by binding position (empty when it is off); the
    # fifth: AdaRound's rounding per conv/dense layer, by binding position (empty when off);
    # the sixth: the observer behind each tensor binding's qparams.
    calib_mod, calib = _calibration_graph(model, inputs, float_mod, calib, config.equalize,
                                          merge_branches)
    in_qp, out_qp, observers = calibrate(calib_mod, calib, config.observer, act_dtype,
                                         config.percentile, host, progress)
    means = channel_means(calib_mod, calib, host, progress) if config.bias_correction else None
    choice = [] if config.mixed_precision is None else choose_bits(
        layer_sensitivity(calib_mod, calib, host, config.per_channel), config.mixed_precision)
    rounding = {}
    if config.adaround:  # after the bit widths are known; by binding position, like `choice`
        bits = {c.position: c.bits for c in choice}
        rounding = adaround(calib_mod, calib, host, lambda pos, var: bits.get(pos, (
            config.layer_weight_bits.get(var.name, config.weight_bits))),
            config.per_channel, config.adaround, progress)
    return in_qp, out_qp, means, choice, rounding, observers


def compile_model(model: onnx.ModelProto, calib: dict[str, np.ndarray] | None,
                  config: CompileConfig, progress: bool = True,
                  target: Target | None = None,
                  portable: Mapping[str, Exception] | None = None) -> Compiled:
    """`target` overrides the config's target (e.g. a variant without HVX, for comparisons).
    `calib` may be None for a QDQ model that quantizes every tensor it needs. `portable`:
    kernels to leave on their portable form (`api.Job.emit`: their built code failed)."""
    try:
        return _compile_model(model, calib, config, progress, target, portable)
    except Exception:
        reraise_interrupt()  # a Ctrl-C inside a pass, which TVM's FFI made a RuntimeError
        raise


def _compile_model(model: onnx.ModelProto, calib: dict[str, np.ndarray] | None,
                   config: CompileConfig, progress: bool, target: Target | None,
                   portable: Mapping[str, Exception] | None) -> Compiled:
    target = target or get_target(config.target)
    tvm_target = tvm.target.Target(target.tvm_target)
    if config.schedules and config.tuning_root() is not None:
        from qcompiler.tuning.tune import open_database

        # a bad folder fails before any work; only tuning writes (a read-only one deploys)
        open_database(Path(config.tuning_root()), target, write=bool(config.tune_trials))
    timings = {}
    t = time.perf_counter()
    qdq = strip_qdq(model) if is_qdq(model) else None  # its qparams; the float graph
    if qdq is not None and (config.weight_bits, config.activation_bits) != (8, 8):
        raise QCompileError("a QDQ model carries its own precisions: leave weight_bits and "
                            "activation_bits at 8")
    if qdq is not None and (config.layer_weight_bits or config.mixed_precision is not None):
        raise QCompileError("a QDQ model carries its own precisions: give no per-layer weight "
                            "bits (--precision, --mixed-precision)")
    if qdq is not None and (config.equalize or config.bias_correction or config.adaround):
        raise QCompileError("a QDQ model carries its own quantized weights: leave equalize, "
                            "bias_correction and adaround off")
    if qdq is not None:
        model = qdq.model
    elif calib is None:
        raise CalibrationDataError("the model is float (no QuantizeLinear/DequantizeLinear): "
                                   "give calibration data (--calib)")
    inputs = graph_inputs(model, config.batch, config.input_shapes, calib)
    float_mod = float_graph(model, inputs, config.equalize, merge_branches=qdq is None)
    timings["import"] = time.perf_counter() - t
    t = time.perf_counter()
    # The float graph runs here, whatever the target, built for this machine's ISA level: the
    # generic x86-64 (SSE2) build of some graphs fails LLVM verification in TVM 0.27
    # (tests/fixtures/fuzz/calib_probe_sse2_llvm_verify.onnx, found by the fuzzer).
    host = tvm.target.Target(x86_target().tvm_target)
    act = config.activation_dtype(target.activation_dtype)
    names, means, choice, rounding, observers = None, None, [], {}, []
    if qdq is None:
        in_qp, out_qp, means, choice, rounding, observers = _calibrated(
            model, inputs, float_mod, calib, config, act, host, progress)
    else:
        in_qp, out_qp, names = given_qparams(qdq, float_mod, inputs, act, host)
        if calib is not None and None in in_qp + out_qp:  # calibrate what the model left float
            cal_in, cal_out, *_ = _calibrated(model, inputs, float_mod, calib, config, act,
                                                host, progress, merge_branches=False)
            in_qp = [g or c for g, c in zip(in_qp, cal_in)]
            out_qp = [g or c for g, c in zip(out_qp, cal_out)]
        for i, q in zip(inputs, in_qp):
            if q is None:
                raise CalibrationDataError(
                    f"input {i.name}: the model gives no scale and zero point for it (no "
                    "QuantizeLinear/DequantizeLinear pair); give --calib to calibrate it")
    timings["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    bound = tensor_bindings(float_mod["main"])  # the choice's positions -> this graph's vars
    layer_bits = {**config.layer_weight_bits, **{bound[c.position]: c.bits for c in choice}}
    qmod = realize(float_mod, in_qp, out_qp, config.per_channel,  # the quantize pass
                   config.weight_bits, qdq.weights if qdq else None, names, means, layer_bits,
                   {bound[pos]: r for pos, r in rounding.items()})
    timings["quantize"] = time.perf_counter() - t
    t = time.perf_counter()
    if config.schedules and config.blocked_layout:
        qmod = plan_layout(target)(qmod)  # NCHW16c between the layers that have blocked kernels
    if config.schedules:
        qmod = fuse_conv_table(target)(qmod)  # a conv and its table: one kernel (not x86 VNNI)
        # target kernels (sdot, vnni, vrmpy), same operands
        qmod = apply_schedules(qmod, target, portable=portable)
    timings["schedule"] = time.perf_counter() - t
    t = time.perf_counter()
    tuning = []
    root = config.tuning_root()
    if config.schedules and root is not None:
        from qcompiler.tuning.tune import apply_tuned, parse_tracker, tune

        if config.tune_trials:
            tuning = tune(qmod, target, tvm_target, config.tune_trials, Path(root),
                          parse_tracker(config.rpc_tracker), progress,
                          minutes=config.tune_minutes)
        qmod = apply_tuned(qmod, target, tvm_target, Path(root))  # the database's schedules
    timings["tune"] = time.perf_counter() - t
    return Compiled(qmod, float_mod, inputs, target, tvm_target, in_qp, timings, choice,
                    tuning, observers)
