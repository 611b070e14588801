"""Test doubles shared by the suite, in one place.

Pass them in through a constructor or a keyword argument (``MtcnnDetector(settings, detect_face=...)``,
``ensure_facenet_weights(folder, converter=...)``, ``prepare_demo(folder, make_clip=...)``,
``dataclasses.replace(models, embedder=...)``) rather than monkeypatching private attributes.
Importing this module is cheap: torch, facenet-pytorch and the demo are imported where used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.sources import SourceStatus
from stream.types import FaceDetections, Frame

if TYPE_CHECKING:
    import torch

    from stream.faces.embedder import CropKind

__all__ = [
    "AlwaysFailingDetectFace",
    "AnnotateWithoutModels",
    "BatchFailingDetectFace",
    "Collector",
    "CountingConverter",
    "CountingDetector",
    "CountingEmbedder",
    "FakeGallery",
    "FakeMqttLink",
    "FakePerson",
    "FakeRecognition",
    "LevelEmbedder",
    "NoEmbedder",
    "NoFaceDetector",
    "OneFaceDetector",
    "PicklePayload",
    "RecordingDetect",
    "RecordingIdentifier",
    "RecordingLogHandler",
    "RecordingPoster",
    "RefusingHasher",
    "ScriptedAnnotate",
    "ShortClipMaker",
]


# ---------------------------------------------------------------- detectors


class RecordingDetect:
    """A batch detector (``images -> [FaceDetections]``) that finds nothing and records each call's shapes."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, ...]]] = []

    def __call__(self, images: list[np.ndarray]) -> list[FaceDetections]:
        self.calls.append([im.shape for im in images])
        return [FaceDetections.empty() for _ in images]


def _stock_detect_face() -> Callable[..., Any]:
    from facenet_pytorch.models.utils.detect_face import detect_face

    return detect_face


class BatchFailingDetectFace:
    """Stands in for facenet-pytorch's ``detect_face``: fails on batches of more than one frame, as the
    real one does on some inputs, and runs ``real`` (default facenet-pytorch's) on single frames."""

    def __init__(self, real: Callable[..., Any] | None = None) -> None:
        self.real = real if real is not None else _stock_detect_face()

    def __call__(self, images: Any, *args: Any) -> Any:  # detect_face's signature
        if len(images) > 1:
            raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
        return self.real(images, *args)


class AlwaysFailingDetectFace:
    """Stands in for facenet-pytorch's ``detect_face`` and fails on every call."""

    def __call__(self, *args: Any) -> Any:
        raise IndexError("boolean index did not match")


class CountingDetector:
    """Wraps a ``FaceDetector``: counts the images it is asked about, records the image shapes of each
    batch call, and sleeps ``delay_s`` before each batch (a slow stage)."""

    def __init__(self, inner: Any, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.settings = getattr(inner, "settings", None)
        self.delay_s = delay_s
        self.images = 0
        self.shapes_per_call: list[set[tuple[int, ...]]] = []

    @property
    def batch_fallbacks(self) -> int:
        return int(self.inner.batch_fallbacks)

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceDetections]:
        self.shapes_per_call.append({tuple(np.asarray(im).shape) for im in frames})
        self.images += len(frames)
        time.sleep(self.delay_s)
        return list(self.inner.detect(frames))

    def detect_one(self, image: np.ndarray) -> FaceDetections:
        self.images += 1
        return self.inner.detect_one(image)

    def refine(self, frames: Sequence[np.ndarray], known: Sequence[FaceDetections]) -> list[FaceDetections]:
        self.refined = getattr(self, "refined", 0) + len(frames)
        return list(self.inner.refine(frames, known))

    def reset(self) -> None:
        self.images = 0
        self.shapes_per_call.clear()


class NoFaceDetector:
    """Finds no face anywhere; reports ``batch_fallbacks`` as one per ``fallback_every`` batch calls."""

    def __init__(self, fallback_every: int = 3) -> None:
        self.calls = 0
        self.fallback_every = fallback_every

    @property
    def batch_fallbacks(self) -> int:
        return self.calls // self.fallback_every

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceDetections]:
        self.calls += 1
        return [FaceDetections.empty() for _ in frames]

    def detect_one(self, image: np.ndarray) -> FaceDetections:
        return FaceDetections.empty()

    def refine(self, frames: Sequence[np.ndarray], known: Sequence[FaceDetections]) -> list[FaceDetections]:
        return [FaceDetections.empty() for _ in frames]


