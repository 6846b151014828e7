"""Calibration: run the float graph on the user's data and observe every activation.

The observed tensors are the graph inputs and the value of every tensor binding of the fused
float graph's `main` (composites, pools, concats, ...), in binding order. Calibration runs a
copy of the graph built at a convenient batch size; results are keyed by binding position so
they apply to the graph built at the deployment batch.
"""
from __future__ import annotations

import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tqdm import tqdm
from tvm import relax

from qcompiler.errors import CalibrationDataError
from qcompiler.frontend.onnx_import import ModelInput
from qcompiler.numerics.observers import RANGE_OBSERVERS, ObserverChoice, make_observer
from qcompiler.numerics.qparams import QParams
from qcompiler.relax_access import bindings


def load_calibration(path: str | Path, inputs: list[ModelInput],
                     limit: int | None = None) -> dict[str, np.ndarray]:
    """Read `--calib FILE.npz | DIR` and check it against the model's inputs.

    npz: one array per input, keyed by input name (a single-input model takes any one key).
    DIR: `<input name>.npy` per input, or for a single-input model every `*.npy`, stacked.
    A None dim of an input (symbolic, not fixed yet) takes any size.
    """
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(f"{path}: no such calibration file or folder")
    arrays: dict[str, np.ndarray] = {}
    try:
        if path.is_dir():
            for inp in inputs:
                f = path / f"{inp.name}.npy"
                if f.exists():
                    arrays[inp.name] = np.load(f, allow_pickle=False)
            if not arrays and len(inputs) == 1:
                files = sorted(path.glob("*.npy"))
                if files:
                    arrays[inputs[0].name] = np.concatenate(
                        [np.load(f, allow_pickle=False) for f in files])
        else:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            for inp in inputs:
                if inp.name in data:
                    arrays[inp.name] = data[inp.name]
            if not arrays and len(inputs) == 1 and len(data) == 1:
                arrays[inputs[0].name] = next(iter(data.values()))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CalibrationDataError(f"{path}: cannot read calibration data ({exc})") from None
    out = {}
    for inp in inputs:
        if inp.name not in arrays:
            raise CalibrationDataError(f"{path}: no array for model input {inp.name!r}")
        a = arrays[inp.name]
        if a.dtype != np.float32:
            raise CalibrationDataError(
                f"{path}: input {inp.name!r} has dtype {a.dtype}, expected float32")
        if a.ndim != len(inp.shape) or any(want is not None and have != want for have, want
                                           in zip(a.shape[1:], inp.shape[1:])):
            raise CalibrationDataError(
                f"{path}: input {inp.name!r} has shape {tuple(a.shape)}, expected "
                f"(N, {', '.join('?' if d is None else str(d) for d in inp.shape[1:])})")
        if a.shape[0] == 0:
            raise CalibrationDataError(f"{path}: input {inp.name!r} has 0 samples")
        if not np.isfinite(a).all():
            raise CalibrationDataError(f"{path}: input {inp.name!r} contains NaN or Inf")
        out[inp.name] = a[:limit] if limit else a
    counts = {a.shape[0] for a in out.values()}
    if len(counts) != 1:
        raise CalibrationDataError(f"{path}: inputs have different sample counts {sorted(counts)}")
    return out


