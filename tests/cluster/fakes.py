"""Models for cluster tests, made inside the worker actors (picklable factories; no torch, no weights)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.faces.models import Models
from stream.types import FaceDetections
from tests.fakes import OneFaceDetector


class SlowOneFaceDetector(OneFaceDetector):
    """``OneFaceDetector`` (one face in the middle of every bright image) taking ``delay_s`` per image,
    so a short clip runs long enough to kill its worker mid-run."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceDetections]:
        time.sleep(self.delay_s * len(frames))
        return super().detect(frames)


class ConstantEmbedder:
    """Every crop embeds to the same unit vector (one unknown person everywhere)."""

    crop_size, crop_kind, model_id = 112, "template", "facenet:casia-webface:fake"

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.zeros((len(crops), 512), np.float32)
        rows[:, 0] = 1.0
        return rows, np.full(len(crops), 20.0, np.float32)


@dataclass(frozen=True)
class FakeModels:
    """``models`` for ``run_on_cluster``: the fake detector and embedder, built in the worker."""

    delay_s: float = 0.0

    def __call__(self) -> Models:
        return Models(SlowOneFaceDetector(self.delay_s), ConstantEmbedder(), batch_size=8)  # type: ignore[arg-type]
