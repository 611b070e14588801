"""The built-in demo: a short synthetic clip and a one-person gallery, made offline at run time.

``python run.py`` with no streams configured runs on these, so a fresh checkout shows the whole
pipeline with no camera, URL or download. Both are made from face photos that ship inside
installed packages:

- Eileen Collins: scikit-image's ``skimage.data.astronaut()`` (public domain, NASA);
- Grace Hopper: matplotlib's sample ``grace_hopper.jpg`` (public domain, US Navy).

Only Eileen Collins is enrolled, so the demo shows a known and an unknown person.

Timeline of the default clip (6 s, 25 fps, 960x540; see ``scene``): Eileen Collins is in view the
whole time, drifting right and walking towards the camera (face height 90 px → 220 px, eased, with
a slight head tilt); Grace Hopper slides in from the right edge (sprite from 1.6 s, face partly in
view from 1.92 s, wholly from 2.08 s), stands at the right (face height 120-140 px) and slides out
again (face wholly in view until 4.16 s, partly until 4.28 s, sprite gone at 4.6 s). Faces never
overlap.

Face heights are in the sense of an MTCNN box: the source photos' MTCNN boxes (measured once, and
fixed below so that making the demo needs no torch) are scaled to the wanted height.

Pure numpy/OpenCV; the mp4 (H.264, yuv420p) is written by the app's own ``VideoWriter``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.faces.images import read_bgr

__all__ = [
    "DEMO_VERSION",
    "EILEEN",
    "HOPPER",
    "Placement",
    "demo_faces",
    "make_demo_clip",
    "make_demo_gallery",
    "prepare_demo",
    "render_frames",
    "scene",
]

EILEEN = "eileen_collins"
HOPPER = "grace_hopper"

DEMO_VERSION = "demo-2"  # 2: encoded by VideoWriter (OpenCV BGR→I420)
"""Bump when the clip or gallery changes: ``prepare_demo`` then remakes them."""

CLIP_NAME = "demo_input.mp4"
GALLERY_NAME = "demo_gallery"
MARKER_NAME = "demo_version.txt"

_FEATHER = 0.12  # sprite mask edge softness, as a fraction of the sprite's shorter side
_GOP_S = 1.0  # a keyframe every second, so the clip seeks quickly
_CRF = 23


# ------------------------------------------------------------------ source faces


@dataclass(frozen=True, slots=True)
class _Source:
    """A head-and-shoulders crop of a source photo and its face's MTCNN box inside the photo.

    crop, face: (x1, y1, x2, y2) in source-photo pixels.
    """

    crop: tuple[int, int, int, int]
    face: tuple[float, float, float, float]

    def face_in_crop(self) -> tuple[float, float, float]:
        """(centre x, centre y, height) of the face, in crop pixels."""
        x1, y1, x2, y2 = self.face
        return (x1 + x2) / 2 - self.crop[0], (y1 + y2) / 2 - self.crop[1], y2 - y1


# MTCNN (default settings) on the source photos: astronaut 512x512, score 0.9996;
# grace_hopper 512x600, score 0.9996.
_SOURCES = {
    EILEEN: _Source(crop=(100, 5, 350, 310), face=(182.1, 60.2, 268.1, 175.2)),
    HOPPER: _Source(crop=(40, 10, 490, 520), face=(175.7, 110.9, 352.7, 334.5)),
}


def _photo(person: str) -> np.ndarray:
    """The whole source photo of ``person``, HxWx3 uint8 BGR."""
    if person == EILEEN:
        from skimage import data  # imported here: scikit-image is slow to import

        return np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    if person == HOPPER:
        from matplotlib import cbook

        return read_bgr(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    raise KeyError(f"no demo photo of {person!r}")


def demo_faces() -> dict[str, np.ndarray]:
    """Head-and-shoulders BGR crops of the two demo people, keyed by person."""
    faces = {}
    for person, source in _SOURCES.items():
        x1, y1, x2, y2 = source.crop
        faces[person] = np.ascontiguousarray(_photo(person)[y1:y2, x1:x2])
    return faces


# ------------------------------------------------------------------ the scene (pure)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one person's face is in a frame: centre (x, y) and height in pixels, tilt in degrees."""

    person: str
    cx: float
    cy: float
    face_h: float
    angle: float = 0.0

    def face_box(self) -> tuple[float, float, float, float]:
        """Approximate (x1, y1, x2, y2) of the face (MTCNN-like box, width ~0.75 x height)."""
        half_w, half_h = 0.375 * self.face_h, 0.5 * self.face_h
        return self.cx - half_w, self.cy - half_h, self.cx + half_w, self.cy + half_h