class OneFaceDetector:
    """Finds one frontal face in the middle of every image brighter than ``dark`` (mean grey level),
    none in darker ones: box over the central 60 %, score 0.999, five plausible landmarks."""

    batch_fallbacks = 0

    def __init__(self, dark: float = 5.0) -> None:
        self.dark = dark

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceDetections]:
        return [self.detect_one(frame) for frame in frames]

    def detect_one(self, image: np.ndarray) -> FaceDetections:
        if float(np.mean(image)) < self.dark:
            return FaceDetections.empty()
        h, w = image.shape[:2]
        x1, y1, x2, y2 = 0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h
        fx = [0.35, 0.65, 0.5, 0.38, 0.62]
        fy = [0.4, 0.4, 0.55, 0.7, 0.7]
        points = [[x1 + a * (x2 - x1), y1 + b * (y2 - y1)] for a, b in zip(fx, fy, strict=True)]
        return FaceDetections(
            boxes=np.array([[x1, y1, x2, y2]], np.float32),
            scores=np.array([0.999], np.float32),
            landmarks=np.array([points], np.float32),
        )


# ---------------------------------------------------------------- embedders


class LevelEmbedder:
    """Embeds a crop as the unit vector registered for its mean grey level rounded to a multiple of
    10 (``vectors[level]``): images of uniform grey plus noise stand for chosen embeddings."""

    crop_size = 160
    crop_kind: CropKind = "box"

    def __init__(self, vectors: dict[int, np.ndarray], model_id: str = "facenet:casia-webface:fake") -> None:
        self.vectors = {k: np.asarray(v, np.float32) / np.linalg.norm(v) for k, v in vectors.items()}
        self.model_id = model_id

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        levels = [round(float(np.mean(crop)) / 10.0) * 10 for crop in crops]
        dim = len(next(iter(self.vectors.values())))
        rows = np.stack([self.vectors[level] for level in levels]) if levels else np.zeros((0, dim), np.float32)
        return rows, np.full(len(levels), 20.0, np.float32)


