"""Quantization-aware fine-tuning of the bundled Fashion-MNIST CNN, exported as QDQ ONNX.

Run: PYTHONPATH=. python tools/train_qat.py --weight-bits 8 --epochs 2 --out fashion_qat_w8.onnx

Starts from `models/fashion_cnn.onnx` (trained by `tools/train_fashion_cnn.py`): BN is folded
into each conv (`W' = W γ/√(σ²+ε)`, `b' = β - μ γ/√(σ²+ε)`) before fine-tuning, so the network
trains exactly the weights qcompiler will quantize. The forward pass follows the numeric
contract: per-output-channel symmetric weights (`s[c] = max|W[c]| / qmax`, q in [-qmax, qmax],
qmax 127 or 7), per-tensor asymmetric uint8 activations (`r = s (q - zp)`) at every tensor the
compiler quantizes, ranges from EMA min/max observers, straight-through gradients. The export
writes the graph with `onnx.helper`: int8 weight initializers behind a per-axis
DequantizeLinear, each activation behind a QuantizeLinear/DequantizeLinear pair, so `qcompile`
needs no calibration data.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from qcompiler.evaluation.datasets import load_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent
FLOAT_MODEL = ROOT / "models" / "fashion_cnn.onnx"
BN_EPS = 1e-5  # torch's BatchNorm2d default, as exported


@dataclass(frozen=True)
class ConvSpec:
    """One conv+BN(+ReLU6) block of FashionNet (`tools/train_fashion_cnn.py`)."""

    name: str
    stride: int = 1
    groups: int = 1
    relu6: bool = True


CONVS = (ConvSpec("stem"), ConvSpec("conv2"), ConvSpec("dw", groups=32),
         ConvSpec("pw", relu6=False), ConvSpec("branch_a", stride=2),
         ConvSpec("branch_b", stride=2))
# Tensors with their own activation quantizer (max pool and flatten reuse their input's).
ACTIVATIONS = ("image", "stem", "conv2", "dw", "pw", "add", "branch_a", "branch_b", "concat",
               "gap", "logits")


class EmaQuant(nn.Module):
    """Per-tensor asymmetric uint8 fake quantization, `r = s (q - zp)`, q in [0, 255].

    observe: `min, max <- (1 - m) (min, max) + m (batch min, batch max)` (first batch: taken
    as is); qparams: the range widened to hold 0, `s = (max - min) / 255`,
    `zp = round(-min / s)`. Observation runs in training mode only.
    """

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().min(), x.detach().max()
        if not bool(self.seen):
            self.lo.copy_(lo), self.hi.copy_(hi), self.seen.fill_(True)
        else:
            self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)

    def qparams(self) -> tuple[float, int]:
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        scale = float(np.float32(max(hi - lo, 1e-8) / 255))
        return scale, int(np.clip(round(-lo / scale), 0, 255))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.observe(x)
        scale, zp = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)


def weight_qparams(w: torch.Tensor, qmax: int) -> torch.Tensor:
    """Per-output-channel symmetric scales `s[c] = max|W[c]| / qmax` (float32, > 0)."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
    return torch.clamp(amax, min=1e-12) / qmax


def fake_quant_weight(w: torch.Tensor, qmax: int) -> torch.Tensor:
    """`s[c] clamp(round(W / s[c]), -qmax, qmax)` with a straight-through gradient."""
    scale = weight_qparams(w, qmax)
    zp = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -qmax, qmax)


