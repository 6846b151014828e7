"""Two dense-prediction networks for the export zoo (`tools/export_zoo.py`): the shapes that
detector and segmenter exports put after a backbone, on torchvision's mobilenet_v3_small
features (random weights).

- `FPNSegmenter`: a text-detector / segmenter neck and head: lateral 1x1 convs, top-down
  nearest upsampling (by scale and to a size read from a tensor's shape), sums, a bilinear
  resize, a concat of the levels, then two 2x2 stride-2 ConvTranspose layers with batch norm
  and ReLU between, and a sigmoid: a probability map at the input's resolution.
- `AnchorFreeDetector`: a GFL / PicoDet-style head on two levels: per level one 1x1 conv,
  split into class scores and box-side distributions, flattened and permuted to
  (N, anchors, ...), the distributions softmaxed over their bins and integrated against the
  bin positions (Mul, ReduceSum), the scores sigmoid, the levels concatenated; two outputs.
- `GridDecodingDetector`: a YOLOv5-style head decoding its boxes in the graph (5-D views
  and permutes, a split on the last axis, the Add of a constant grid, Pow).
Their reshapes read the batch from the tensor's shape, so the exported file carries the
Shape / Gather / Concat arithmetic exporters write.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F


class FPNSegmenter(nn.Module):
    output_names = ("probability",)

    def __init__(self) -> None:
        super().__init__()
        features = torchvision.models.mobilenet_v3_small(weights=None).features
        self.s1, self.s2, self.s3 = features[:2], features[2:4], features[4:9]
        self.lateral = nn.ModuleList(nn.Conv2d(c, 32, 1) for c in (16, 24, 48))
        self.smooth = nn.Conv2d(32, 8, 3, padding=1)
        self.head = nn.Sequential(
            nn.Conv2d(24, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.ConvTranspose2d(16, 16, 2, 2), nn.BatchNorm2d(16), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.s1(x)
        c2 = self.s2(c1)
        c3 = self.s3(c2)
        p3 = self.lateral[2](c3)
        p2 = self.lateral[1](c2) + F.interpolate(p3, scale_factor=2.0, mode="nearest")
        p1 = self.lateral[0](c1) + F.interpolate(p2, size=c1.shape[2:], mode="nearest")
        levels = torch.cat([
            self.smooth(p1),
            F.interpolate(self.smooth(p2), scale_factor=2.0, mode="bilinear",
                          align_corners=False),
            F.interpolate(self.smooth(p3), scale_factor=4.0, mode="nearest")], 1)
        return torch.sigmoid(self.head(levels))


class AnchorFreeDetector(nn.Module):
    output_names = ("scores", "distances")

    def __init__(self, classes: int = 5, bins: int = 8) -> None:
        super().__init__()
        features = torchvision.models.mobilenet_v3_small(weights=None).features
        self.s1, self.s2 = features[:4], features[4:9]
        self.classes, self.bins = classes, bins
        self.heads = nn.ModuleList(nn.Conv2d(c, classes + 4 * bins, 1) for c in (24, 48))
        self.register_buffer("positions", torch.arange(bins, dtype=torch.float32))

    def level(self, f: torch.Tensor, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        o = head(f)
        n = o.shape[0]
        scores, sides = torch.split(o, [self.classes, 4 * self.bins], 1)
        scores = scores.flatten(2).permute(0, 2, 1).sigmoid()
        sides = sides.flatten(2).permute(0, 2, 1).reshape(n, -1, 4, self.bins)
        return scores, (F.softmax(sides, -1) * self.positions).sum(-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.s1(x)
        f2 = self.s2(f1)
        (s1, d1), (s2, d2) = self.level(f1, self.heads[0]), self.level(f2, self.heads[1])
        return torch.cat([s1, s2], 1), torch.cat([d1, d2], 1)


class GridDecodingDetector(nn.Module):
    """A YOLOv5-style head that decodes its boxes in the graph: per level a 1x1 conv viewed as
    (N, anchors, outputs, H, W) and permuted to (N, anchors, H, W, outputs), sigmoid, split on
    the last axis, centers `(2 s + grid) * stride` (a constant grid of cell offsets), sizes
    `(2 s)^2 * anchor` (Pow), concatenated and flattened to (N, boxes, outputs)."""

    output_names = ("boxes",)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        features = torchvision.models.mobilenet_v3_small(weights=None).features
        self.s1, self.s2 = features[:4], features[4:9]
        self.outputs, self.strides = classes + 5, (8, 16)
        self.heads = nn.ModuleList(nn.Conv2d(c, 3 * self.outputs, 1) for c in (24, 48))
        self.register_buffer("anchors", torch.tensor(
            [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]], dtype=torch.float32))

    def level(self, f: torch.Tensor, k: int) -> torch.Tensor:
        o = self.heads[k](f)
        n, _, h, w = o.shape
        o = o.view(n, 3, self.outputs, h, w).permute(0, 1, 3, 4, 2).contiguous()
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack((xs, ys), 2).expand(1, 3, h, w, 2).float() - 0.5
        anchor = self.anchors[k].view(1, 3, 1, 1, 2).expand(1, 3, h, w, 2)
        xy, wh, rest = o.sigmoid().split((2, 2, self.outputs - 4), 4)
        xy = (xy * 2 + grid) * self.strides[k]
        wh = (wh * 2) ** 2 * anchor
        return torch.cat((xy, wh, rest), 4).view(n, -1, self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.s1(x)
        return torch.cat([self.level(f1, 0), self.level(self.s2(f1), 1)], 1)


DENSE_HEADS = {"fpn_segmenter": FPNSegmenter, "anchor_free_detector": AnchorFreeDetector,
               "grid_decoding_detector": GridDecodingDetector}
