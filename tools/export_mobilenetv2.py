"""Write a MobileNetV2-shaped ONNX model (random weights) and random calibration images, for
`tools/bench.py`: speed only, the weights are not trained.

    python tools/export_mobilenetv2.py build/bench/mobilenetv2.onnx [--width 1.0] [--size 224]

Inverted residual blocks (1x1 expand + BN + ReLU6, 3x3 depthwise + BN + ReLU6, 1x1 project +
BN, residual Add where the shape allows), the (t, c, n, s) table of Sandler et al. (2018),
a 1x1 conv to 1280 channels, global average pooling and a 1000-way Gemm.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1)]


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def const(self, kind: str, value: np.ndarray) -> str:
        name = self.name(kind)
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int, groups: int,
                relu6: bool) -> str:
        fan_in = cin // groups * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
        y = self.name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const("w", w)], [y], kernel_shape=[k, k], strides=[stride] * 2,
            pads=[k // 2] * 4, group=groups))
        stats = [self.rng.uniform(0.8, 1.2, cout), self.rng.normal(0, 0.1, cout),
                 self.rng.normal(0, 0.1, cout), self.rng.uniform(0.8, 1.2, cout)]
        z = self.name("bn")
        self.nodes.append(helper.make_node(
            "BatchNormalization", [y, *[self.const("bn", s) for s in stats]], [z]))
        if not relu6:
            return z
        r = self.name("relu6")
        self.nodes.append(helper.make_node(
            "Clip", [z, self.const("lo", np.array(0.0)), self.const("hi", np.array(6.0))], [r]))
        return r


def build(width: float = 1.0, size: int = 224, seed: int = 0) -> onnx.ModelProto:
    g = _Graph(seed)
    c = int(32 * width)
    x = g.conv_bn("input", 3, c, 3, 2, 1, True)
    for t, ch, n, s in BLOCKS:
        cout = int(ch * width)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            y = g.conv_bn(x, c, hidden, 1, 1, 1, True) if t != 1 else x
            y = g.conv_bn(y, hidden, hidden, 3, stride, hidden, True)
            y = g.conv_bn(y, hidden, cout, 1, 1, 1, False)
            if stride == 1 and c == cout:
                z = g.name("add")
                g.nodes.append(helper.make_node("Add", [x, y], [z]))
                y = z
            x, c = y, cout
    x = g.conv_bn(x, c, 1280, 1, 1, 1, True)
    pooled, flat = g.name("gap"), g.name("flat")
    g.nodes += [helper.make_node("GlobalAveragePool", [x], [pooled]),
                helper.make_node("Flatten", [pooled], [flat])]
    w = g.rng.standard_normal((1000, 1280)) * np.sqrt(1.0 / 1280)
    g.nodes.append(helper.make_node("Gemm", [flat, g.const("fc_w", w),
                                             g.const("fc_b", np.zeros(1000))], ["logits"],
                                    transB=1))
    graph = helper.make_graph(
        g.nodes, "mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(args.width, args.size), str(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
