"""Export torchvision architectures (random weights, no download) to ONNX, as users ship them,
with a calibration set per model: the real-export zoo of `tests/test_real_exports.py` and
`tools/bench.py`.

    python tools/export_zoo.py [NAME ...] [--out DIR] [--opset 13 17] [--dynamo]
                               [--calib-size 224] [--calib-samples 8] [--list]

Needs the `[export]` extra (`pip install -e '.[export]'`: torch, torchvision, onnxscript);
the compiler itself never imports torch.

Each model is built with `weights=None` and a fixed seed. Its batch-norm layers are made
non-trivial first: a few random batches in train mode set running mean and variance to the
network's own activation statistics (so activations stay in range through the depth, as in a
trained net), then gamma and beta are drawn at random, so folding BN into the convs changes
every weight. Then, in eval mode:

- `NAME_op13.onnx`, `NAME_op17.onnx`: `torch.onnx.export(..., dynamo=False)` (the
  TorchScript exporter), at that opset, input `input` with dynamic axes {0: N, 2: H, 3: W},
  output `logits` with {0: N}. This is what most ONNX files in the wild are (every torch
  before 2.9 defaulted to it, and it is what ONNX model zoos, timm and Ultralytics ship).
- with `--dynamo`, also `NAME_dynamo.onnx`: the default exporter of torch >= 2.9 (`dynamo=True`,
  `dynamic_shapes` N, H, W). It writes opset 18 whatever opset is asked for (it has no lower
  implementations, and ONNX's down-converter fails on its ReduceMean-with-axes-input), so one
  file, not one per opset; it takes 10-35 s per model here instead of ~2 s.
- `NAME_calib_S.npz`: `--calib-samples` standard-normal images (`input`: (n, 3, S, S) float32,
  what an ImageNet-normalized input looks like to a random-weight net). Its sample shape fixes
  the spatial size a compile uses (`qcompile NAME_op17.onnx --calib NAME_calib_64.npz`).

Files that exist are reused (written to a temporary name, then renamed, so an interrupted
export leaves nothing half-written). `mobilenet_v3_small_written_out` spells Hardswish as
`x * relu6(x + 3) / 6` and Hardsigmoid as `relu6(x + 3) / 6`, as older and Paddle exports
do (SiLU needs no such variant: ONNX has no SiLU op before opset 24, so every
efficientnet_b0 export already writes it out as `x * sigmoid(x)`). `fpn_segmenter`,
`anchor_free_detector` and `grid_decoding_detector` (`tools/dense_heads.py`) are a
segmenter's and two detectors' necks and heads on mobilenet_v3_small's features, with their
own output names.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

ZOO = ("mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "resnet18",
       "shufflenet_v2_x1_0", "regnet_y_400mf", "mnasnet1_0", "squeezenet1_1", "googlenet",
       "mobilenet_v3_small_written_out", "fpn_segmenter", "anchor_free_detector",
       "grid_decoding_detector")
DENSE = ("fpn_segmenter", "anchor_free_detector", "grid_decoding_detector")  # dense_heads.py
OPSETS = (13, 17)
INPUT, OUTPUT = "input", "logits"
DEFAULT_OUT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qcompiler" / "zoo"
WRITTEN_OUT = "_written_out"


def onnx_path(out: Path, name: str, opset: int | str) -> Path:
    """Where the export of `name` at `opset` (an int, or "dynamo") lives in `out`."""
    return out / (f"{name}_dynamo.onnx" if opset == "dynamo" else f"{name}_op{opset}.onnx")


def calib_path(out: Path, name: str, size: int) -> Path:
    return out / f"{name}_calib_{size}.npz"


def calibration(name: str, size: int, samples: int, seed: int = 0) -> np.ndarray:
    """The calibration images of one model (deterministic in name, size and seed)."""
    rng = np.random.default_rng([seed, size, *name.encode()])
    return rng.standard_normal((samples, 3, size, size)).astype(np.float32)


def _written_out_modules():  # -> dict[type, type]
    import torch
    from torch import nn
    from torch.nn import functional as F

    class HardSwish(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * F.relu6(x + 3.0) / 6.0

    class HardSigmoid(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu6(x + 3.0) / 6.0

    class SiLU(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(x)

    return {nn.Hardswish: HardSwish, nn.Hardsigmoid: HardSigmoid, nn.SiLU: SiLU}


def _write_out(module) -> int:
    """Replace every Hardswish / Hardsigmoid / SiLU submodule by its written-out spelling."""
    table, n = _written_out_modules(), 0
    for child_name, child in module.named_children():
        if type(child) in table:
            setattr(module, child_name, table[type(child)]())
            n += 1
        else:
            n += _write_out(child)
    return n


def build(name: str, seed: int = 0):  # -> torch.nn.Module, in eval mode
    """The torchvision model `name` with seeded random weights and non-trivial batch norms."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    arch = name.removesuffix(WRITTEN_OUT)
    kwargs = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
    if arch in DENSE:
        from dense_heads import DENSE_HEADS
        model = DENSE_HEADS[arch]()
    else:
        model = getattr(torchvision.models, arch)(weights=None, **kwargs)
    if name.endswith(WRITTEN_OUT) and not _write_out(model):
        raise ValueError(f"{arch} has no Hardswish, Hardsigmoid or SiLU to write out")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for bn in bns:  # cumulative averages over the batches below
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(8, 3, 128, 128))
            for bn in bns:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.2)
    return model.eval()


