"""AdaFace IR backbones: the official ``net.py`` module tree, built untrained.

The tree reproduces the official ``Backbone`` so that released checkpoints load with
``strict=True``: same key names, shapes and counts (docs/adaface.md). ``forward`` returns
``(unit embedding, norm)``, both float32, with the norm taken in fp32. Weights are loaded by
``stream.faces.checkpoints``; nothing is built or loaded at import.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["ARCHS", "CROP_SIZE", "EMBED_DIM", "Backbone", "build_backbone", "unit_and_norm"]

CROP_SIZE = 112
EMBED_DIM = 512
STAGE_CHANNELS = (64, 128, 256, 512)

# Units per stage; ir_101 is the official depth "100" (49 units).
_STAGE_UNITS: dict[str, tuple[int, int, int, int]] = {
    "ir_18": (2, 2, 2, 2),
    "ir_34": (3, 4, 6, 3),
    "ir_50": (3, 4, 14, 3),
    "ir_101": (3, 13, 30, 3),
    "ir_se_50": (3, 4, 14, 3),
}
ARCHS: tuple[str, ...] = tuple(_STAGE_UNITS)

class SEBlock(nn.Module):
    """Squeeze-and-excitation gate: avgpool -> fc1 -> ReLU -> fc2 -> sigmoid, times input."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class IRUnit(nn.Module):
    """Official ``BasicBlockIR`` (optionally with SE): ``res_layer(x) + shortcut_layer(x)``."""

    def __init__(self, in_c: int, depth: int, stride: int, se: bool = False) -> None:
        super().__init__()
        self.shortcut_layer = _shortcut(in_c, depth, stride)
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_c),
            nn.Conv2d(in_c, depth, 3, 1, 1, bias=False),
            nn.BatchNorm2d(depth),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )
        if se:
            self.res_layer.add_module("se_block", SEBlock(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def _shortcut(in_c: int, depth: int, stride: int) -> nn.Module:
    """Parameter-free strided MaxPool(1) when widths match, else 1x1 conv + BN."""
    if in_c == depth:
        return nn.MaxPool2d(1, stride)
    return nn.Sequential(nn.Conv2d(in_c, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))


def _body_units(units: tuple[int, ...], se: bool) -> Iterator[IRUnit]:
    """Yield every unit in order; each stage's first unit has stride 2."""
    in_c = STAGE_CHANNELS[0]
    for depth, count in zip(STAGE_CHANNELS, units, strict=True):
        yield IRUnit(in_c, depth, 2, se)
        for _ in range(count - 1):
            yield IRUnit(depth, depth, 1, se)
        in_c = depth


class Backbone(nn.Module):
    """The official IR backbone for a 112x112 BGR crop; returns ``(embedding, norm)``."""

    def __init__(self, units: tuple[int, ...], se: bool = False) -> None:
        super().__init__()
        last = STAGE_CHANNELS[-1]
        spatial = CROP_SIZE // 16
        # Registration order matters for key order: input_layer, output_layer, then body.
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, STAGE_CHANNELS[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(STAGE_CHANNELS[0]),
            nn.PReLU(STAGE_CHANNELS[0]),
        )
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(last),
            nn.Dropout(0.4),
            nn.Flatten(),  # C-major like the official view(B, -1), but also works on channels_last
            nn.Linear(last * spatial * spatial, EMBED_DIM),
            nn.BatchNorm1d(EMBED_DIM, affine=False),
        )
        self.body = nn.Sequential(*_body_units(units, se))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.output_layer(self.body(self.input_layer(x)))
        return unit_and_norm(z)


def unit_and_norm(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split raw features into (unit vectors, L2 norms (B,1)), in fp32 even under autocast."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.float()
        norm = torch.linalg.vector_norm(z, ord=2, dim=1, keepdim=True)
        return z / norm, norm


def build_backbone(arch: str) -> Backbone:
    """Build an (untrained) backbone by official factory name."""
    if arch not in _STAGE_UNITS:
        raise ValueError(f"unknown AdaFace arch {arch!r}; allowed: {', '.join(ARCHS)}")
    return Backbone(_STAGE_UNITS[arch], se=arch.startswith("ir_se_"))