_HOPPER_IN = (1.6, 2.4)  # seconds: slides in from the right edge
_HOPPER_OUT = (3.8, 4.6)  # seconds: slides out again
_DEFAULT_SECONDS = 6.0


def scene(t: float, seconds: float = _DEFAULT_SECONDS, size: tuple[int, int] = (960, 540)) -> tuple[Placement, ...]:
    """Who is in view at time ``t`` seconds of a clip ``seconds`` long, back to front.

    The layout is planned on a 960x540 stage and scaled to ``size`` (width, height); Grace
    Hopper's times are scaled with ``seconds``. While she enters or leaves, her placement (the
    sprite is drawn) can lie partly or wholly outside the frame: check ``face_box`` against it.
    """
    u = min(max(t / seconds, 0.0), 1.0) if seconds > 0 else 0.0
    k = min(size[0] / 960, size[1] / 540)
    people = [_hopper(t * _DEFAULT_SECONDS / seconds if seconds > 0 else 0.0), _eileen(u, t)]
    return tuple(_scaled(p, k, size) for p in people if p is not None)


def _eileen(u: float, t: float) -> Placement:
    walk = _smoothstep(u)
    return Placement(
        EILEEN,
        cx=200 + 180 * walk + 25 * math.sin(2 * math.pi * u),
        cy=190 + 60 * walk,
        face_h=90 + 130 * walk,
        angle=4.0 * math.sin(2 * math.pi * t / 3.0),
    )


def _hopper(t: float) -> Placement | None:
    if not _HOPPER_IN[0] < t < _HOPPER_OUT[1]:
        return None
    offstage, stand = 1120.0, 760.0
    if t < _HOPPER_IN[1]:
        cx = offstage + (stand - offstage) * _smoothstep(_fraction(t, *_HOPPER_IN))
    elif t < _HOPPER_OUT[0]:
        cx = stand - 30 * _fraction(t, _HOPPER_IN[1], _HOPPER_OUT[0])
    else:
        cx = stand - 30 + (offstage - stand + 30) * _smoothstep(_fraction(t, *_HOPPER_OUT))
    bob = 6 * math.sin(2 * math.pi * t / 1.2)
    return Placement(HOPPER, cx=cx, cy=230 + bob, face_h=130 + 10 * math.sin(math.pi * t / 3.0), angle=-2.0)


def _scaled(p: Placement, k: float, size: tuple[int, int]) -> Placement:
    dx, dy = (size[0] - 960 * k) / 2, (size[1] - 540 * k) / 2
    return Placement(p.person, p.cx * k + dx, p.cy * k + dy, p.face_h * k, p.angle)


def _fraction(t: float, start: float, end: float) -> float:
    return min(max((t - start) / (end - start), 0.0), 1.0)


def _smoothstep(x: float) -> float:
    return x * x * (3 - 2 * x)


# ------------------------------------------------------------------ rendering


@dataclass(frozen=True, slots=True)
class _Sprite:
    """A crop with a soft elliptical alpha mask and its face centre/height in crop pixels."""

    image: np.ndarray  # HxWx3 float32 BGR
    alpha: np.ndarray  # HxW float32 in [0, 1]
    face: tuple[float, float, float]


def _sprites(largest_face_h: dict[str, float]) -> dict[str, _Sprite]:
    """Sprites pre-scaled (area-averaged) so that rendering never shrinks them by much."""
    sprites = {}
    for person, crop in demo_faces().items():
        fx, fy, fh = _SOURCES[person].face_in_crop()
        scale = min(1.0, largest_face_h[person] / fh)
        if scale < 1.0:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        sprites[person] = _Sprite(
            crop.astype(np.float32), _ellipse_mask(crop.shape[:2]), (fx * scale, fy * scale, fh * scale)
        )
    return sprites


