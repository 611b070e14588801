"""The built-in demo: clip shape and determinism, the scene plan, and that the real detector and
embedder find Eileen Collins (enrolled) and not Grace Hopper (unknown) in it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from stream import demo
from stream.config import AppConfig
from stream.demo import EILEEN, HOPPER, Placement, make_demo_clip, make_demo_gallery, prepare_demo, scene
from stream.faces.models import ModelOverrides, Models, build_embedder, model_choice
from stream.faces.still import crop_faces, embed_stack
from stream.identity.gallery import Gallery, enroll
from stream.identity.thresholds import default_threshold
from stream.types import FaceDetections
from tests.conftest import REPO
from tests.fakes import ShortClipMaker

FPS, SECONDS, SIZE = 25, 6.0, (960, 540)
SAMPLED = (0, 30, 60, 75, 95, 149)  # frame indices; Grace Hopper is in view in 60, 75 and 95


def _decode(path: Path) -> tuple[list[np.ndarray], av.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return frames, stream


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_clip(tmp_path_factory.mktemp("demo") / "clip.mp4")


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[np.ndarray]:
    return _decode(clip)[0]


@pytest.fixture(scope="module")
def models() -> Models:
    from stream.faces.detector import DetectorSettings, MtcnnDetector

    config = AppConfig().resolve_paths(REPO)
    args = ModelOverrides()
    embedder = build_embedder(model_choice(config, args), config.recognition.checkpoints_dir, device="cpu")
    return Models(MtcnnDetector(DetectorSettings(detect_width=640)), embedder, batch_size=8)


@pytest.fixture(scope="module")
def gallery(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    root = make_demo_gallery(tmp_path_factory.mktemp("demo_gallery"))
    return enroll(root, models, use_cache=False, progress=False)


# ------------------------------------------------------------------ clip and scene


@pytest.mark.slow
def test_clip_is_h264_with_the_asked_shape(clip: Path) -> None:
    frames, stream = _decode(clip)
    assert stream.codec_context.name == "h264"
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert stream.average_rate == FPS
    assert (stream.codec_context.width, stream.codec_context.height) == SIZE
    assert len(frames) == round(SECONDS * FPS)
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    assert clip.stat().st_size < 3_000_000


@pytest.mark.slow
def test_same_seed_same_clip_other_seed_other_background(clip: Path, frames: list[np.ndarray], tmp_path: Path) -> None:
    again = make_demo_clip(tmp_path / "again.mp4")
    other = make_demo_clip(tmp_path / "other.mp4", seconds=0.2, seed=1)
    frames_again = _decode(again)[0]
    assert np.array_equal(frames[0], frames_again[0])
    assert np.array_equal(frames[-1], frames_again[-1])
    assert _sha256(clip) == _sha256(again)
    assert np.abs(_decode(other)[0][0].astype(int) - frames[0]).mean() > 10


def test_scene_keeps_eileen_in_view_and_the_faces_apart() -> None:
    heights = []
    for index in range(round(SECONDS * FPS)):
        places = {p.person: p for p in scene(index / FPS, SECONDS, SIZE)}
        eileen = places[EILEEN]
        x1, y1, x2, y2 = eileen.face_box()
        assert x1 >= 0 and y1 >= 0 and x2 <= SIZE[0] and y2 <= SIZE[1], index
        heights.append(eileen.face_h)
        if HOPPER in places:
            assert _overlap(eileen, places[HOPPER]) == 0.0, index
    assert heights[0] == pytest.approx(90) and heights[-1] == pytest.approx(220, abs=1)
    present = [i for i in range(round(SECONDS * FPS)) if HOPPER in {p.person for p in scene(i / FPS)}]
    assert present[0] / FPS == pytest.approx(1.6, abs=0.05) and present[-1] / FPS == pytest.approx(4.6, abs=0.05)


def _overlap(a: Placement, b: Placement) -> float:
    ax1, ay1, ax2, ay2 = a.face_box()
    bx1, by1, bx2, by2 = b.face_box()
    return max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))


def test_prepare_demo_makes_once_and_remakes_when_outdated(tmp_path: Path) -> None:
    short_clip = ShortClipMaker(seconds=0.2)
    made = short_clip.made
    clip, gallery = prepare_demo(tmp_path / ".demo", make_clip=short_clip)
    assert clip == tmp_path / ".demo" / "demo_input.mp4" and clip.is_file()
    assert sorted(p.name for p in (gallery / EILEEN).iterdir()) == [f"0{i}.png" for i in range(1, 6)]
    assert [p.name for p in gallery.iterdir()] == [EILEEN]
    assert prepare_demo(tmp_path / ".demo", make_clip=short_clip) == (clip, gallery) and len(made) == 1
    (tmp_path / ".demo" / demo.MARKER_NAME).write_text("demo-0\n")
    (gallery / "stale").mkdir()
    prepare_demo(tmp_path / ".demo", make_clip=short_clip)
    assert len(made) == 2 and not (gallery / "stale").exists()
    assert not list((tmp_path / ".demo").glob(".*partial*"))


# ------------------------------------------------------------------ recognition on the demo


@pytest.mark.slow
def test_demo_gallery_enrolls_eileen_only(gallery: Gallery) -> None:
    assert gallery.names == (EILEEN,)
    assert len(gallery.people[0].images) >= 4, gallery.rejections
    assert gallery.rejections == ()


@pytest.mark.slow
def test_eileen_matches_and_hopper_does_not(frames: list[np.ndarray], models: Models, gallery: Gallery) -> None:
    threshold = default_threshold(models.embedder.model_id)
    template = gallery.person(EILEEN).template  # type: ignore[union-attr]
    images = [frames[i] for i in SAMPLED]
    cosines: dict[str, list[float]] = {EILEEN: [], HOPPER: []}
    for index, image, detections in zip(SAMPLED, images, models.detector.detect(images), strict=True):
        for place in scene(index / FPS, SECONDS, SIZE):
            row = _nearest(detections, place)
            assert row is not None, f"frame {index}: {place.person} not found near {place}"
            height = detections.boxes[row, 3] - detections.boxes[row, 1]
            assert height == pytest.approx(place.face_h, rel=0.25), (index, place.person)
            crop = crop_faces(image, detections, models.embedder).crops[row]
            vector = embed_stack(models.embedder, [crop])[0][0]
            cosines[place.person].append(float(vector @ template))
    print(f"threshold {threshold}: " + "; ".join(f"{k} {np.round(v, 3).tolist()}" for k, v in cosines.items()))
    assert len(cosines[EILEEN]) == len(SAMPLED) and len(cosines[HOPPER]) == 3
    assert min(cosines[EILEEN]) > threshold
    assert max(cosines[HOPPER]) < threshold


def _nearest(detections: FaceDetections, place: Placement) -> int | None:
    """The detection whose centre is closest to the planned face centre (within half a face)."""
    if len(detections) == 0:
        return None
    centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2
    distances = np.hypot(centres[:, 0] - place.cx, centres[:, 1] - place.cy)
    row = int(np.argmin(distances))
    return row if distances[row] < 0.5 * place.face_h else None