class QatNet(nn.Module):
    """FashionNet with BN folded into the convs and fake quantization where qcompiler
    quantizes: each conv(+ReLU6) output, the residual add(+ReLU6), concat, pooling, logits."""

    def __init__(self, weights: dict[str, np.ndarray], weight_bits: int) -> None:
        super().__init__()
        self.qmax = 2 ** (weight_bits - 1) - 1
        self.w = nn.ParameterDict({k: nn.Parameter(torch.from_numpy(v.copy()))
                                   for k, v in weights.items()})
        self.act = nn.ModuleDict({name: EmaQuant() for name in ACTIVATIONS})
        self.specs = {s.name: s for s in CONVS}

    def conv(self, x: torch.Tensor, name: str) -> torch.Tensor:
        s = self.specs[name]
        w = fake_quant_weight(self.w[f"{name}_weight"], self.qmax)
        k = w.shape[-1]
        y = F.conv2d(x, w, self.w[f"{name}_bias"], s.stride, k // 2, groups=s.groups)
        return F.relu6(y) if s.relu6 else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.act
        x = F.max_pool2d(q["stem"](self.conv(q["image"](x), "stem")), 2)
        y = q["conv2"](self.conv(x, "conv2"))
        r = q["pw"](self.conv(q["dw"](self.conv(y, "dw")), "pw"))
        y = q["add"](F.relu6(r + y))
        y = q["concat"](torch.cat([q["branch_a"](self.conv(y, "branch_a")),
                                   q["branch_b"](self.conv(y, "branch_b"))], dim=1))
        g = q["gap"](y.mean(dim=(2, 3)))
        w = fake_quant_weight(self.w["fc_weight"], self.qmax)
        return q["logits"](F.linear(g, w, self.w["fc_bias"]))


def folded_weights(path: Path = FLOAT_MODEL) -> dict[str, np.ndarray]:
    """Conv weights and biases with BN folded in, and the dense layer, from the float ONNX."""
    init = {i.name: numpy_helper.to_array(i).astype(np.float64)
            for i in onnx.load(str(path)).graph.initializer}
    out = {"fc_weight": init["fc.weight"], "fc_bias": init["fc.bias"]}
    for s in CONVS:
        gamma, beta, mu, var = (init[f"{s.name}.1.{p}"] for p in
                                ("weight", "bias", "running_mean", "running_var"))
        k = gamma / np.sqrt(var + BN_EPS)
        out[f"{s.name}_weight"] = init[f"{s.name}.0.weight"] * k.reshape(-1, 1, 1, 1)
        out[f"{s.name}_bias"] = beta - mu * k
    return {n: v.astype(np.float32) for n, v in out.items()}


def top1(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(torch.from_numpy(images[i:i + 1000])).argmax(1)
                          for i in range(0, len(images), 1000)]).numpy()
    return float((pred == labels).mean())


def train(net: QatNet, epochs: int, lr: float, batch: int = 128) -> None:
    """Fine-tune with AdamW and a cosine schedule; EMA observers see every batch."""
    xtr, ytr = load_fashion_mnist("train")
    x_t, y_t = torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64))
    steps = epochs * (len(xtr) // batch)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    with torch.no_grad():  # seed the observers on the float ranges before the first step
        net(x_t[:1024])
    for epoch in range(epochs):
        perm = torch.randperm(len(xtr))
        for i in range(len(xtr) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            opt.zero_grad()
            loss = F.cross_entropy(net(x_t[idx]), y_t[idx])
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}", flush=True)
    net.eval()


def _qdq(t: str, out: str, qp: tuple[float, int], inits: list) -> list[onnx.NodeProto]:
    """QuantizeLinear then DequantizeLinear of tensor t, uint8 with these (scale, zp)."""
    inits += [numpy_helper.from_array(np.array(qp[0], np.float32), f"{out}_scale"),
              numpy_helper.from_array(np.array(qp[1], np.uint8), f"{out}_zp")]
    args = [f"{out}_scale", f"{out}_zp"]
    return [helper.make_node("QuantizeLinear", [t, *args], [f"{out}_q"]),
            helper.make_node("DequantizeLinear", [f"{out}_q", *args], [out])]


def _weight(name: str, w: torch.Tensor, qmax: int, inits: list) -> onnx.NodeProto:
    """int8 initializer `q` behind a per-axis (axis 0) DequantizeLinear: `W = s[c] q`."""
    scale = weight_qparams(w, qmax).numpy().astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.rint(w.detach().numpy() / scale.reshape(shape)), -qmax, qmax)
    inits += [numpy_helper.from_array(q.astype(np.int8), f"{name}_q"),
              numpy_helper.from_array(scale, f"{name}_scale"),
              numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{name}_zp")]
    return helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"],
                            [name], axis=0)


