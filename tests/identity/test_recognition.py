"""Recognition core end to end: model choice, `embed` and `verify`, accuracy on real pairs."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stream.cli import main
from stream.commands.embed import CSV_COLUMNS, run_embed
from stream.config import AppConfig
from stream.faces.embedder import ModelUnavailableError
from stream.faces.images import ImageReadError, read_bgr
from stream.faces.models import ModelOverrides, Models, build_models, choose_model
from stream.faces.still import crop_faces, largest_face
from stream.identity.calibration import accuracy_at, roc_auc
from stream.identity.thresholds import default_threshold
from tests.conftest import REPO, shared_file

DEEPFACE = "deepface/tests/unit/dataset"


def _args() -> ModelOverrides:
    return ModelOverrides(device="cpu")


@pytest.fixture(scope="module")
def models() -> Models:
    config = AppConfig().resolve_paths(REPO)
    return build_models(config, _args(), stills=True)


# ------------------------------------------------------------------ model choice


def test_missing_adaface_falls_back_to_facenet_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        choice = choose_model("auto", "ir_101", tmp_path / "missing.ckpt")
    assert choice.family == "facenet"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gdown" in warnings[0].getMessage()


def test_strict_model_or_explicit_adaface_refuses_to_fall_back(tmp_path: Path) -> None:
    for kwargs in ({"model": "auto", "strict": True}, {"model": "adaface"}):
        with pytest.raises(ModelUnavailableError, match="missing.ckpt not found; get one with: gdown"):
            choose_model(kwargs.pop("model"), "ir_101", tmp_path / "missing.ckpt", **kwargs)  # type: ignore[arg-type]


def test_existing_checkpoint_selects_adaface(tmp_path: Path) -> None:
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"x")
    assert choose_model("auto", "ir_50", ckpt).family == "adaface"
    assert choose_model("facenet", "ir_50", ckpt).family == "facenet"


def test_cli_strict_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    code = main(["verify", str(img), str(img), "--strict-model", "--checkpoint", str(tmp_path / "none.ckpt")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: AdaFace checkpoint") and "none.ckpt not found" in err[-1]


@pytest.mark.slow
def test_wrong_arch_checkpoint_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from stream.faces.adaface import build_backbone

    ckpt = tmp_path / "ir18.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in build_backbone("ir_18").state_dict().items()}}, ckpt)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    assert main(["verify", str(img), str(img), "--checkpoint", str(ckpt), "--arch", "ir_50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ir_50" in err and "ir_18" in err and "Traceback" not in err


# ------------------------------------------------------------------ image reading


@pytest.fixture(scope="module")
def face_rgb(shared_data: Path) -> np.ndarray:
    return np.asarray(Image.open(shared_file(shared_data, f"{DEEPFACE}/img5.jpg")).convert("RGB"))


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P"])
def test_read_bgr_converts_every_mode(tmp_path: Path, face_rgb: np.ndarray, mode: str) -> None:
    img = Image.fromarray(face_rgb)
    if mode == "I;16":
        grey = np.asarray(img.convert("L")).astype(np.uint16) * 257
        img = Image.fromarray(grey)  # uint16 → mode I;16
    elif mode == "P":
        img = img.quantize(256)  # an adaptive palette; convert("P") would dither to the web palette
    else:
        img = img.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    out = read_bgr(path)
    assert out.dtype == np.uint8 and out.shape == (*face_rgb.shape[:2], 3)
    reference = face_rgb[:, :, ::-1].astype(int)
    if mode in ("L", "I;16"):
        reference = np.repeat(np.asarray(Image.fromarray(face_rgb).convert("L"))[:, :, None], 3, axis=2)
    assert np.abs(out.astype(int) - reference).mean() < 12


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not an image"), (b"hello, not a picture", "not an image"), (b"\xff\xd8\xff\xe0" + b"\0" * 50, "")],
)
def test_read_bgr_rejects_non_images_with_the_file_name(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"fake.jpg: {message}"):
        read_bgr(path)


# ------------------------------------------------------------------ embed


@pytest.mark.slow
def test_embed_deepface_folder(models: Models, shared_data: Path, tmp_path: Path) -> None:
    folder = shared_file(shared_data, DEEPFACE)
    summary = run_embed(models, folder, tmp_path, recursive=False)
    vectors = np.load(tmp_path / "embeddings.npy")
    rows = list(csv.DictReader((tmp_path / "faces.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert vectors.dtype == np.float32 and vectors.shape == (len(rows), 512) == (summary.faces, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    aligned = sorted((tmp_path / "aligned").glob("*.png"))
    assert len(aligned) == len(rows) and all((tmp_path / r["aligned_path"]).exists() for r in rows)
    assert cv2.imread(str(aligned[0])).shape == (112, 112, 3)
    selfie = [r for r in rows if r["image"] == "selfie-many-people.jpg"]
    assert len(selfie) >= 5
    assert summary.images >= 62 and {name for name, _ in summary.skipped} >= {"master.csv"}
    assert all(float(r["norm"]) > 0 for r in rows)


@pytest.mark.slow
def test_embed_skips_bad_files_and_counts_faceless_images(models: Models, face_rgb: np.ndarray, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(face_rgb).save(src / "face.jpg")
    Image.fromarray(face_rgb).convert("RGBA").save(src / "sub" / "face_rgba.png")
    Image.fromarray(np.full((80, 80, 3), 127, np.uint8)).save(src / "blank.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    (src / "notes.txt").write_text("hello")
    summary = run_embed(models, src, tmp_path / "out", recursive=True)
    assert summary.images == 3 and summary.faces == 2
    assert summary.without_faces == ["blank.png"]
    assert {name for name, _ in summary.skipped} == {"broken.jpg", "notes.txt"}
    rows = list(csv.DictReader((tmp_path / "out" / "faces.csv").open()))
    assert sorted(r["aligned_path"] for r in rows) == ["aligned/face_0.png", "aligned/sub__face_rgba_0.png"]


@pytest.mark.slow
def test_embed_cli_bad_input_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", "--input-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------ verify


def _pairs(folder: Path) -> list[tuple[str, str, bool]]:
    pairs = [(r["file_x"], r["file_y"], r["Decision"] == "Yes") for r in csv.DictReader((folder / "master.csv").open())]
    pivot = csv.DictReader((folder / "face-recognition-pivot.csv").open())
    pairs += [(Path(r["file_x"]).name, Path(r["file_y"]).name, r["decision"] == "Yes") for r in pivot]
    return pairs


@pytest.mark.slow
def test_verification_accuracy_on_deepface_pairs(models: Models, shared_data: Path) -> None:
    folder = shared_file(shared_data, DEEPFACE)
    pairs = _pairs(folder)
    names = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    crops = []
    for name in names:
        image = read_bgr(folder / name)
        detections = models.detector.detect_one(image)
        k = largest_face(detections)
        assert k is not None, name
        crops.append(crop_faces(image, detections.select([k]), models.embedder).crops[0])
    vectors, _ = models.embedder.embed(np.stack(crops))
    index = {n: i for i, n in enumerate(names)}
    scores = np.array([vectors[index[a]] @ vectors[index[b]] for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    threshold = default_threshold(models.embedder.model_id)
    assert len(pairs) == 580
    assert roc_auc(scores, same) >= 0.995
    assert accuracy_at(scores, same, threshold) >= 0.98


@pytest.mark.slow
def test_verify_cli_json(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_file(shared_data, "adaface/face_alignment/test_images")
    assert main(["verify", str(folder / "img1.jpeg"), str(folder / "img2.jpeg"), "--json", "--device", "cpu"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert set(same) == {"cosine", "threshold", "same", "model_id"}
    assert same["same"] is True and same["model_id"].startswith("facenet:")
    assert main(["verify", str(folder / "img1.jpeg"), str(folder / "img3.jpeg"), "--json"]) == 0
    different = json.loads(capsys.readouterr().out)
    assert different["same"] is False and different["cosine"] < same["cosine"]


@pytest.mark.slow
def test_verify_without_face_is_a_clear_error(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 120, 3), 90, np.uint8))
    face = shared_file(shared_data, f"{DEEPFACE}/img5.jpg")
    assert main(["verify", str(face), str(blank)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {blank}: no face found"