def _save_atomic(write, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # savez keeps .npz
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export(model, path: Path, opset: int | str) -> None:
    """One ONNX file, batch, height and width dynamic; TorchScript exporter unless "dynamo"."""
    import torch

    x = torch.randn(1, 3, 224, 224)
    outputs = list(getattr(model, "output_names", [OUTPUT]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if opset == "dynamo":
            dims = {0: torch.export.Dim("N", max=1024), 2: torch.export.Dim("H", min=32),
                    3: torch.export.Dim("W", min=32)}
            _save_atomic(lambda p: torch.onnx.export(
                model, (x,), str(p), dynamo=True, input_names=[INPUT], output_names=outputs,
                dynamic_shapes={"x": dims}, external_data=False, verbose=False), path)
        else:
            _save_atomic(lambda p: torch.onnx.export(
                model, (x,), str(p), dynamo=False, opset_version=opset, input_names=[INPUT],
                output_names=outputs, dynamic_axes={INPUT: {0: "N", 2: "H", 3: "W"},
                                                    **{o: {0: "N"} for o in outputs}}), path)


def export_zoo(names: list[str], out: Path, opsets: list[int | str], calib_size: int,
               calib_samples: int, log=print) -> list[Path]:
    """Export what is missing of `names` x `opsets` into `out` (and their calibration sets);
    returns every file, existing or new."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name in names:
        model = None
        for opset in opsets:
            path = onnx_path(out, name, opset)
            if not path.exists():
                model = model if model is not None else build(name)
                log(f"export {path}")
                export(model, path, opset)
            files.append(path)
        calib = calib_path(out, name, calib_size)
        if not calib.exists():
            data = calibration(name, calib_size, calib_samples)
            _save_atomic(lambda p, d=data: np.savez(p, **{INPUT: d}), calib)
        files.append(calib)
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(ZOO)} "
                    "(default: all)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    ap.add_argument("--opset", type=int, nargs="*", default=list(OPSETS),
                    help="TorchScript-exporter opsets (default 13 17; none: only --dynamo)")
    ap.add_argument("--dynamo", action="store_true",
                    help="also export with the dynamo exporter (opset 18, NAME_dynamo.onnx)")
    ap.add_argument("--calib-size", type=int, default=224, metavar="S",
                    help="height and width of the calibration images (default 224)")
    ap.add_argument("--calib-samples", type=int, default=8, metavar="N")
    ap.add_argument("--list", action="store_true", help="print the model names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(ZOO))
        return 0
    unknown = [n for n in args.names if n not in ZOO]
    if unknown:
        ap.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(ZOO)}")
    opsets: list[int | str] = [*args.opset, *(["dynamo"] if args.dynamo else [])]
    export_zoo(args.names or list(ZOO), args.out, opsets, args.calib_size, args.calib_samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
