"""Train a small MobileNetV3-style net on Fashion-MNIST and export it to ONNX with a calibration
set: the bundled model that is hard to quantize (tests/fixtures/mobilenetv3/).

Run: PYTHONPATH=. python tools/train_mobilenetv3.py [--epochs 4]   (CPU torch, one
thread, 3-8 min an epoch; the compiler itself never imports torch).

Why it is hard: depthwise convs whose folded BN gives channels of very different ranges,
hard-swish (negative tail, unbounded top), squeeze-and-excitation gates that multiply two
activations, and residual adds of differently scaled branches (Howard et al., *Searching for
MobileNetV3*, 2019: the blocks, shrunk to 28x28 grey images).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from fashion_training import export, train
from torch import nn

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mobilenetv3"
# (expanded channels, out channels, kernel, stride, squeeze-excite, hard-swish)
BLOCKS = ((16, 16, 3, 1, True, False), (48, 24, 3, 2, False, False),
          (64, 24, 3, 1, False, False), (72, 40, 5, 2, True, True),
          (96, 40, 5, 1, True, True))


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
            act: nn.Module | None = None) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(W2 relu(W1 mean(x))): a per-channel gate computed from the tensor."""

    def __init__(self, c: int) -> None:
        super().__init__()
        squeeze = max(8, c // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))
        return x * g


class Bneck(nn.Module):
    """Expand 1x1 -> depthwise kxk -> (SE) -> project 1x1, residual when shapes allow."""

    def __init__(self, cin: int, exp: int, cout: int, k: int, stride: int, se: bool,
                 hswish: bool) -> None:
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        self.expand = conv_bn(cin, exp, 1, act=act()) if exp != cin else nn.Identity()
        self.dw = conv_bn(exp, exp, k, stride, groups=exp, act=act())
        self.se = SqueezeExcite(exp) if se else nn.Identity()
        self.project = conv_bn(exp, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16, 3, 2, act=nn.Hardswish())
        blocks, cin = [], 16
        for exp, cout, k, stride, se, hs in BLOCKS:
            blocks.append(Bneck(cin, exp, cout, k, stride, se, hs))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.last = conv_bn(cin, 128, 1, act=nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(128, 96), nn.Hardswish(), nn.Linear(96, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.blocks(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = MobileNetV3Small()
    print(f"{sum(p.numel() for p in net.parameters())} parameters")
    train(net, args.epochs, 4e-3)
    export(net, args.out / "mobilenetv3.onnx", args.out / "mobilenetv3_calib.npz")


if __name__ == "__main__":
    main()
