"""Top-1 on the full Fashion-MNIST test set: float, PTQ variants and QAT of the bundled CNN and
of the MobileNetV3-style net, next to the published claims, as a markdown table (printed and
written to docs/accuracy.md).

    PYTHONPATH=. python tools/accuracy_table.py [--limit N] [--out docs/accuracy.md]

Every int8 row is compiled here through the Python API (x86) and run as the built library;
the first CHECKED images of each also go through `qcompiler.reference`, which the library must
match bit for bit. PTQ calibrates on `models/fashion_calib.npz` (the MobileNetV3-style net on
its own calibration set beside it); the QAT rows are the committed fixtures of
`tools/train_qat.py`, compiled without calibration data. A drop is against the float top-1 of
the row's float model (QAT rows: the bundled CNN's).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qcompiler.api import compile_to_dir
from qcompiler.config import CompileConfig
from qcompiler.evaluation.datasets import load_fashion_mnist
from qcompiler.evaluation.metrics import float_predictions, int8_predictions
from qcompiler.reference import Reference

ROOT = Path(__file__).resolve().parent.parent
FLOAT_MODEL = ROOT / "models" / "fashion_cnn.onnx"
CALIB = ROOT / "models" / "fashion_calib.npz"
QAT = ROOT / "tests" / "fixtures" / "qat"
MOBILENET = ROOT / "tests" / "fixtures" / "mobilenetv3" / "mobilenetv3.onnx"
MOBILENET_CALIB = MOBILENET.with_name("mobilenetv3_calib.npz")
ADAROUND = "4-bit weights within ~1 point of float on ImageNet ResNets (AdaRound, 2020)"
CHECKED = 100  # images compared with the reference, per row
NOT_HERE = "not implemented yet"


@dataclass(frozen=True)
class Row:
    """One line of the table: which model, compiled how, and what is claimed for it."""

    name: str
    claim: str          # the whitepaper's (or paper's) claim for this scheme
    target: float | None = None  # the issue's maximum drop in points, if it sets one
    model: Path = FLOAT_MODEL
    calib: Path | None = CALIB
    options: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # CompileConfig fields this row needs
    issue: int = 8  # the issue that set the target
    quantized: bool = True  # False: the float model's own top-1 (a model's first row)


ROWS = (
    Row("PTQ 8/8 per-tensor", "large drops possible, worst with depthwise convs",
        options={"per_channel": False}),
    Row("PTQ 8/8 per-channel", "within 2 % of float", 0.5),
    Row("QAT 8/8", "within 1 % of float", 0.3, QAT / "fashion_qat_w8.onnx", None),
    Row("PTQ 4/8", "large drops (4-bit weights need QAT)", options={"weight_bits": 4}),
    Row("QAT 4/8", "2-10 % drop (more for smaller networks)", 2.0,
        QAT / "fashion_qat_w4.onnx", None),
    Row("PTQ 8/16", "(16-bit activations: not in the whitepaper)",
        options={"activation_bits": 16}),
    Row("PTQ with bias correction and CLE", "close to float without training (DFQ)",
        options={"bias_correction": True, "equalize": True},
        needs=("bias_correction", "equalize")),
    Row("mixed precision (half the weights 4-bit)", "(per-layer bit widths)",
        options={"mixed_precision": 0.5}, needs=("mixed_precision",)),
    Row("PTQ 4/8 AdaRound", ADAROUND, 1.0, options={"weight_bits": 4, "adaround": 1000},
        needs=("adaround",), issue=22),
    Row("PTQ 4/8 AdaRound, bias correction and CLE", ADAROUND,
        options={"weight_bits": 4, "adaround": 1000, "bias_correction": True,
                 "equalize": True}, needs=("adaround",)),
    Row("MobileNetV3-style float", "-", model=MOBILENET, quantized=False),
    Row("MobileNetV3-style PTQ 8/8 per-channel", "large drops possible, worst with depthwise "
        "convs", 0.3, MOBILENET, MOBILENET_CALIB, issue=22),
    Row("MobileNetV3-style PTQ 8/8 entropy observer", "(KL calibration, as TensorRT)",
        model=MOBILENET, calib=MOBILENET_CALIB, options={"observer": "entropy"}),
    Row("MobileNetV3-style PTQ 8/8 auto observer", "(per tensor, by the next layer's SQNR)",
        model=MOBILENET, calib=MOBILENET_CALIB, options={"observer": "auto"}),
    Row("MobileNetV3-style PTQ 4/8", "large drops (4-bit weights need QAT)", model=MOBILENET,
        calib=MOBILENET_CALIB, options={"weight_bits": 4}),
    Row("MobileNetV3-style PTQ 4/8 AdaRound", ADAROUND, 1.5, MOBILENET, MOBILENET_CALIB,
        {"weight_bits": 4, "adaround": 1000}, ("adaround",), 22),
)


def int8_top1(row: Row, images: np.ndarray, labels: np.ndarray, tmp: Path
              ) -> tuple[float, bool]:
    """(top-1, bit-exact on the first CHECKED images) of the row's compiled library."""
    out = tmp / row.name.replace(" ", "_").replace("/", "-")
    lib, compiled = compile_to_dir(row.model, row.calib, out, **row.options)
    _, bad, _ = int8_predictions(lib, Reference(compiled.quantized, compiled.tvm_target),
                                 images[:CHECKED])
    pred, _, _ = int8_predictions(lib, None, images)
    return float((pred == labels[:len(pred)]).mean()), bad == 0


