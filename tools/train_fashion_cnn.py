"""Train the bundled Fashion-MNIST CNN and export it to ONNX with a calibration set.

Run: python tools/train_fashion_cnn.py   (needs `pip install torch==2.13.0` and the Debian
package `dataset-fashion-mnist`; the compiler itself never imports torch).

The network is small on purpose but exercises every op of the integer spine: conv+BN+ReLU6,
a depthwise conv, a residual add, a concat, max and global-average pooling, a dense head.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qcompiler.evaluation.datasets import load_fashion_mnist


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
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("t10k")
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64))
    net = FashionNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * (len(xtr) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr))
        for i in range(len(xtr) // 128):
            idx = perm[i * 128:(i + 1) * 128]
            opt.zero_grad()
            loss = loss_fn(net(xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            pred = net(torch.from_numpy(xte)).argmax(1).numpy()
        print(f"epoch {epoch}: loss {loss.item():.3f} test top-1 {(pred == yte).mean():.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), args.out / "fashion_cnn.onnx",
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False,
                      do_constant_folding=False)  # keep BatchNormalization nodes
    rng = np.random.default_rng(0)
    calib = xtr[rng.choice(len(xtr), 256, replace=False)]
    np.savez_compressed(args.out / "fashion_calib.npz", image=calib)
    print(f"wrote {args.out / 'fashion_cnn.onnx'} and {args.out / 'fashion_calib.npz'}")


if __name__ == "__main__":
    main()