def export_qdq(net: QatNet) -> onnx.ModelProto:
    """The QDQ ONNX graph of `net` (opset 13), batch dimension dynamic."""
    qp = {name: m.qparams() for name, m in net.act.items()}
    inits: list = [numpy_helper.from_array(np.array(v, np.float32), n)
                   for n, v in (("relu_lo", 0.0), ("relu_hi", 6.0))]
    nodes = _qdq("image", "x", qp["image"], inits)

    def conv(x: str, name: str, out: str) -> None:
        s = net.specs[name]
        w = net.w[f"{name}_weight"]
        nodes.append(_weight(f"{name}_w", w, net.qmax, inits))
        inits.append(numpy_helper.from_array(net.w[f"{name}_bias"].detach().numpy(),
                                             f"{name}_b"))
        k = w.shape[-1]
        y = f"{name}_conv" if s.relu6 else f"{name}_f"
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y],
                                      kernel_shape=[k, k], pads=[k // 2] * 4,
                                      strides=[s.stride] * 2, group=s.groups))
        if s.relu6:
            nodes.append(helper.make_node("Clip", [y, "relu_lo", "relu_hi"], [f"{name}_f"]))
        nodes.extend(_qdq(f"{name}_f", out, qp[name], inits))

    conv("x", "stem", "stem")
    nodes.append(helper.make_node("MaxPool", ["stem"], ["pool_f"], kernel_shape=[2, 2],
                                  strides=[2, 2]))
    nodes.extend(_qdq("pool_f", "pool", qp["stem"], inits))  # max pool keeps its input's grid
    conv("pool", "conv2", "conv2")
    conv("conv2", "dw", "dw")
    conv("dw", "pw", "pw")
    nodes += [helper.make_node("Add", ["pw", "conv2"], ["add_sum"]),
              helper.make_node("Clip", ["add_sum", "relu_lo", "relu_hi"], ["add_f"]),
              *_qdq("add_f", "add", qp["add"], inits)]
    conv("add", "branch_a", "branch_a")
    conv("add", "branch_b", "branch_b")
    nodes += [helper.make_node("Concat", ["branch_a", "branch_b"], ["concat_f"], axis=1),
              *_qdq("concat_f", "concat", qp["concat"], inits),
              helper.make_node("GlobalAveragePool", ["concat"], ["gap_f"]),
              *_qdq("gap_f", "gap", qp["gap"], inits),
              helper.make_node("Flatten", ["gap"], ["flat_f"]),
              *_qdq("flat_f", "flat", qp["gap"], inits),
              _weight("fc_w", net.w["fc_weight"], net.qmax, inits)]
    inits.append(numpy_helper.from_array(net.w["fc_bias"].detach().numpy(), "fc_b"))
    nodes += [helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits_f"], transB=1),
              *_qdq("logits_f", "logits", qp["logits"], inits)]
    graph = helper.make_graph(
        nodes, "fashion_qat",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="qcompiler tools/train_qat.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weight-bits", type=int, choices=(4, 8), default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (default 1e-4 for 8-bit, 5e-4 for 4-bit)")
    ap.add_argument("--out", type=Path, required=True, help="the QDQ model, PATH.onnx")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    net = QatNet(folded_weights(), args.weight_bits)
    xte, yte = load_fashion_mnist("t10k")
    t0 = time.perf_counter()
    lr = args.lr or (1e-4 if args.weight_bits == 8 else 5e-4)
    train(net, args.epochs, lr)
    print(f"trained {args.epochs} epoch(s) in {time.perf_counter() - t0:.0f} s; fake-quant "
          f"top-1 {100 * top1(net, xte, yte):.2f}% on the 10k test images")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(export_qdq(net), str(args.out))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
