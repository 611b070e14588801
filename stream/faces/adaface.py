"""The AdaFace embedder: aligned 112x112 BGR crops → (unit embedding, norm), in batches.

The backbone is ``stream.faces.ir_net``'s (the official module tree: docs/adaface.md §1-2), loaded by
``stream.faces.checkpoints.load_backbone``. Input is BGR, ``((x/255) - 0.5) / 0.5`` computed in float64
then cast (docs/adaface.md §4).
Nothing is built, loaded or put on a GPU at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from stream.faces.checkpoints import load_backbone
from stream.faces.embedder import CropKind
from stream.faces.ir_net import ARCHS, CROP_SIZE, EMBED_DIM, Backbone, build_backbone
from trackers import check_array

__all__ = ["ARCHS", "AdaFaceEmbedder", "Backbone", "Precision", "build_backbone", "preprocess_bgr"]

Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

# float64 formula of the official ``to_input``, tabulated for 0..255 then cast (bit-exact).
_PIXEL_LUT = ((np.arange(256, dtype=np.float64) / 255.0 - 0.5) / 0.5).astype(np.float32)
_PIXEL_LUT.flags.writeable = False


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
    crop_kind: CropKind = "template"

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
        model, self.model_id = load_backbone(arch, checkpoint, allow_unsafe_pickle)
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
