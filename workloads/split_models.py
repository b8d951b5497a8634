"""Models for split training, as lists of blocks: a device trains blocks 1..j, the server
j+1..N, so the block boundaries are the cut points. Written from the papers' architectures
(LeNet-5, VGG-16 with the 32x32 classifier used for CIFAR-10, ResNet-50/101) with random
weights: torchvision's builders are not used because no torchvision release imports beside
the pinned torch 2.13.0 (see PLATFORM.md). Standard library + torch only: boards and images
run this file too.

    blocks(name, classes, seed, width) -> (list of nn.Module, input shape of one sample)

`width` multiplies every layer's channel count (a workload's `scale: {work: f}` gives
width sqrt(f)): convolutions' work and weights shrink about f-fold, activations sqrt(f)-fold,
while the blocks, and so the cut points, stay the model's.
"""

from __future__ import annotations

from models import Bottleneck, conv_bn
from torch import nn


def _n(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def lenet(classes: int, width: float = 1.0) -> list[nn.Module]:
    c1, c2, f1, f2 = (_n(c, width) for c in (6, 16, 120, 84))
    return [nn.Sequential(nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Flatten(), nn.Linear(c2 * 5 * 5, f1), nn.ReLU()),
            nn.Sequential(nn.Linear(f1, f2), nn.ReLU()),
            nn.Linear(f2, classes)]


def vgg16(classes: int, width: float = 1.0) -> list[nn.Module]:
    """13 convolutions (a pooling step joins the convolution before it) and 3 linear layers."""
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
            512, 512, 512, "M"]
    out: list[nn.Module] = []
    cin = 3
    for v in plan:
        if v == "M":
            out[-1] = nn.Sequential(*out[-1], nn.MaxPool2d(2))
        else:
            cout = _n(v, width)
            out.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()))
            cin = cout
    f = _n(512, width)
    out += [nn.Sequential(nn.Flatten(), nn.Linear(cin, f), nn.ReLU()),
            nn.Sequential(nn.Linear(f, f), nn.ReLU()), nn.Linear(f, classes)]
    return out


def resnet(depths: list[int], classes: int, width: float = 1.0) -> list[nn.Module]:
    """The stem, every bottleneck block, and the head."""
    cin = _n(64, width)
    out: list[nn.Module] = [nn.Sequential(conv_bn(3, cin, 7, 2), nn.MaxPool2d(3, 2, 1))]
    for i, (w, n) in enumerate(zip([64, 128, 256, 512], depths, strict=True)):
        for j in range(n):
            out.append(Bottleneck(cin, _n(w, width), 2 if (j == 0 and i > 0) else 1))
            cin = _n(w, width) * Bottleneck.expansion
    out.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)))
    return out


BUILDERS = {
    "lenet": (lenet, (1, 32, 32)),
    "vgg16": (vgg16, (3, 32, 32)),
    "resnet50": (lambda c, w: resnet([3, 4, 6, 3], c, w), (3, 32, 32)),
    "resnet101": (lambda c, w: resnet([3, 4, 23, 3], c, w), (3, 32, 32)),
}


def blocks(name: str, classes: int = 10, seed: int = 0,
           width: float = 1.0) -> tuple[list[nn.Module], tuple]:
    """The model's blocks with weights drawn from `seed` (every process draws the same)."""
    import torch

    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(BUILDERS)}")
    build, shape = BUILDERS[name]
    torch.manual_seed(seed)
    return build(classes, width), shape
