"""Draw tracks, names and a quality cue onto a copy of a frame (OpenCV drawing).

Colours (BGR): green for a named person, orange for an unknown face, grey for a track that is not
currently matched to a detection (state ``lost``, ``tentative`` or ``removed``).
Each box gets a label ``#7 alice 0.62`` / ``#7 unknown`` (``#7 unknown-3`` once the unknown face has
the run's stranger label) and, when the quality is known, a short
bar under the box whose length is ``quality`` (0..1) of the box width and whose colour runs from
red (0) through yellow to green (1). Labels are kept inside the frame; boxes that are partly or
wholly outside the frame are clipped or skipped. Zones (``streams[].zones``, normalised polygons) are
drawn first, under the boxes: a thin yellow outline and the zone's name at its top-left corner. The
input image is never written to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stream.logs import mask_secrets
from trackers import check_array, check_finite

__all__ = ["COLOR_LOST", "COLOR_NAMED", "COLOR_UNKNOWN", "COLOR_ZONE", "TrackView", "ZoneOutline", "draw_overlay"]

Color = tuple[int, int, int]

COLOR_NAMED: Color = (0, 200, 0)
COLOR_UNKNOWN: Color = (0, 140, 255)
COLOR_LOST: Color = (160, 160, 160)
COLOR_ZONE: Color = (0, 215, 255)
_TEXT_DARK: Color = (0, 0, 0)
_TEXT_LIGHT: Color = (255, 255, 255)
_INACTIVE_STATES = frozenset({"lost", "tentative", "removed"})
_FONT = cv2.FONT_HERSHEY_SIMPLEX

ZoneOutline = tuple[str, Sequence[tuple[float, float]]]
"""A zone to draw: its name and polygon in normalised (0-1) coordinates."""


@dataclass(frozen=True, slots=True)
class TrackView:
    """What the overlay needs to know about one track in one frame.

    ``box`` is (4,) float32 x1, y1, x2, y2 in frame pixels; ``score`` is the identity confidence
    shown after the name; ``quality`` is the face quality in 0..1 (clipped when drawn);
    ``state`` is a track state name such as ``"confirmed"`` or ``"lost"``.
    """

    track_id: int
    box: np.ndarray
    person: str | None
    score: float | None
    quality: float | None
    state: str
    stranger: str | None = None  # shown instead of "unknown" for an unknown track that has one

    def __post_init__(self) -> None:
        box = check_array("TrackView.box", self.box, np.float32, (4,))
        check_finite("TrackView.box", box)
        object.__setattr__(self, "box", box)
        for name in ("score", "quality"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"TrackView.{name}: must be finite or None, got {value}")

    @property
    def label(self) -> str:
        if self.person is None:
            return f"#{self.track_id} {self.stranger or 'unknown'}"
        if self.score is None:
            return f"#{self.track_id} {self.person}"
        return f"#{self.track_id} {self.person} {self.score:.2f}"

    @property
    def color(self) -> Color:
        if self.state.lower() in _INACTIVE_STATES:
            return COLOR_LOST
        return COLOR_UNKNOWN if self.person is None else COLOR_NAMED


def draw_overlay(
    image_bgr: np.ndarray,
    views: list[TrackView] | tuple[TrackView, ...],
    stream_label: str | None = None,
    fps: float | None = None,
    zones: Sequence[ZoneOutline] = (),
) -> np.ndarray:
    """Return a new HxWx3 uint8 BGR image: ``image_bgr`` with the zones, every view and a header drawn on it."""
    image = check_array("draw_overlay.image_bgr", image_bgr, np.uint8, (None, None, 3))
    canvas = np.array(image, copy=True, order="C")
    style = _Style.for_frame(canvas.shape[1], canvas.shape[0])
    for name, points in zones:
        _draw_zone(canvas, name, points, style)
    for view in views:
        _draw_track(canvas, view, style)
    _draw_header(canvas, stream_label, fps, style)
    return canvas


@dataclass(frozen=True, slots=True)
class _Style:
    scale: float
    thickness: int
    pad: int

    @classmethod
    def for_frame(cls, width: int, height: int) -> _Style:
        short = min(width, height)
        scale = max(0.35, min(1.2, short / 720 * 0.6))
        return cls(scale=scale, thickness=max(1, round(short / 360)), pad=max(2, round(short / 240)))


def _draw_zone(canvas: np.ndarray, name: str, points: Sequence[tuple[float, float]], style: _Style) -> None:
    height, width = canvas.shape[:2]
    pixels = np.array([(x * (width - 1), y * (height - 1)) for x, y in points], np.float64)
    if len(pixels) < 3 or not np.all(np.isfinite(pixels)):
        return
    poly = np.round(pixels).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [poly], True, COLOR_ZONE, max(1, style.thickness // 2), cv2.LINE_AA)
    corner = min(range(len(pixels)), key=lambda i: (pixels[i][1], pixels[i][0]))  # the top-most, then left-most
    x, y = (round(v) for v in pixels[corner])
    (_, text_h), baseline = cv2.getTextSize(name, _FONT, style.scale * 0.8, 1)
    x = max(0, min(x + style.pad, width - 1))
    y = max(text_h + style.pad, min(y + text_h + style.pad, height - baseline - 1))
    cv2.putText(canvas, name, (x, y), _FONT, style.scale * 0.8, COLOR_ZONE, 1, cv2.LINE_AA)


def _draw_track(canvas: np.ndarray, view: TrackView, style: _Style) -> None:
    box = _clip_box(view.box, canvas.shape[1], canvas.shape[0])
    if box is None:
        return
    x1, y1, x2, y2 = box
    cv2.rectangle(canvas, (x1, y1), (x2, y2), view.color, style.thickness, cv2.LINE_8)
    _draw_label(canvas, view.label, (x1, y1, x2, y2), view.color, style)
    if view.quality is not None:
        _draw_quality_bar(canvas, view.quality, (x1, y1, x2, y2), style)


def _clip_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer box clipped to the frame, or None when nothing of it is inside."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if x2 < 0 or y2 < 0 or x1 > width - 1 or y1 > height - 1:
        return None
    cx1, cx2 = round(max(x1, 0.0)), round(min(x2, width - 1.0))
    cy1, cy2 = round(max(y1, 0.0)), round(min(y2, height - 1.0))
    return cx1, cy1, cx2, cy2


def _draw_label(canvas: np.ndarray, text: str, box: tuple[int, int, int, int], color: Color, style: _Style) -> None:
    height, width = canvas.shape[:2]
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, style.scale, style.thickness)
    tag_h = text_h + baseline + 2 * style.pad
    tag_w = text_w + 2 * style.pad
    x1, y1, _, y2 = box
    top = y1 - tag_h if y1 - tag_h >= 0 else min(y2 + 1, height - tag_h)
    top = max(0, top)
    left = max(0, min(x1, width - tag_w))
    cv2.rectangle(canvas, (left, top), (left + tag_w, top + tag_h), color, cv2.FILLED)
    ink = _TEXT_DARK if sum(color) > 380 else _TEXT_LIGHT
    origin = (left + style.pad, top + style.pad + text_h)
    cv2.putText(canvas, text, origin, _FONT, style.scale, ink, style.thickness, cv2.LINE_AA)


def _draw_quality_bar(canvas: np.ndarray, quality: float, box: tuple[int, int, int, int], style: _Style) -> None:
    height = canvas.shape[0]
    x1, _, x2, y2 = box
    q = min(1.0, max(0.0, quality))
    bar_h = max(3, 2 * style.pad)
    top = y2 + style.thickness + 1
    if top + bar_h > height - 1:  # no room below the box: draw just inside its bottom edge
        top = max(0, y2 - bar_h - style.thickness)
    length = max(1, round((x2 - x1) * q))
    cv2.rectangle(canvas, (x1, top), (x2, top + bar_h), (40, 40, 40), cv2.FILLED)
    cv2.rectangle(canvas, (x1, top), (x1 + length, top + bar_h), _quality_color(q), cv2.FILLED)


def _quality_color(q: float) -> Color:
    """Red at 0, yellow at 0.5, green at 1 (BGR)."""
    red = round(255 * min(1.0, 2.0 * (1.0 - q)))
    green = round(255 * min(1.0, 2.0 * q))
    return (0, green, red)


def _draw_header(canvas: np.ndarray, stream_label: str | None, fps: float | None, style: _Style) -> None:
    parts = []
    if stream_label:
        parts.append(mask_secrets(stream_label))
    if fps is not None and math.isfinite(fps):
        parts.append(f"{fps:.1f} fps")
    if not parts:
        return
    text = "  ".join(parts)
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, style.scale, style.thickness)
    right = min(canvas.shape[1] - 1, text_w + 2 * style.pad)
    bottom = min(canvas.shape[0] - 1, text_h + baseline + 2 * style.pad)
    cv2.rectangle(canvas, (0, 0), (right, bottom), (0, 0, 0), cv2.FILLED)
    origin = (style.pad, style.pad + text_h)
    cv2.putText(canvas, text, origin, _FONT, style.scale, _TEXT_LIGHT, style.thickness, cv2.LINE_AA)
