"""Best-shot selection: which face crops of a track are worth embedding, and when.

Pure and thread-free: the pipeline's recognition thread offers crops and takes the ones to embed,
through one ``BestShotSelector`` owned by one thread. Embedding every crop of every track wastes the
embedder on blurry, tiny or turned-away faces and lets the embed queue grow without bound. Instead
each track keeps a small **mailbox** of its best crops so far (docs/architecture.md §3.6), so the
work waiting for the embedder is at most ``tracks × capacity`` crops, and each track is embedded at
most ``max_attempts`` times, then re-checked once every ``recheck_s`` seconds.

**Crop quality** (``crop_quality``) is a product of five factors, each in [0, 1]; one bad factor
pulls the whole score down, and a zero in any factor vetoes the crop::

    score = size · det · sharp · pose · inside

    size   = clip(side / full_size_px, 0, 1)        side = shorter side of the box, frame pixels;
                                                     saturates at 112 px (the aligned crop size)
    det    = clip(det_score, 0, 1)                   the detector's confidence
    sharp  = clip(blur / sharp_blur, 0, 1)           blur = quality.blur_score(aligned crop),
                                                     variance of the Laplacian; saturates at 300
    pose   = clip(1 - |nose - mid| / half_width, 0, 1)
                                                     along the eye axis (roll-invariant): mid is the
                                                     mean of the eye midpoint and the mouth midpoint,
                                                     half_width half the eye distance. Frontal ≈ 1;
                                                     the nose at an outer eye (profile) → 0
    inside = (share of the box area inside the frame) ** clip_power   (power 2 by default)

Flags: ``small`` (side < min_face_px), ``blurry`` (blur < blurry_below), ``profile``
(pose < profile_below), ``clipped`` (inside share < 1 - clip_tolerance), ``low_score``
(det_score < low_score_below). Flags explain a score; they do not gate by themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from stream.identity.quality import blur_score
from stream.types import FaceCrop, TrackKey

__all__ = [
    "BestShotSelector",
    "BestShotSettings",
    "CropQuality",
    "Mailbox",
    "QualitySettings",
    "crop_quality",
]

C = TypeVar("C")

LEFT_EYE, RIGHT_EYE, NOSE, LEFT_MOUTH, RIGHT_MOUTH = range(5)


def _positive(owner: str, name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}.{name}: must be finite and > 0, got {value}")


def _in_range(owner: str, name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{owner}.{name}: must be in [{low}, {high}], got {value}")


# ---------------------------------------------------------------------------------------------
# Crop quality
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QualitySettings:
    """Where each quality factor saturates, and where its flag is raised."""

    full_size_px: float = 112.0  # face side at which the size factor reaches 1
    sharp_blur: float = 300.0  # Laplacian variance at which the sharpness factor reaches 1
    blurry_below: float = 150.0  # "blurry" flag (quality.EnrollGates.min_blur uses the same 150)
    profile_below: float = 0.5  # "profile" flag when the pose factor is under this
    clip_power: float = 2.0  # inside-share exponent: 10 % of the box outside → factor 0.81
    clip_tolerance: float = 0.01  # share of the box that may stick out before "clipped"
    low_score_below: float = 0.9  # "low_score" flag

    def __post_init__(self) -> None:
        for name in ("full_size_px", "sharp_blur", "clip_power"):
            _positive("QualitySettings", name, getattr(self, name))
        _in_range("QualitySettings", "blurry_below", self.blurry_below, 0.0, math.inf)
        for name in ("profile_below", "clip_tolerance", "low_score_below"):
            _in_range("QualitySettings", name, getattr(self, name), 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class CropQuality:
    """A crop's overall ``score`` in [0, 1], its factors, and flags naming what is wrong with it."""

    score: float
    flags: frozenset[str]
    size: float
    det: float
    sharp: float
    pose: float
    inside: float


def crop_quality(
    box: np.ndarray,
    det_score: float,
    landmarks: np.ndarray,
    frame_hw: tuple[int, int],
    aligned_crop: np.ndarray,
    min_face_px: float,
    settings: QualitySettings = QualitySettings(),
) -> CropQuality:
    """Score one face crop for best-shot selection (formula in the module docstring)."""
    box = _vector("box", box, (4,))
    points = _vector("landmarks", landmarks, (5, 2))
    side = float(min(box[2] - box[0], box[3] - box[1]))
    blur = blur_score(aligned_crop)
    size = _clip01(side / settings.full_size_px)
    det = _clip01(float(det_score)) if math.isfinite(det_score) else 0.0
    sharp = _clip01(blur / settings.sharp_blur)
    pose = pose_score(points)
    share = inside_share(box, frame_hw)
    inside = share**settings.clip_power
    flags = {
        "small": side < min_face_px,
        "blurry": blur < settings.blurry_below,
        "profile": pose < settings.profile_below,
        "clipped": share < 1.0 - settings.clip_tolerance,
        "low_score": det < settings.low_score_below,
    }
    score = _clip01(size * det * sharp * pose * inside)
    return CropQuality(score, frozenset(k for k, v in flags.items() if v), size, det, sharp, pose, inside)


