"""Train the bundled Fashion-MNIST CNN and export it to ONNX with a calibration set.

Run: python tools/train_fashion_cnn.py   (needs `pip install torch==2.13.0` and the Debian
package `dataset-fashion-mnist`; the compiler itself never imports torch).

The network is small on purpose but exercises every op of the integer spine: conv+BN+ReLU6,
a depthwise conv, a residual add, a concat, max and global-average pooling, a dense head.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from fashion_training import export, train
from torch import nn


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class FashionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16, 3)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = conv_bn(16, 32, 3)
        self.dw = conv_bn(32, 32, 3, groups=32)
        self.pw = conv_bn(32, 32, 1, act=False)
        self.relu = nn.ReLU6()
        self.branch_a = conv_bn(32, 32, 3, stride=2)
        self.branch_b = conv_bn(32, 16, 1, stride=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        y = self.conv2(x)
        y = self.relu(self.pw(self.dw(y)) + y)
        y = torch.cat([self.branch_a(y), self.branch_b(y)], dim=1)
        return self.fc(torch.flatten(self.gap(y), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("models"))
    args = ap.parse_args()
    torch.manual_seed(0)
    net = FashionNet()
    train(net, args.epochs, 3e-3)
    export(net, args.out / "fashion_cnn.onnx", args.out / "fashion_calib.npz")


if __name__ == "__main__":
    main()