class CountingEmbedder:
    """Wraps an embedder (same crop size, kind and model id); counts calls and crops, and sleeps
    ``delay_s`` before each call (a slow stage)."""

    def __init__(self, inner: Any, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.crop_size = inner.crop_size
        self.crop_kind = inner.crop_kind
        self.model_id = inner.model_id
        self.delay_s = delay_s
        self.calls = 0
        self.crops = 0

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        self.crops += len(crops)
        time.sleep(self.delay_s)
        return self.inner.embed(crops)

    def reset(self) -> None:
        self.calls = self.crops = 0


class NoEmbedder:
    """An embedder that must never be called (runs where no face is found)."""

    crop_size, crop_kind, model_id = 112, "template", "facenet:casia-webface:test"

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("no face was found, so nothing should be embedded")


# ---------------------------------------------------------------- FaceNet weight cache


class CountingConverter:
    """A tiny stand-in for the (slow) FaceNet graph conversion; records the size of each input."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, data: bytes) -> dict[str, torch.Tensor]:
        import torch

        self.calls.append(len(data))
        return {"w": torch.zeros(1)}


class RefusingHasher:
    """A hasher that must not be called (an unchanged source must not be re-hashed)."""

    def __call__(self, data: bytes) -> str:
        raise AssertionError("an unchanged source must not be re-hashed")


# ---------------------------------------------------------------- identity


@dataclass(frozen=True)
class FakePerson:
    """A gallery person: only the per-image vectors."""

    vectors: np.ndarray


@dataclass(frozen=True)
class FakeGallery:
    """What ``Matcher.from_gallery`` reads of a ``Gallery``."""

    names: tuple[str, ...]
    templates: np.ndarray
    people: tuple[FakePerson, ...]
    model_id: str = "test:0"


class FakeRecognition:
    """A ``RecognitionConfig`` with only the attributes given (others raise AttributeError)."""

    def __init__(self, **attributes: object) -> None:
        self.__dict__.update(attributes)


class RecordingIdentifier:
    """Stands in for ``StillIdentifier`` behind ``POST /api/identify``: answers ``faces`` and records the
    shape of each image it was given (optionally waiting ``delay_s`` first)."""

    def __init__(self, faces: list[dict[str, Any]] | None = None, delay_s: float = 0.0) -> None:
        self.faces = (
            faces
            if faces is not None
            else [{"box": [1.0, 2.0, 30.0, 40.0], "person": "alice", "score": 0.8, "margin": 0.3}]
        )
        self.shapes: list[tuple[int, ...]] = []
        self.delay_s = delay_s

    def __call__(self, image: np.ndarray) -> list[dict[str, Any]]:
        self.shapes.append(image.shape)
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.faces


# ---------------------------------------------------------------- sources


class Collector:
    """A thread-safe source ``emit()`` that records everything; can be told to refuse after N frames."""

    def __init__(self, stop_after_frames: int | None = None) -> None:
        self.items: list[Frame | SourceStatus] = []
        self._cond = threading.Condition()
        self._stop_after = stop_after_frames

    def __call__(self, item: Frame | SourceStatus) -> bool:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()
            return self._stop_after is None or len(self.frames) < self._stop_after

    @property
    def frames(self) -> list[Frame]:
        return [x for x in list(self.items) if isinstance(x, Frame)]

    @property
    def statuses(self) -> list[SourceStatus]:
        return [x for x in list(self.items) if isinstance(x, SourceStatus)]

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)


# ---------------------------------------------------------------- demo


@dataclass
class ShortClipMaker:
    """``make_clip`` for ``prepare_demo``: a short demo clip; records the paths it was asked for."""

    seconds: float = 0.2
    made: list[Path] = field(default_factory=list)

    def __call__(self, path: Path) -> Path:
        from stream.demo import make_demo_clip

        self.made.append(path)
        return make_demo_clip(path, seconds=self.seconds)


# ---------------------------------------------------------------- logs and pickles


class RecordingLogHandler(logging.Handler):
    """Keeps every record's message (attach it to a logger, remove it afterwards)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class PicklePayload:
    """A malicious pickle: unpickling it calls ``func(*args)``. Loaders must refuse it unrun."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (self.func, self.args)


# ---------------------------------------------------------------- integrations


class FakeMqttLink:
    """An MQTT link (``stream.integrations.hub.Link``) that keeps what it is given: ``published`` in
    order, ``states`` the latest retained payload per topic, ``retained`` every retained payload."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.retained: list[tuple[str, bytes]] = []
        self.states: dict[str, bytes] = {}
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    def retain(self, topic: str, payload: bytes) -> None:
        self.retained.append((topic, payload))
        self.states[topic] = payload

    def counters(self) -> Any:
        from stream.integrations.counters import MqttCounters

        return MqttCounters(published=len(self.published))

    def stop(self, deadline: float) -> None:
        pass

    def close(self, deadline: float) -> None:
        self.closed = True

    def on(self, topic: str) -> list[Any]:
        """The JSON bodies published (not retained) on ``topic``."""
        import json

        return [json.loads(p) for t, p in self.published if t == topic]


class RecordingPoster:
    """A webhook ``post``: answers from ``statuses`` in turn (an exception instance is raised; the last
    answer repeats) and records every call (url, body, headers, time.monotonic())."""

    def __init__(self, *statuses: int | BaseException, delay_s: float = 0.0) -> None:
        self.statuses = list(statuses) or [200]
        self.delay_s = delay_s
        self.calls: list[tuple[str, bytes, dict[str, str], float]] = []
        self._lock = threading.Lock()

    def __call__(self, url: str, body: bytes, headers: Any, timeout_s: float) -> int:
        with self._lock:
            self.calls.append((url, body, dict(headers), time.monotonic()))
            answer = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if self.delay_s:
            time.sleep(self.delay_s)
        if isinstance(answer, BaseException):
            raise answer
        return answer


# ---------------------------------------------------------------- run.py annotate workers


@dataclass(frozen=True)
class AnnotateWithoutModels:
    """``start`` for ``run.py annotate``'s workers without torch: the real per-file job (app pipeline,
    PyAV decoding, video, events, tracks and summary) with a detector that finds no face and an empty
    gallery. Picklable, so it also starts spawned worker processes."""

    config: Any  # AppConfig

    def __call__(self) -> Callable[[Any], Any]:
        from functools import partial

        from stream.commands.annotate import annotate_job
        from stream.faces.models import Models
        from stream.identity.matcher import Matcher

        models = Models(NoFaceDetector(fallback_every=10**9), NoEmbedder(), batch_size=4)
        matcher = Matcher((), np.zeros((0, 512), np.float32), 0.5, 0.05)
        return partial(annotate_job, config=self.config, models=models, matcher=matcher)


@dataclass(frozen=True)
class ScriptedAnnotate:
    """``start`` for ``run.py annotate``'s worker pool, scripted by file name: a name containing
    ``crash`` ends the worker process (exit code 3), ``fail`` fails with a reason, anything else is
    done with 7 frames (nothing written). ``refuse``: the worker cannot start (a ``UserError``)."""

    refuse: str | None = None

    def __call__(self) -> Callable[[Any], Any]:
        if self.refuse is not None:
            from stream.errors import UserError

            raise UserError(self.refuse)
        return _scripted_file


def _scripted_file(job: Any) -> Any:
    import os

    from stream.commands.annotate import FileResult

    if "crash" in job.source.name:
        os._exit(3)
    if "fail" in job.source.name:
        return FileResult(job.source, job.out_dir, "failed", reason="scripted failure")
    return FileResult(job.source, job.out_dir, "done", frames=7, seconds=0.01)