def pose_score(landmarks: np.ndarray) -> float:
    """Frontalness from 5 landmarks: 1 with the nose on the face's midline, 0 at an outer eye.

    Measured along the eye axis, so head roll (tilt in the image plane) does not count.
    """
    points = np.asarray(landmarks, np.float64)
    axis = points[RIGHT_EYE] - points[LEFT_EYE]
    eye_distance = float(np.hypot(*axis))
    if eye_distance < 1e-6:
        return 0.0
    axis /= eye_distance
    mid = (points[LEFT_EYE] + points[RIGHT_EYE] + points[LEFT_MOUTH] + points[RIGHT_MOUTH]) / 4.0
    offset = abs(float(np.dot(points[NOSE] - mid, axis)))
    return _clip01(1.0 - offset / (eye_distance / 2.0))


def inside_share(box: np.ndarray, frame_hw: tuple[int, int]) -> float:
    """Share of the box's area inside the frame (0 for an empty box)."""
    height, width = frame_hw
    x1, y1, x2, y2 = (float(v) for v in box)
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    if area <= 0.0:
        return 0.0
    cut_w = max(min(x2, width) - max(x1, 0.0), 0.0)
    cut_h = max(min(y2, height) - max(y1, 0.0), 0.0)
    return _clip01(cut_w * cut_h / area)


def _clip01(value: float) -> float:
    return float(min(max(value, 0.0), 1.0)) if math.isfinite(value) else 0.0


def _vector(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, np.float64)
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise ValueError(f"crop_quality: {name} must be finite with shape {shape}, got {arr.shape}")
    return arr


# ---------------------------------------------------------------------------------------------
# Mailbox
# ---------------------------------------------------------------------------------------------


class Mailbox(Generic[C]):
    """The best ``capacity`` candidates offered so far; a newcomer must be clearly better to get in.

    When full, a new candidate replaces the worst held one only if its quality exceeds the worst's
    by more than ``min_gain``, so near-equal frames do not churn the box. Ties in quality keep the
    earlier candidate first.
    """

    def __init__(self, capacity: int = 2, min_gain: float = 0.05) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"Mailbox.capacity: must be an integer >= 1, got {capacity!r}")
        _in_range("Mailbox", "min_gain", min_gain, 0.0, math.inf)
        self.capacity = capacity
        self.min_gain = float(min_gain)
        self._items: list[tuple[float, int, C]] = []  # (quality, arrival, candidate), best first
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, candidate: C, quality: float) -> bool:
        """Keep ``candidate`` if there is room or it is clearly better than the worst; True if kept."""
        if not math.isfinite(quality):
            return False
        if len(self._items) >= self.capacity:
            if quality <= self._items[-1][0] + self.min_gain:
                return False
            self._items.pop()
        self._items.append((float(quality), self._arrivals, candidate))
        self._arrivals += 1
        self._items.sort(key=lambda item: (-item[0], item[1]))
        return True

    def pop_best(self) -> tuple[C, float] | None:
        """Remove and return the best (candidate, quality), or None when empty."""
        if not self._items:
            return None
        quality, _, candidate = self._items.pop(0)
        return candidate, quality

    def best_quality(self) -> float | None:
        return self._items[0][0] if self._items else None

    def drop_where(self, stale: Callable[[C], bool]) -> None:
        """Remove every candidate for which ``stale(candidate)`` is true."""
        self._items = [item for item in self._items if not stale(item[2])]

    def take(self) -> list[C]:
        """Empty the box; its candidates, best first."""
        items, self._items = self._items, []
        return [candidate for _, _, candidate in items]


