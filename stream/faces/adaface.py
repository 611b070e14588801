"""AdaFace IR backbones (the official ``net.py`` layout) and a batched embedder.

The module tree reproduces the official ``Backbone`` so that released checkpoints load
with ``strict=True``: same key names, shapes and counts (docs/adaface.md §1). ``forward`` returns
``(unit embedding, norm)``, both float32, with the norm taken in fp32 (docs/adaface.md §2).
Input is BGR, ``((x/255) - 0.5) / 0.5`` computed in float64 then cast (docs/adaface.md §4).
Nothing is built, loaded or put on a GPU at import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from trackers._arrays import check_array

__all__ = ["ARCHS", "AdaFaceEmbedder", "Backbone", "Precision", "build_backbone", "preprocess_bgr"]

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

Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

# float64 formula of the official ``to_input``, tabulated for 0..255 then cast (bit-exact).
_PIXEL_LUT = ((np.arange(256, dtype=np.float64) / 255.0 - 0.5) / 0.5).astype(np.float32)
_PIXEL_LUT.flags.writeable = False


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


def preprocess_bgr(crops: np.ndarray) -> torch.Tensor:
    """(B,112,112,3) uint8 BGR -> float32 (B,3,112,112) in [-1, 1], bit-exact to the official path."""
    _check_crops(crops)
    scaled = _PIXEL_LUT[crops]
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)))


def _check_crops(crops: object) -> None:
    check_array("crops", crops, np.uint8, (None, CROP_SIZE, CROP_SIZE, 3))


class AdaFaceEmbedder:
    """Embeds aligned 112x112 BGR crops with an AdaFace backbone, in batches."""

    crop_size: int = CROP_SIZE
    crop_kind: str = "template"

    def __init__(
        self,
        arch: str,
        checkpoint: str | Path | nn.Module,
        device: str = "cpu",
        precision: Precision = "fp32",
        batch_size: int = 32,
        allow_unsafe_pickle: bool = False,
    ) -> None:
        if precision not in _AUTOCAST_DTYPES:
            raise ValueError(f"precision: expected one of {', '.join(_AUTOCAST_DTYPES)}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.arch = arch
        self.device = _resolve_device(device)
        self.precision = precision
        self.batch_size = batch_size
        model, self.model_id = _load_model(arch, checkpoint, allow_unsafe_pickle)
        self.model = _place(model, self.device)

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ((N,512) float32 unit vectors, (N,) float32 norms) for N crops."""
        _check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, EMBED_DIM), np.float32), np.zeros((0,), np.float32)
        parts = [self._embed_batch(crops[i : i + self.batch_size]) for i in range(0, len(crops), self.batch_size)]
        vectors = np.concatenate([v for v, _ in parts])
        norms = np.concatenate([n for _, n in parts])
        return vectors, norms

    def _embed_batch(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = preprocess_bgr(crops).to(self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = _AUTOCAST_DTYPES[self.precision]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            unit, norm = self.model(x)
        return unit.float().cpu().numpy(), norm.float().cpu().numpy()[:, 0]


def _resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return dev


def _place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to device in eval mode; channels_last only on CUDA."""
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _load_model(arch: str, checkpoint: str | Path | nn.Module, allow_unsafe_pickle: bool) -> tuple[nn.Module, str]:
    """Return (model, model_id) from a checkpoint file or an already-built module."""
    # Deferred: checkpoints.py builds our backbones to validate keys, so it imports this module.
    from stream.faces.checkpoints import check_state, load_adaface_state, sha256_file

    if isinstance(checkpoint, nn.Module):
        state = checkpoint.state_dict()
        check_state(state, arch, source=f"module {type(checkpoint).__name__}")
        return checkpoint, f"adaface:{arch}:mem-{_state_digest(state)[:12]}"
    state = load_adaface_state(checkpoint, arch, allow_unsafe_pickle=allow_unsafe_pickle)
    model = build_backbone(arch)
    model.load_state_dict(state, strict=True)
    return model, f"adaface:{arch}:{sha256_file(checkpoint)[:12]}"


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted keys and tensor bytes, for modules given without a file."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
