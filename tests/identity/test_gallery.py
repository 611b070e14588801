"""Gallery enrollment: quality gates, rejections with reasons, the per-model cache, `enroll` output."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.commands.enroll import run_enroll
from stream.config import AppConfig
from stream.errors import UserError
from stream.faces.images import read_bgr
from stream.faces.models import ModelOverrides, Models, build_models
from stream.faces.still import crop_faces, largest_face
from stream.identity.cache import cache_path
from stream.identity.gallery import Gallery, enroll
from stream.identity.quality import (
    EnrollGates,
    blur_score,
    find_outliers,
    gate_image,
    outlier_threshold,
)
from stream.identity.templates import fuse
from stream.identity.thresholds import default_threshold
from stream.types import FaceDetections
from tests.conftest import REPO, shared_file
from tests.fakes import CountingDetector, CountingEmbedder, RecordingLogHandler

KNN = "face_recognition/examples/knn_examples"
INSIGHT = "insightface/cpp-package/inspireface/test_res/data"
DEEPFACE = "deepface/tests/unit/dataset"


@pytest.fixture(scope="module")
def models() -> Models:
    args = ModelOverrides(device="cpu")
    return build_models(AppConfig().resolve_paths(REPO), args, stills=True)


def _copy(shared: Path, relative: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared_file(shared, relative), dest)
    return dest


def _write(dest: Path, image: np.ndarray) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(dest), image)


def _build_mixed_gallery(shared: Path, root: Path) -> None:
    """obama: 3 good photos and every kind of bad file; biden: 2 photos and one of obama; empty."""
    for name in ("obama.jpg", "obama2.jpg"):
        _copy(shared, f"{KNN}/train/obama/{name}", root / "obama" / name)
    _copy(shared, f"{KNN}/test/obama1.jpg", root / "obama" / "obama1.jpg")
    _copy(shared, "face_recognition/examples/two_people.jpg", root / "obama" / "two_faces.jpg")
    _copy(shared, f"{INSIGHT}/bulk/view.jpg", root / "obama" / "view.jpg")
    _copy(shared, f"{INSIGHT}/crop/no_face.png", root / "obama" / "no_face.png")
    obama2 = read_bgr(shared / KNN / "train/obama/obama2.jpg")
    small = cv2.resize(obama2, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)  # face ~27 px
    canvas = np.full((400, 400, 3), 127, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    _write(root / "obama" / "tiny.png", canvas)
    _write(
        root / "obama" / "blurred.png", cv2.GaussianBlur(read_bgr(shared / KNN / "train/obama/obama.jpg"), (0, 0), 4)
    )
    (root / "obama" / "notes.txt").write_text("taken in 2012\n")
    data = (shared / KNN / "train/obama/obama2.jpg").read_bytes()
    (root / "obama" / "broken.jpg").write_bytes(data[: len(data) // 3])
    (root / "obama" / "fake.jpg").write_bytes(b"this is not a jpeg\n")
    for name in ("biden.jpg", "biden2.jpg"):
        _copy(shared, f"{KNN}/train/biden/{name}", root / "biden" / name)
    _copy(shared, f"{KNN}/test/obama1.jpg", root / "biden" / "not_biden.jpg")
    (root / "empty").mkdir()
    (root / "empty" / ".DS_Store").write_bytes(b"\0")
    _copy(shared, f"{KNN}/train/biden/biden.jpg", root / "stray.jpg")


@pytest.fixture(scope="module")
def mixed(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, models: Models
) -> tuple[Path, Gallery, list[str]]:
    root = tmp_path_factory.mktemp("mixed") / "gallery"
    _build_mixed_gallery(shared_data, root)
    handler = RecordingLogHandler()
    logger = logging.getLogger("stream.identity")
    logger.addHandler(handler)
    try:
        gallery = enroll(root, models, progress=False)
    finally:
        logger.removeHandler(handler)
    return root, gallery, handler.messages


def _reasons(gallery: Gallery) -> dict[str, str]:
    return {r.file: r.reason for r in gallery.rejections}


# ------------------------------------------------------------------ (a), (b) rejections on real photos


@pytest.mark.slow
def test_bad_photos_are_rejected_with_reasons_and_good_ones_enrolled(mixed: tuple[Path, Gallery, list[str]]) -> None:
    _, gallery, _ = mixed
    reasons = _reasons(gallery)
    assert reasons["obama/two_faces.jpg"] == "two faces of similar size"
    assert reasons["obama/view.jpg"] == "no face"
    assert reasons["obama/no_face.png"] == "no face"
    assert reasons["obama/tiny.png"].startswith("face too small (")
    assert int(reasons["obama/tiny.png"].split("(")[1].split()[0]) < EnrollGates().min_face_px
    assert reasons["obama/blurred.png"].startswith("too blurry (score ")
    obama = gallery.person("obama")
    assert obama is not None
    assert obama.images == ("obama/obama.jpg", "obama/obama1.jpg", "obama/obama2.jpg")


@pytest.mark.slow
def test_unreadable_files_are_rejected_without_stopping_the_others(mixed: tuple[Path, Gallery, list[str]]) -> None:
    _, gallery, _ = mixed
    reasons = _reasons(gallery)
    assert reasons["obama/notes.txt"] == "not an image file (.txt)"
    assert reasons["obama/broken.jpg"].startswith("cannot decode image (")
    assert reasons["obama/fake.jpg"] == "not an image (or an unsupported format)"
    assert all(r.person == r.file.split("/")[0] for r in gallery.rejections)


@pytest.mark.slow
def test_a_photo_of_someone_else_is_an_outlier(mixed: tuple[Path, Gallery, list[str]]) -> None:
    _, gallery, _ = mixed
    assert _reasons(gallery)["biden/not_biden.jpg"].startswith("outlier (cosine ")
    biden = gallery.person("biden")
    assert biden is not None and biden.images == ("biden/biden.jpg", "biden/biden2.jpg")


@pytest.mark.slow
def test_empty_person_root_files_and_hidden_folders(mixed: tuple[Path, Gallery, list[str]]) -> None:
    root, gallery, messages = mixed
    assert gallery.names == ("biden", "obama")
    assert [(r.file, r.reason) for r in gallery.rejections if r.person == "empty"] == [("empty", "no images")]
    assert any("stray.jpg" in m and "ignored" in m for m in messages)
    assert (root / ".cache").is_dir() and ".cache" not in {r.person for r in gallery.rejections}


# ------------------------------------------------------------------ (d) templates


@pytest.mark.slow
def test_template_is_the_norm_weighted_fusion_of_the_kept_photos(
    mixed: tuple[Path, Gallery, list[str]], models: Models
) -> None:
    root, gallery, _ = mixed
    for person in gallery.people:
        np.testing.assert_allclose(person.template, fuse(person.vectors, person.norms), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(person.vectors, axis=1), 1.0, atol=1e-5)
        assert person.quality == pytest.approx(float(person.norms.mean()))
    assert gallery.templates.shape == (2, gallery.people[0].template.shape[0])
    assert gallery.templates.dtype == np.float32
    # a batched row belongs to its own photo: obama2.jpg embedded on its own gives the same vector
    image = read_bgr(root / "obama" / "obama2.jpg")
    detections = models.detector.detect_one(image)
    crop = crop_faces(image, detections.select([largest_face(detections)]), models.embedder).crops[0]
    alone, _ = models.embedder.embed(crop[None])
    obama = gallery.person("obama")
    assert obama is not None
    assert float(alone[0] @ obama.vectors[obama.images.index("obama/obama2.jpg")]) > 0.9999


# ------------------------------------------------------------------ (c) cache


def _spied(models: Models) -> tuple[Models, CountingDetector, CountingEmbedder]:
    detector, embedder = CountingDetector(models.detector), CountingEmbedder(models.embedder)
    return dataclasses.replace(models, detector=detector, embedder=embedder, batch_size=2), detector, embedder


def _reset(*spies: CountingDetector | CountingEmbedder) -> None:
    for spy in spies:
        spy.reset()


@pytest.mark.slow
def test_cache_redoes_only_new_or_changed_photos(
    tmp_path: Path, shared_data: Path, models: Models, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "gallery"
    for person, numbers in (("A", (5, 10)), ("C", (50, 51))):
        for n in numbers:
            _copy(shared_data, f"{DEEPFACE}/img{n}.jpg", root / person / f"img{n}.jpg")
    spied, detector, embedder = _spied(models)

    first = enroll(root, spied, progress=False)
    assert (detector.images, embedder.calls, embedder.crops) == (4, 2, 4)  # batches of 2 across photos
    assert cache_path(root, models.embedder.model_id).is_file()

    _reset(detector, embedder)
    second = enroll(root, spied, progress=False)
    assert (detector.images, embedder.calls) == (0, 0)
    np.testing.assert_array_equal(first.templates, second.templates)

    _reset(detector, embedder)
    path = root / "A" / "img5.jpg"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    changed = root / "C" / "img50.jpg"
    assert cv2.imwrite(str(changed), read_bgr(changed), [cv2.IMWRITE_JPEG_QUALITY, 80])
    enroll(root, spied, progress=False)
    assert (detector.images, embedder.crops) == (2, 2)

    _reset(detector, embedder)
    (root / "C" / "img51.jpg").unlink()
    after_delete = enroll(root, spied, progress=False)
    assert (detector.images, embedder.calls) == (0, 0)
    person_c = after_delete.person("C")
    assert person_c is not None and person_c.images == ("C/img50.jpg",)
    assert "C/img51.jpg" not in _cached_files(root, models)

    shutil.rmtree(root / "C")
    after_person = enroll(root, spied, progress=False)
    assert after_person.names == ("A",)
    assert all(not f.startswith("C/") for f in _cached_files(root, models))

    _reset(detector, embedder)
    cache = cache_path(root, models.embedder.model_id)
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="stream.identity"):
        rebuilt = enroll(root, spied, progress=False)
    assert any("corrupt" in r.getMessage() and str(cache) in r.getMessage() for r in caplog.records)
    assert (detector.images, embedder.crops) == (2, 2)
    np.testing.assert_allclose(rebuilt.templates, after_person.templates, atol=1e-6)
    assert set(_cached_files(root, models)) == {"A/img5.jpg", "A/img10.jpg"}
    assert not list(cache.parent.glob("*.tmp"))


def _cached_files(root: Path, models: Models) -> list[str]:
    with np.load(cache_path(root, models.embedder.model_id), allow_pickle=False) as data:
        return [str(f) for f in data["files"]]


@pytest.mark.slow
def test_gates_apply_to_cached_records_without_re_embedding(
    mixed: tuple[Path, Gallery, list[str]], models: Models
) -> None:
    root, _, _ = mixed
    spied, detector, embedder = _spied(models)
    strict = enroll(root, spied, EnrollGates(min_face_px=2000), progress=False)
    assert (detector.images, embedder.calls) == (0, 0)
    assert strict.people == ()
    assert _reasons(strict)["obama/obama2.jpg"].startswith("face too small (")


# ------------------------------------------------------------------ (e) the enroll command


@pytest.mark.slow
def test_enroll_command_json_and_table(mixed: tuple[Path, Gallery, list[str]], models: Models) -> None:
    root, gallery, _ = mixed
    text, code = run_enroll(models, root, as_json=True)
    assert code == 0
    report = json.loads(text)
    assert set(report) == {"model_id", "people", "rejections_total"}
    assert report["model_id"] == models.embedder.model_id
    assert [p["person"] for p in report["people"]] == ["biden", "empty", "obama"]
    assert all(set(p) == {"person", "used", "rejected", "quality"} for p in report["people"])
    obama = next(p for p in report["people"] if p["person"] == "obama")
    assert obama["used"] == 3 and obama["quality"] > 0
    assert {"file": "obama/view.jpg", "reason": "no face"} in obama["rejected"]
    assert next(p for p in report["people"] if p["person"] == "empty")["quality"] is None
    assert report["rejections_total"] == len(gallery.rejections)

    table, code = run_enroll(models, root, as_json=False)
    assert code == 0
    assert "obama/blurred.png: too blurry (score" in table
    assert "2 of 3 people enrolled" in table


@pytest.mark.slow
def test_enroll_command_exits_2_without_a_gallery_or_anybody_enrolled(tmp_path: Path, models: Models) -> None:
    with pytest.raises(UserError, match="gallery folder not found"):
        run_enroll(models, tmp_path / "missing", as_json=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no person folders"):
        run_enroll(models, tmp_path / "empty", as_json=False)
    (tmp_path / "bad" / "alice").mkdir(parents=True)
    (tmp_path / "bad" / "alice" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(UserError, match=r"no person could be enrolled \(alice/a.jpg: not an image"):
        run_enroll(models, tmp_path / "bad", as_json=True)


# ------------------------------------------------------------------ pure gates


def _detections(boxes: list[list[float]], scores: list[float]) -> FaceDetections:
    b = np.array(boxes, np.float32)
    landmarks = np.repeat(((b[:, :2] + b[:, 2:]) / 2)[:, None, :], 5, axis=1).astype(np.float32)
    return FaceDetections(boxes=b, scores=np.array(scores, np.float32), landmarks=landmarks)


def _sharp_crop() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)


def test_gate_image_reasons_in_order() -> None:
    gates = EnrollGates()
    sharp, flat = _sharp_crop(), np.full((112, 112, 3), 128, np.uint8)
    one = _detections([[0, 0, 100, 100]], [0.999])
    assert gate_image(FaceDetections.empty(), np.zeros((0, 112, 112, 3), np.uint8), gates) == (None, "no face")
    assert gate_image(one, sharp[None], gates) == (0, None)
    two = _detections([[0, 0, 80, 80], [100, 0, 200, 100]], [0.999, 0.999])
    assert gate_image(two, np.stack([sharp, sharp]), gates) == (None, "two faces of similar size")
    background = _detections([[0, 0, 50, 50], [100, 0, 200, 100]], [0.999, 0.999])
    assert gate_image(background, np.stack([flat, sharp]), gates) == (1, None)
    small = _detections([[0, 0, 30, 35]], [0.999])
    assert gate_image(small, sharp[None], gates) == (None, "face too small (30 px)")
    doubtful = _detections([[0, 0, 100, 100]], [0.949])
    assert gate_image(doubtful, sharp[None], gates) == (None, "low detection score (0.94)")
    assert gate_image(one, flat[None], gates) == (None, "too blurry (score 0)")


def test_blur_score_drops_with_blur() -> None:
    sharp = _sharp_crop()
    assert blur_score(sharp) > 10 * blur_score(cv2.GaussianBlur(sharp, (0, 0), 2))
    with pytest.raises(ValueError, match="blur_score"):
        blur_score(np.zeros((112, 112), np.uint8))


def test_gates_validate_and_outlier_threshold_follows_the_model() -> None:
    with pytest.raises(ValueError, match="EnrollGates.min_det_score"):
        EnrollGates(min_det_score=1.5)
    facenet = "facenet:casia-webface:abc"  # its score table's threshold at per-pair FAR 1e-3
    assert outlier_threshold(EnrollGates(), facenet) == default_threshold(facenet) > 0.42
    assert outlier_threshold(EnrollGates(), "adaface:ir_101:abc") == pytest.approx(0.3)
    assert outlier_threshold(EnrollGates(outlier_cos=0.5), "adaface:ir_101:abc") == 0.5


def test_find_outliers_removes_the_worst_one_at_a_time() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=64)
    same = [base + 0.3 * rng.normal(size=64) for _ in range(3)]
    others = [rng.normal(size=64) for _ in range(2)]
    vectors = np.array([v / np.linalg.norm(v) for v in [*same, *others]], np.float32)
    norms = np.ones(len(vectors), np.float32)
    removed = [row for row, _ in find_outliers(vectors, norms, threshold=0.5)]
    assert sorted(removed) == [3, 4]
    assert find_outliers(vectors[:2], norms[:2], threshold=0.99) == []  # under 3 photos: no check