# ---------------------------------------------------------------------------------------------
# Selector
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BestShotSettings:
    """How many crops a track holds and gets embedded.

    capacity: crops held per track (bounds the embed backlog at tracks × capacity).
    min_gain: quality a crop must add over the worst held one to replace it.
    max_attempts: crops embedded per track before it is only re-checked.
    recheck_s: after max_attempts, one crop per this many seconds re-verifies a long track.
    min_quality: crops scoring below this are never held. Default 0: every confirmed track gets its
        best crop embedded. The multiplicative pre-embedding score is only a ranking; on compressed
        1080p video (bench/tracking.py) medium faces (36-73 px) scored 0.006-0.065, so a 0.1 floor
        left 7 of 11 confirmed tracks never embedded. After embedding, the feature norm is the
        quality weight (voting.py).
    max_age_s: held crops older than this are dropped unused (None: never).
    """

    capacity: int = 2
    min_gain: float = 0.05
    max_attempts: int = 8
    recheck_s: float = 5.0
    min_quality: float = 0.0
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("capacity", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BestShotSettings.{name}: must be an integer >= 1, got {value!r}")
        _in_range("BestShotSettings", "min_gain", self.min_gain, 0.0, 1.0)
        _positive("BestShotSettings", "recheck_s", self.recheck_s)
        _in_range("BestShotSettings", "min_quality", self.min_quality, 0.0, 1.0)
        if self.max_age_s is not None:
            _positive("BestShotSettings", "max_age_s", self.max_age_s)

    @classmethod
    def from_recognition(cls, recognition: object, **overrides: object) -> BestShotSettings:
        """Settings from a ``RecognitionConfig`` (max_attempts_per_track, recheck_s) plus overrides."""
        values: dict[str, object] = {
            "max_attempts": int(recognition.max_attempts_per_track),  # type: ignore[attr-defined]
            "recheck_s": float(recognition.recheck_s),  # type: ignore[attr-defined]
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


@dataclass(slots=True)
class _Track:
    """One track's mailbox and attempt bookkeeping (owned by the selector)."""

    box: Mailbox[tuple[FaceCrop, float]]
    attempts: int = 0
    last_handout_t: float | None = None
    last_served: int = -1  # the selector's handout counter when this track was last served


class BestShotSelector:
    """Owns every track's mailbox and attempt count; hands out the crops to embed next.

    ``t`` is one monotonic clock in seconds shared by ``offer`` and ``ready`` (all streams).
    A track is *due* while it has had fewer than ``max_attempts`` crops handed out, and afterwards
    once per ``recheck_s`` since its last handout. ``ready`` serves due tracks in rounds, fewest
    attempts first then least recently served, one crop (its best) per track per pick, so one busy
    track cannot starve the others and new tracks get named first.
    """

    def __init__(self, settings: BestShotSettings = BestShotSettings()) -> None:
        self.settings = settings
        self._tracks: dict[TrackKey, _Track] = {}
        self._served = 0

    def __len__(self) -> int:
        """Crops held, over all tracks (never more than tracks × capacity)."""
        return sum(len(track.box) for track in self._tracks.values())

    @property
    def tracks(self) -> tuple[TrackKey, ...]:
        return tuple(self._tracks)

    def attempts(self, track: TrackKey) -> int:
        state = self._tracks.get(track)
        return state.attempts if state is not None else 0

    def offer(self, crop: FaceCrop, t: float) -> bool:
        """Hold ``crop`` (its ``quality`` is a CropQuality score) if good enough; True if held."""
        if not crop.quality >= self.settings.min_quality:
            return False
        state = self._tracks.get(crop.track)
        if state is None:
            state = _Track(Mailbox(self.settings.capacity, self.settings.min_gain))
            self._tracks[crop.track] = state
        return state.box.offer((crop, float(t)), crop.quality)

    def ready(self, t: float, limit: int) -> list[FaceCrop]:
        """Up to ``limit`` crops to embed now, fair across tracks, each counted as an attempt."""
        self._drop_stale(t)
        out: list[FaceCrop] = []
        while len(out) < limit:
            key = self._next_due(t)
            if key is None:
                break
            out.append(self._hand_out(key, t))
        return out

    def end(self, track: TrackKey) -> None:
        """Forget a track: its held crops and its attempts."""
        self._tracks.pop(track, None)

    def _due(self, state: _Track, t: float) -> bool:
        if len(state.box) == 0:
            return False
        if state.attempts < self.settings.max_attempts:
            return True
        return state.last_handout_t is None or t - state.last_handout_t >= self.settings.recheck_s

    def _next_due(self, t: float) -> TrackKey | None:
        due = [(state.attempts, state.last_served, key) for key, state in self._tracks.items() if self._due(state, t)]
        if not due:
            return None
        return min(due, key=lambda item: (item[0], item[1]))[2]

    def _hand_out(self, key: TrackKey, t: float) -> FaceCrop:
        state = self._tracks[key]
        best = state.box.pop_best()
        assert best is not None  # _due checked the box is not empty
        (crop, _), _ = best
        state.attempts += 1
        state.last_handout_t = float(t)
        state.last_served = self._served
        self._served += 1
        if state.attempts >= self.settings.max_attempts:
            state.box.take()  # the next re-check uses a crop from the coming window, not a stale one
        return crop

    def _drop_stale(self, t: float) -> None:
        max_age = self.settings.max_age_s
        if max_age is None:
            return
        for state in self._tracks.values():
            state.box.drop_where(lambda item: t - item[1] > max_age)