def _ellipse_mask(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    mask = np.zeros((height, width), np.float32)
    feather = max(1, round(_FEATHER * min(height, width)))
    axes = (max(1, width // 2 - feather), max(1, height // 2 - feather // 2))
    cv2.ellipse(mask, (width // 2, height // 2 + feather // 2), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (0, 0), feather / 2)


def _background(size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth, deterministic room-like backdrop: gradients, a floor and soft shapes (uint8 BGR)."""
    width, height = size
    rng = np.random.default_rng(seed)
    top, bottom = rng.uniform(90, 200, 3), rng.uniform(40, 120, 3)
    v = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    h = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :, None]
    image = (top * (1 - v) + bottom * v + 18 * h).astype(np.float32)
    image = np.broadcast_to(image, (height, width, 3)).copy()
    floor = int(height * rng.uniform(0.72, 0.8))
    image[floor:] = image[floor:] * 0.7 + rng.uniform(30, 90, 3) * 0.3
    for _ in range(7):
        _draw_shape(image, rng, size)
    return cv2.convertScaleAbs(cv2.GaussianBlur(image, (0, 0), 2.0))


def _draw_shape(image: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> None:
    width, height = size
    colour = tuple(float(c) for c in rng.uniform(40, 230, 3))
    x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height * 0.75))
    if rng.random() < 0.5:
        w, h = int(rng.uniform(0.05, 0.2) * width), int(rng.uniform(0.1, 0.45) * height)
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, -1, cv2.LINE_AA)
    else:
        cv2.circle(image, (x, y), int(rng.uniform(0.02, 0.08) * width), colour, -1, cv2.LINE_AA)


def _composite(frame: np.ndarray, sprite: _Sprite, place: Placement) -> None:
    """Draw ``sprite`` onto the uint8 frame in place, its face at ``place`` (sub-pixel, tilted)."""
    fx, fy, fh = sprite.face
    matrix = cv2.getRotationMatrix2D((fx, fy), place.angle, place.face_h / fh)
    matrix[:, 2] += np.array([place.cx - fx, place.cy - fy])
    roi = _covered(matrix, sprite.alpha.shape, frame.shape[:2])
    if roi is None:
        return
    x1, y1, x2, y2 = roi
    matrix[:, 2] -= (x1, y1)  # warp only the part of the frame the sprite covers
    dsize = (x2 - x1, y2 - y1)
    colour = cv2.warpAffine(sprite.image, matrix, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(sprite.alpha, matrix, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = alpha[:, :, None]
    region = frame[y1:y2, x1:x2]
    blended = region.astype(np.float32) * (1.0 - alpha) + colour * alpha
    region[:] = cv2.convertScaleAbs(blended)  # rounds and saturates to uint8


def _covered(
    matrix: np.ndarray, sprite_shape: tuple[int, ...], frame_shape: tuple[int, ...]
) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of the frame pixels the warped sprite can touch, or None when off-frame."""
    height, width = sprite_shape[:2]
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64)
    xy = corners @ matrix.T
    x1, y1 = np.floor(xy.min(axis=0)).astype(int) - 1
    x2, y2 = np.ceil(xy.max(axis=0)).astype(int) + 2
    x1, y1 = max(int(x1), 0), max(int(y1), 0)
    x2, y2 = min(int(x2), frame_shape[1]), min(int(y2), frame_shape[0])
    return (x1, y1, x2, y2) if x1 < x2 and y1 < y2 else None


def _frames(seconds: float, fps: int, size: tuple[int, int], seed: int) -> Iterator[np.ndarray]:
    """The clip's frames, HxWx3 uint8 BGR."""
    count = round(seconds * fps)
    yield from render_frames([scene(i / fps, seconds, size) for i in range(count)], size, seed)


def render_frames(
    placements: Sequence[Sequence[Placement]], size: tuple[int, int] = (960, 540), seed: int = 0
) -> Iterator[np.ndarray]:
    """Frames (HxWx3 uint8 BGR, ``size`` = width, height) of the demo people placed as given, one
    sequence of placements per frame, drawn back to front over the demo backdrop of ``seed``.

    For other scenes than ``scene``'s, e.g. one face passing behind another (tests, benchmarks).
    """
    largest = {EILEEN: 0.0, HOPPER: 0.0}
    for frame_places in placements:
        for place in frame_places:
            largest[place.person] = max(largest[place.person], place.face_h)
    sprites = _sprites({person: height or 1.0 for person, height in largest.items()})
    backdrop = _background(size, seed)
    for frame_places in placements:
        frame = backdrop.copy()
        for place in frame_places:
            _composite(frame, sprites[place.person], place)
        yield frame


def make_demo_clip(
    path: Path, seconds: float = _DEFAULT_SECONDS, fps: int = 25, size: tuple[int, int] = (960, 540), seed: int = 0
) -> Path:
    """Write the demo scene to ``path`` as an H.264 (yuv420p) mp4; same arguments, same frames."""
    width, height = size
    if seconds <= 0 or fps < 1 or width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"make_demo_clip: bad clip shape seconds={seconds} fps={fps} size={size} (even sizes >= 16)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _encode_h264(path, _frames(seconds, fps, size, seed), fps, size)
    return path


def _encode_h264(path: Path, frames: Iterator[np.ndarray], fps: int, size: tuple[int, int]) -> None:
    from stream.outputs.video import VideoSettings, VideoWriter  # PyAV: loaded only to make the clip

    settings = VideoSettings(crf=_CRF, preset="veryfast", keyframe_interval_s=_GOP_S)
    with VideoWriter(path, fps, size[0], size[1], settings) as writer:
        for image in frames:
            writer.write(image)


# ------------------------------------------------------------------ gallery


@dataclass(frozen=True, slots=True)
class _Variant:
    """One gallery photo: face height (px), tilt (deg), horizontal shift (px), contrast, brightness."""

    face_h: float
    angle: float
    shift: float
    contrast: float
    brightness: float


_GALLERY_SIZE = (360, 440)  # width, height of each gallery photo
_VARIANTS = (
    _Variant(face_h=150, angle=0.0, shift=0, contrast=1.0, brightness=0),
    _Variant(face_h=175, angle=-4.0, shift=-20, contrast=1.08, brightness=-12),
    _Variant(face_h=200, angle=3.0, shift=15, contrast=0.92, brightness=14),
    _Variant(face_h=160, angle=5.0, shift=25, contrast=1.05, brightness=8),
    _Variant(face_h=185, angle=-2.0, shift=-10, contrast=0.95, brightness=-6),
)


def make_demo_gallery(root: Path) -> Path:
    """Write ``root/eileen_collins/01.png`` … (varied views of the astronaut photo); returns ``root``."""
    root = Path(root)
    folder = root / EILEEN
    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo(EILEEN)
    for number, variant in enumerate(_VARIANTS, start=1):
        out = folder / f"{number:02d}.png"
        if not cv2.imwrite(str(out), _gallery_photo(photo, _SOURCES[EILEEN], variant)):
            raise OSError(f"{out}: cannot write the demo gallery photo")
    return root


def _gallery_photo(photo: np.ndarray, source: _Source, variant: _Variant) -> np.ndarray:
    x1, y1, x2, y2 = source.face
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    width, height = _GALLERY_SIZE
    matrix = cv2.getRotationMatrix2D((cx, cy), variant.angle, variant.face_h / (y2 - y1))
    matrix[:, 2] += np.array([width / 2 + variant.shift - cx, height * 0.4 - cy])
    view = cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    return cv2.convertScaleAbs(view, alpha=variant.contrast, beta=variant.brightness)


# ------------------------------------------------------------------ prepare


def prepare_demo(workdir: Path, *, make_clip: Callable[[Path], Path] | None = None) -> tuple[Path, Path]:
    """The demo clip and gallery under ``workdir``, made when missing or from another version.

    ``make_clip(path)`` writes the clip (default ``make_demo_clip``; tests pass a shorter one).
    """
    make_clip = make_clip if make_clip is not None else make_demo_clip
    workdir = Path(workdir)
    clip, gallery, marker = workdir / CLIP_NAME, workdir / GALLERY_NAME, workdir / MARKER_NAME
    if _current(marker) and clip.is_file() and (gallery / EILEEN).is_dir():
        return clip, gallery
    workdir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    shutil.rmtree(gallery, ignore_errors=True)  # our own folder: old photos and their cache go
    partial = clip.with_name(f".{clip.stem}.partial{clip.suffix}")
    make_clip(partial)
    partial.replace(clip)
    make_demo_gallery(gallery)
    marker.write_text(DEMO_VERSION + "\n", encoding="utf-8")  # last: only a complete demo is current
    return clip, gallery


def _current(marker: Path) -> bool:
    try:
        return marker.read_text(encoding="utf-8").strip() == DEMO_VERSION
    except OSError:
        return False
