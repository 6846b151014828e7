"""The training loop and export the Fashion-MNIST test models share (tools/train_*.py).

AdamW with a one-cycle schedule, batches of 128, top-1 on the test set after each epoch; the
export keeps BatchNormalization nodes (the compiler folds them) and writes 256 training images
as the calibration set.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qcompiler.evaluation.datasets import load_fashion_mnist


def train(net: nn.Module, epochs: int, max_lr: float) -> nn.Module:
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("t10k")
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64))
    opt = torch.optim.AdamW(net.parameters(), lr=max_lr, weight_decay=1e-4)
    steps = epochs * (len(xtr) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        t = time.perf_counter()
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
            pred = torch.cat([net(torch.from_numpy(xte[i:i + 1000])).argmax(1)
                              for i in range(0, len(xte), 1000)]).numpy()
        print(f"epoch {epoch}: loss {loss.item():.3f} test top-1 {(pred == yte).mean():.4f} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    return net


def export(net: nn.Module, model_path: Path, calib_path: Path) -> None:
    model_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), model_path,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False,
                      do_constant_folding=False)  # keep BatchNormalization nodes
    xtr, _ = load_fashion_mnist("train")
    rng = np.random.default_rng(0)
    np.savez_compressed(calib_path, image=xtr[rng.choice(len(xtr), 256, replace=False)])
    print(f"wrote {model_path} and {calib_path}")