def calibration_batch(n: int, cap: int = 32) -> int:
    """The largest divisor of n that is <= cap, so every batch is full."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def tensor_bindings(func: relax.Function) -> list[relax.Var]:
    """The tensor-valued bindings of a function, in order: the points we quantize."""
    return [b.var for b in bindings(func) if isinstance(b.var.ty, relax.TensorType)]


def probe_module(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """A copy of `mod` whose main returns every tensor binding."""
    mod = relax.transform.ToNonDataflow()(mod)
    main = mod["main"]
    outs = tensor_bindings(main)
    ret = relax.Tuple(outs)
    probe = relax.Function(main.params, relax.SeqExpr(main.body.blocks, ret),
                           relax.TupleType([o.ty for o in outs]))
    mod = tvm.IRModule({**{gv: f for gv, f in mod.functions.items()
                           if gv.name_hint != "main"}})
    mod["main"] = probe
    return relax.transform.Normalize()(mod), len(outs)


_BUILT: OrderedDict = OrderedDict()  # (hash, target, pass context) -> (probe, executable)
_KEEP = 4


def _compiled_probe(probe: tvm.IRModule, target: tvm.target.Target) -> tvm.runtime.Executable:
    """`tvm.compile(probe, target)`, kept for the last few graphs: building the float graph
    is most of calibration's time, and a process often calibrates one graph again (another
    target or option, bias correction's second pass); a graph is found again by structural
    equality, so what runs is the same code."""
    ctx = tvm.transform.PassContext.current()
    key = (tvm_ffi.structural_hash(probe), str(target), ctx.opt_level, str(ctx.config))
    hit = _BUILT.get(key)
    if hit is not None and tvm_ffi.structural_equal(hit[0], probe):
        _BUILT.move_to_end(key)
        return hit[1]
    _BUILT[key] = (probe, tvm.compile(probe, target))
    while len(_BUILT) > _KEEP:
        _BUILT.popitem(last=False)
    return _BUILT[key][1]


def probe_batches(float_mod: tvm.IRModule, data: dict[str, np.ndarray],
                   target: tvm.target.Target, progress: bool
                   ) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """(graph inputs, tensor bindings of main) of the float graph, one batch at a time."""
    probe, _ = probe_module(float_mod)
    vm = relax.VirtualMachine(_compiled_probe(probe, target), tvm.cpu())
    names = [p.name for p in float_mod["main"].params]
    batch = int(float_mod["main"].params[0].ty.shape[0])
    n = next(iter(data.values())).shape[0]
    for start in tqdm(range(0, n, batch), desc="calibrating", unit="batch",
                      disable=not progress, leave=False):
        feeds = [data[name][start:start + batch] for name in names]
        results = vm["main"](*[tvm.runtime.tensor(x) for x in feeds])
        yield feeds, [r.numpy() for r in results]


def calibrate(float_mod: tvm.IRModule, data: dict[str, np.ndarray], observer: str,
              act_dtype: str, percentile: float, target: tvm.target.Target,
              progress: bool = True
              ) -> tuple[list[QParams], list[QParams], list[ObserverChoice]]:
    """qparams for (graph inputs, tensor bindings of main), each in order, and the observer
    behind each tensor binding's (`auto`: chosen per tensor, `observer_choice`)."""
    kinds = RANGE_OBSERVERS if observer == "auto" else (observer,)
    n_in, n_out = len(float_mod["main"].params), len(tensor_bindings(float_mod["main"]))
    obs = [[make_observer(k, act_dtype, percentile) for k in kinds] for _ in range(n_in + n_out)]
    first: list[np.ndarray] = []
    for feeds, results in probe_batches(float_mod, data, target, progress):
        first = first or feeds + results
        for per_tensor, x in zip(obs, feeds + results):
            for o in per_tensor:
                o.observe(x)
    candidates = [[o.compute_qparams() for o in per_tensor] for per_tensor in obs]
    if len(kinds) > 1:
        # here, not at the top: observer_choice builds on adaround, which builds on this module
        from qcompiler.numerics.observer_choice import choose_observers

        picked = choose_observers(float_mod, first, candidates, kinds)
    else:
        picked = [(c[0], ObserverChoice(observer, None)) for c in candidates]
    qps = [qp for qp, _ in picked]
    return qps[:n_in], concat_inputs_shared(float_mod["main"], qps[n_in:]), \
        [c for _, c in picked[n_in:]]


def concat_inputs_shared(main: relax.Function, qps: list[QParams]) -> list[QParams]:
    """The tensor bindings' qparams with every tensor that only a concat reads taking the
    concat's (as TFLite's converter does): its producer's epilogue then writes the concat's
    grid directly, with no requantize kernel between them and one rounding instead of two.
    Its values lose nothing: the concat requantized them to that grid (and clamped them to
    that range) anyway."""
    bound = tensor_bindings(main)
    qp_of = dict(zip(bound, qps))
    readers: dict = {}
    for value in [*(b.value for b in bindings(main)), main.body.body]:
        for v in relax.analysis.free_vars(value):
            readers[v] = readers.get(v, 0) + 1
    for b in reversed(list(bindings(main))):  # a concat of a concat: the outer one's grid
        value = b.value
        if not (isinstance(value, relax.Call) and value.op.same_as(_CONCAT)
                and isinstance(value.args[0], relax.Tuple) and qp_of.get(b.var)):
            continue
        for part in value.args[0].fields:
            if part in qp_of and readers.get(part) == 1 and qp_of[part] is not None \
                    and qp_of[part].dtype == qp_of[b.var].dtype:
                qp_of[part] = qp_of[b.var]
    return [qp_of[v] for v in bound]


_CONCAT = tvm.ir.Op.get("relax.concat")


def channel_means(float_mod: tvm.IRModule, data: dict[str, np.ndarray],
                  target: tvm.target.Target, progress: bool = True
                  ) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """E[x] per channel (axis 1; over the batch and any spatial axes) of (graph inputs, tensor
    bindings of main), float64; None for a tensor of rank < 2. Bias correction uses them."""
    sums: list = []
    count = 0
    for feeds, results in probe_batches(float_mod, data, target, progress):
        batch = [x.astype(np.float64).sum(axis=tuple(a for a in range(x.ndim) if a != 1))
                 if x.ndim >= 2 else None for x in feeds + results]
        sums = batch if not sums else [None if a is None else a + b for a, b in zip(sums, batch)]
        count += feeds[0].shape[0]
    shapes = [x.ty.shape for x in [*float_mod["main"].params,
                                   *tensor_bindings(float_mod["main"])]]
    means = [None if s is None else s / (count * np.prod([int(d) for d in shp][2:]))
             for s, shp in zip(sums, shapes)]
    n_in = len(float_mod["main"].params)
    return means[:n_in], means[n_in:]
