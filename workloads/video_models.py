"""The two models of the pedestrian re-identification pipeline (thesis section 5.5.1), written
here because torchvision does not import beside this torch: an SSDLite detector on a
MobileNetV2 backbone (the thesis's SSD-MobileNet-V2) and an OSNet-like re-ID feature extractor
(omni-scale residual blocks with a shared aggregation gate, as OSNet-AIN builds them). Random
weights: the work per frame and per crop is real, the detections are not.
Standard library + torch only: boards and images run this file.
"""

from __future__ import annotations

import torch
from torch import nn

COCO_CLASSES = 91
ANCHORS = 6


def _conv(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1,
          act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers = [] if expand == 1 else [_conv(cin, mid, 1)]
        layers += [_conv(mid, mid, 3, stride, groups=mid), _conv(mid, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def _separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1))


class SSDLiteMobileNetV2(nn.Module):
    """MobileNetV2 features; SSDLite heads on the stride-16 and stride-32 maps and on four extra
    maps, each a depthwise-separable conv predicting boxes and class scores per anchor."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self) -> None:
        super().__init__()
        layers, cin = [_conv(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for k in range(n):
                layers.append(InvertedResidual(cin, c, s if k == 0 else 1, t))
                cin = c
        self.stage1 = nn.Sequential(*layers[:14])  # ends at stride 16 (96 channels)
        self.stage2 = nn.Sequential(*layers[14:], _conv(320, 1280, 1))  # stride 32
        extra, cin, self.extra = [], 1280, nn.ModuleList()
        for c in (512, 256, 256, 128):
            self.extra.append(nn.Sequential(_conv(cin, c // 2, 1), _separable(c // 2, c, 2)))
            extra.append(c)
            cin = c
        maps = [96, 1280, *extra]
        out = ANCHORS * (4 + COCO_CLASSES)
        self.heads = nn.ModuleList(nn.Sequential(_conv(c, c, 3, groups=c),
                                                 nn.Conv2d(c, out, 1)) for c in maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stage1(x)]
        feats.append(self.stage2(feats[0]))
        for e in self.extra:
            feats.append(e(feats[-1]))
        outs = [h(f).flatten(2) for h, f in zip(self.heads, feats, strict=True)]
        return torch.cat(outs, 2)  # (batch, anchors x (4 + classes), positions)


class _Lite(nn.Sequential):
    """Lite 3x3: pointwise then depthwise convolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 1, bias=False),
                         nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class OmniScaleBlock(nn.Module):
    """Four streams of 1-4 stacked lite 3x3 convs (receptive fields 3 to 9), fused by one
    channel gate shared by the streams, with a residual connection."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 4
        self.reduce = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid),
                                    nn.ReLU(inplace=True))
        self.streams = nn.ModuleList(nn.Sequential(*[_Lite(mid, mid) for _ in range(t)])
                                     for t in range(1, 5))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, max(mid // 16, 4), 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(max(mid // 16, 4), mid, 1),
                                  nn.Sigmoid())
        self.expand = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = None if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        outs = [s(r) for s in self.streams]
        fused = sum(o * self.gate(o) for o in outs)
        y = self.expand(fused)
        return torch.relu(y + (x if self.skip is None else self.skip(x)))


class OSNetLike(nn.Module):
    """OSNet x1.0's layout: 7x7 stem, three stages of two omni-scale blocks (256, 384, 512
    channels) with pooling transitions, global pooling, a 512-d feature."""

    def __init__(self, feature: int = 512) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, c in enumerate((256, 384, 512)):
            stages += [OmniScaleBlock(cin, c), OmniScaleBlock(c, c)]
            if i < 2:
                stages += [nn.Conv2d(c, c, 1, bias=False), nn.AvgPool2d(2, 2)]
            cin = c
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, feature))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(self.stages(self.stem(x))), dim=1)


def build(name: str) -> nn.Module:
    """A model by the name the video file uses, in inference mode, random weights (seeded)."""
    torch.manual_seed(0)
    model = {"ssdlite_mobilenet": SSDLiteMobileNetV2, "osnet_like": OSNetLike}[name]()
    return model.eval()
