"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (real data, no download)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_fashion_mnist(split: str, root: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 NCHW in [0, 1] and labels as uint8, for split 'train' or 't10k'."""
    if split not in ("train", "t10k"):
        raise ValueError(f"split must be 'train' or 't10k', not {split!r}")
    img_path = root / f"{split}-images-idx3-ubyte.gz"
    lbl_path = root / f"{split}-labels-idx1-ubyte.gz"
    if not img_path.exists():
        raise FileNotFoundError(
            f"{img_path} not found: install it with `apt-get install dataset-fashion-mnist`")
    with gzip.open(img_path, "rb") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(lbl_path, "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    images = images.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255.0)
    return images, labels.copy()
