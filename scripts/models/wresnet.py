"""Wide-ResNet: a bottleneck ResNet whose 3x3 convolutions are widened by a width factor.

Definition (the one whose counts land on the Alpa paper's WResNet sizes):
  stem     conv 7x7/2 (3 -> c, pad 3) - BN - ReLU - maxpool 3x3/2 (pad 1)
  stage i  (i = 0..3, planes p = c * 2^i, n_i blocks, the first block of stages 1..3 has stride 2)
    block  conv 1x1 (in -> p) - BN - ReLU
           conv 3x3/stride (p -> p*w, pad 1) - BN - ReLU
           conv 1x1 (p*w -> 4p) - BN
           + shortcut: identity, or conv 1x1/stride (in -> 4p) - BN when the shape changes
           - ReLU
  head     global average pool - flatten - Linear(4 * 8c, classes) - cross entropy
Convolutions have no bias; BatchNorm runs in training mode (batch statistics, running mean and
variance buffers). n = [3, 4, 6, 3] for depth 50, [3, 4, 23, 3] for 101, [3, 8, 36, 3] for 152.
With c = 64, w = 1 this is ResNet-50. Note that the width factor widens only the 3x3
convolution's output (the block's inner width), not the block's 4p output channels.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import onnx
from onnx import TensorProto

from common import GraphBuilder

STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@dataclasses.dataclass
class WResNetConfig:
    depth: int = 50
    channels: int = 160        # base channels c (planes of stage 0)
    width: int = 2             # width factor w of the 3x3 convolutions
    image: int = 224
    classes: int = 1000
    stage_blocks: Optional[Tuple[int, ...]] = None  # overrides depth's block counts
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1   # torch convention (ONNX momentum = 1 - this)


PRESETS: Dict[str, WResNetConfig] = {
    "test": WResNetConfig(depth=14, channels=8, width=2, image=32, classes=10,
                          stage_blocks=(1, 1, 1, 1)),
    "250M": WResNetConfig(depth=50, channels=160, width=2),
    "500M": WResNetConfig(depth=50, channels=224, width=2),
    "1B": WResNetConfig(depth=50, channels=320, width=2),
    "2B": WResNetConfig(depth=50, channels=448, width=2),
    "4B": WResNetConfig(depth=50, channels=640, width=2),
    "6.8B": WResNetConfig(depth=50, channels=320, width=16),
    "13B": WResNetConfig(depth=101, channels=320, width=16),
}
DEFAULT_BATCH = {"test": 4}
PAPER_BATCH = 1536


def default_batch(size: str) -> int:
    return DEFAULT_BATCH.get(size, PAPER_BATCH)


def blocks(cfg: WResNetConfig) -> Tuple[int, ...]:
    if cfg.stage_blocks is not None:
        return tuple(cfg.stage_blocks)
    if cfg.depth not in STAGES:
        raise ValueError(f"depth {cfg.depth} is not one of {sorted(STAGES)} "
                         "(or pass stage_blocks)")
    return STAGES[cfg.depth]


def validate(cfg: WResNetConfig) -> None:
    n = blocks(cfg)
    if len(n) != 4 or min(n) < 1:
        raise ValueError("stage_blocks must be four positive block counts")
    if cfg.image < 32:
        raise ValueError("image must be at least 32 pixels")


def _layout(cfg: WResNetConfig):
    """Yields (stage, block, in_channels, planes, stride, has_projection) for every block."""
    inp = cfg.channels
    for i, n in enumerate(blocks(cfg)):
        p = cfg.channels * 2 ** i
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            yield i, j, inp, p, stride, (stride != 1 or inp != 4 * p)
            inp = 4 * p


def param_count(cfg: WResNetConfig) -> int:
    c, w = cfg.channels, cfg.width
    n = 3 * 49 * c + 2 * c  # stem conv + BN
    for _, _, inp, p, _, proj in _layout(cfg):
        n += inp * p + 2 * p + 9 * p * p * w + 2 * p * w + 4 * p * p * w + 8 * p
        if proj:
            n += inp * 4 * p + 8 * p
    return n + 32 * c * cfg.classes + cfg.classes


def buffer_count(cfg: WResNetConfig) -> int:
    """Running mean and variance of every BatchNorm (num_batches_tracked is int64, not counted)."""
    c, w = cfg.channels, cfg.width
    n = 2 * c
    for _, _, inp, p, _, proj in _layout(cfg):
        n += 2 * p + 2 * p * w + 8 * p + (8 * p if proj else 0)
    return n


def input_specs(cfg: WResNetConfig, batch: int) -> List[Tuple[str, int, List[int]]]:
    return [("images", TensorProto.FLOAT, [batch, 3, cfg.image, cfg.image]),
            ("labels", TensorProto.INT64, [batch])]


# --------------------------------------------------------------------------------------------
# torch


def make_model(cfg: WResNetConfig):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def bn(ch):
        return nn.BatchNorm2d(ch, eps=cfg.bn_eps, momentum=cfg.bn_momentum)

    class Bottleneck(nn.Module):
        def __init__(self, inp: int, planes: int, width: int, stride: int, proj: bool):
            super().__init__()
            inner, out = planes * width, 4 * planes
            self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
            self.bn1 = bn(planes)
            self.conv2 = nn.Conv2d(planes, inner, 3, stride=stride, padding=1, bias=False)
            self.bn2 = bn(inner)
            self.conv3 = nn.Conv2d(inner, out, 1, bias=False)
            self.bn3 = bn(out)
            self.has_proj = proj
            if proj:
                self.proj_conv = nn.Conv2d(inp, out, 1, stride=stride, bias=False)
                self.proj_bn = bn(out)

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            shortcut = self.proj_bn(self.proj_conv(x)) if self.has_proj else x
            return F.relu(y + shortcut)

    class WideResNet(nn.Module):
        def __init__(self, c: WResNetConfig):
            super().__init__()
            self.stem_conv = nn.Conv2d(3, c.channels, 7, stride=2, padding=3, bias=False)
            self.stem_bn = bn(c.channels)
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
            stages = [[] for _ in blocks(c)]
            for i, _, inp, p, stride, proj in _layout(c):
                stages[i].append(Bottleneck(inp, p, c.width, stride, proj))
            self.stages = nn.ModuleList([nn.Sequential(*s) for s in stages])
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32 * c.channels, c.classes)

        def forward(self, images, labels):
            x = self.pool(F.relu(self.stem_bn(self.stem_conv(images))))
            for stage in self.stages:
                x = stage(x)
            logits = self.fc(torch.flatten(self.avgpool(x), 1))
            return F.cross_entropy(logits, labels)

    validate(cfg)
    return WideResNet(cfg)


def example_inputs(cfg: WResNetConfig, batch: int, generator=None):
    import torch
    images = torch.randn((batch, 3, cfg.image, cfg.image), generator=generator)
    labels = torch.randint(0, cfg.classes, (batch,), generator=generator)
    return [("images", images), ("labels", labels)]


# --------------------------------------------------------------------------------------------
# shape-only


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


class _Net:
    """Conv/BN helpers that track the static [B, C, H, W] shape."""

    def __init__(self, b: GraphBuilder, cfg: WResNetConfig):
        self.b, self.cfg = b, cfg

    def conv(self, x: str, shape, name: str, out: int, k: int, s: int, p: int):
        B, C, H, W = shape
        b = self.b
        with b.scope(name.rsplit(".", 1)[-1]):
            w = b.param(name + ".weight", [out, C, k, k])
            y = b.op("Conv", [x, w], dilations=[1, 1], group=1, kernel_shape=[k, k],
                     pads=[p] * 4, strides=[s, s])
        return y, (B, out, _conv_out(H, k, s, p), _conv_out(W, k, s, p))

    def bn(self, x: str, shape, name: str) -> str:
        b, C = self.b, shape[1]
        with b.scope(name.rsplit(".", 1)[-1]):
            ins = [x, b.param(name + ".weight", [C]), b.param(name + ".bias", [C]),
                   b.buffer(name + ".running_mean", [C]), b.buffer(name + ".running_var", [C])]
            return b.op("BatchNormalization", ins, n_out=3, epsilon=self.cfg.bn_eps,
                        momentum=1.0 - self.cfg.bn_momentum, training_mode=1)[0]

    def conv_bn(self, x, shape, conv_name, bn_name, out, k, s, p, relu):
        y, shape = self.conv(x, shape, conv_name, out, k, s, p)
        y = self.bn(y, shape, bn_name)
        return (self.b.op("Relu", [y]) if relu else y), shape


def build_shape_only(cfg: WResNetConfig, batch: int) -> onnx.ModelProto:
    validate(cfg)
    b = GraphBuilder("wresnet")
    net = _Net(b, cfg)
    images = b.input("images", TensorProto.FLOAT, [batch, 3, cfg.image, cfg.image])
    labels = b.input("labels", TensorProto.INT64, [batch])
    x, shape = net.conv_bn(images, (batch, 3, cfg.image, cfg.image), "stem_conv", "stem_bn",
                           cfg.channels, 7, 2, 3, relu=True)
    with b.scope("pool"):
        x = b.op("MaxPool", [x], ceil_mode=0, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                 strides=[2, 2])
    shape = (batch, shape[1], _conv_out(shape[2], 3, 2, 1), _conv_out(shape[3], 3, 2, 1))
    for i, j, inp, p, stride, proj in _layout(cfg):
        n = f"stages.{i}.{j}"
        with b.scope(f"stages.{i}"), b.scope(n):
            y, s1 = net.conv_bn(x, shape, n + ".conv1", n + ".bn1", p, 1, 1, 0, relu=True)
            y, s2 = net.conv_bn(y, s1, n + ".conv2", n + ".bn2", p * cfg.width, 3, stride, 1,
                                relu=True)
            y, s3 = net.conv_bn(y, s2, n + ".conv3", n + ".bn3", 4 * p, 1, 1, 0, relu=False)
            if proj:
                shortcut, _ = net.conv_bn(x, shape, n + ".proj_conv", n + ".proj_bn", 4 * p, 1,
                                          stride, 0, relu=False)
            else:
                shortcut = x
            x = b.op("Relu", [b.op("Add", [y, shortcut])])
            shape = s3
    with b.scope("avgpool"):
        x = b.op("GlobalAveragePool", [x])
    x = b.op("Flatten", [x], axis=1)
    with b.scope("fc"):
        w = b.param("fc.weight", [cfg.classes, shape[1]])
        bias = b.param("fc.bias", [cfg.classes])
        logits = b.op("Gemm", [x, w, bias], alpha=1.0, beta=1.0, transB=1)
    loss = b.cross_entropy(logits, labels)
    return b.build(loss, doc=f"WResNet {cfg}")