def table(limit: int | None) -> str:
    images, labels = load_fashion_mnist("t10k")
    images, labels = images[:limit], labels[:limit]
    fields = {f.name for f in dataclasses.fields(CompileConfig)}
    floats: dict[Path, float] = {}

    def float_top1(model: Path) -> float:
        if model not in floats:
            floats[model] = float((float_predictions(str(model), images, "image") == labels)
                                  .mean())
        return floats[model]

    lines = [("| scheme (weights/activations) | top-1 | drop (points) | target (issue) "
              "| published claim | bit-exact |"), "|---|---|---|---|---|---|",
             f"| float | {100 * float_top1(FLOAT_MODEL):.2f} % | - | - | - | - |"]
    with tempfile.TemporaryDirectory() as tmp:
        for row in ROWS:
            if not row.quantized:
                lines.append(f"| {row.name} | {100 * float_top1(row.model):.2f} % | - | - | "
                             f"{row.claim} | - |")
                continue
            ref = float_top1(FLOAT_MODEL if row.calib is None else row.model)  # QAT: the CNN
            goal = "-" if row.target is None else f"<= {row.target} (issue {row.issue})"
            if not set(row.needs) <= fields:
                lines.append(f"| {row.name} | {NOT_HERE} | - | {goal} | {row.claim} | - |")
                continue
            t = time.perf_counter()
            top1, exact = int8_top1(row, images, labels, Path(tmp))
            drop = 100 * (ref - top1)
            if row.target is not None:
                goal += " met" if drop <= row.target else " MISSED"
            lines.append(f"| {row.name} | {100 * top1:.2f} % | {drop:+.2f} | {goal} | "
                         f"{row.claim} | {'yes' if exact else 'NO'} |")
            print(f"  {row.name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default all)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "accuracy.md")
    args = ap.parse_args()
    body = table(args.limit)
    n = args.limit or 10000
    doc = (f"# Accuracy: float, PTQ and QAT on Fashion-MNIST\n\n"
           f"Top-1 of the bundled CNN (`models/fashion_cnn.onnx`) and of the MobileNetV3-style "
           "net (`tests/fixtures/mobilenetv3/`, `tools/train_mobilenetv3.py`: depthwise convs, "
           f"hard-swish, squeeze-excite; 4 epochs) on {n} Fashion-MNIST test "
           "images, x86 target; a drop is the model's float minus int8, in points. AdaRound: "
           "Nagel et al., *Up or Down? Adaptive Rounding for Post-Training Quantization* "
           "(2020), 1000 iterations per layer. QAT rows are "
           "`tests/fixtures/qat/` (`tools/train_qat.py`: w8 2 epochs, w4 1 epoch). Claims: "
           "Krishnamoorthi, "
           "*Quantizing deep convolutional networks for efficient inference: A whitepaper* "
           "(2018); bias correction and cross-layer equalization: Nagel et al., *Data-Free "
           f"Quantization* (2019). Bit-exact: library equals `qcompiler.reference` on the "
           f"first {CHECKED} images.\n\n{body}\n\nProduced by:\n\n"
           f"    PYTHONPATH=. python tools/accuracy_table.py"
           + (f" --limit {args.limit}" if args.limit else "") + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(doc)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
