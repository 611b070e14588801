"""`calibrate` (pairs CSV and gallery pairs, report, PNG) and `identify` (JSON per face)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.commands import calibrate, identify
from stream.commands.calibrate import gallery_scores, read_pairs, run_calibrate
from stream.commands.identify import JSON_KEYS, format_identities, load_gallery, run_identify
from stream.config import AppConfig
from stream.errors import UserError
from stream.faces.models import ModelOverrides, Models, build_models
from stream.identity.calibration import calibrate as calibrate_scores
from stream.identity.calibration import gallery_pair_scores
from stream.identity.gallery import Gallery
from stream.identity.thresholds import default_threshold, shipped_table, threshold_for
from tests.conftest import REPO, shared_file

DEEPFACE = "deepface/tests/unit/dataset"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def models() -> Models:
    args = ModelOverrides(device="cpu")
    return build_models(AppConfig().resolve_paths(REPO), args, stills=True)


@pytest.fixture(scope="module")
def deepface(shared_data: Path) -> Path:
    return shared_file(shared_data, DEEPFACE)


# ------------------------------------------------------------------ pure parts


def test_read_pairs_accepts_same_or_decision_and_resolves_paths(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jpg").write_bytes(b"x")
    (tmp_path / "same.csv").write_text(f"file_x,file_y,same\na.jpg,sub/d.jpg,1\n{tmp_path / 'b.jpg'},c.jpg,false\n")
    (tmp_path / "deep.csv").write_text(
        "file_x,file_y,Decision,Facenet_cosine\ndeepface/tests/dataset/a.jpg,b.jpg,Yes,0.1\n\nc.jpg,a.jpg, no ,0.9\n"
    )
    assert [(p.a.name, p.b.name, p.same) for p in read_pairs(tmp_path / "same.csv")] == [
        ("a.jpg", "d.jpg", True),
        ("b.jpg", "c.jpg", False),
    ]
    deep = read_pairs(tmp_path / "deep.csv")
    assert [(p.a, p.same) for p in deep] == [(tmp_path / "a.jpg", True), (tmp_path / "c.jpg", False)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file_x,file_y,same\na.jpg,nope.jpg,1\n", r"pairs.csv line 2: image nope.jpg not found"),
        ("file_x,file_y,same\na.jpg,a.jpg,maybe\n", "pairs.csv line 2: label 'maybe' is not yes/no"),
        ("file_x,same\na.jpg,1\n", "missing column file_y"),
        ("file_x,file_y,score\na.jpg,a.jpg,1\n", "missing label column"),
        ("file_x,file_y,same\n", "no pairs"),
        ("", "empty file"),
    ],
)
def test_bad_pairs_csv_is_a_user_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "pairs.csv").write_text(content)
    with pytest.raises(UserError, match=message):
        read_pairs(tmp_path / "pairs.csv")
    with pytest.raises(UserError, match="nothing.csv: file not found"):
        read_pairs(tmp_path / "nothing.csv")


def test_gallery_pairs_are_all_within_and_between_person_pairs() -> None:
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((c, 8)).astype(np.float32) for c in (3, 1, 2)]
    blocks = [b / np.linalg.norm(b, axis=1, keepdims=True) for b in blocks]
    scores, same = gallery_pair_scores(blocks)
    assert same.sum() == 3 + 0 + 1 and (~same).sum() == (36 - 9 - 1 - 4) // 2
    every = np.concatenate(blocks) @ np.concatenate(blocks).T
    np.testing.assert_allclose(np.sort(scores), np.sort(every[np.triu_indices(6, 1)]), atol=1e-6)
    sampled, sampled_same = gallery_pair_scores(blocks, max_impostor=5)
    assert (~sampled_same).sum() == 5 and sampled_same.sum() == 4 and np.abs(sampled).max() <= 1 + 1e-6


def test_calibration_on_separable_scores() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2])
    same = np.array([True] * 4 + [False] * 6)
    result = calibrate_scores(scores, same, target_far=0.2, current_threshold=0.65)
    assert result.stats.auc == 1.0 and result.stats.eer == 0.0
    # FAR 0.2 of 6 impostors lets one through: the threshold sits just above the second-highest (0.2)
    assert result.at_target.threshold == pytest.approx(0.2) and result.at_target.threshold > 0.2
    assert (result.at_target.far, result.at_target.frr, result.at_target.accuracy) == (1 / 6, 0.0, 0.9)
    assert result.at_current is not None and (result.at_current.far, result.at_current.frr) == (0.0, 0.25)
    assert not result.far_resolved  # 6 impostors expect 1.2 false accepts at FAR 0.2: fewer than 3
    assert result.false_accepts == 1 and result.far_ci[0] < 1 / 6 < result.far_ci[1]
    assert calibrate_scores(scores, same, target_far=0.5, current_threshold=0.5).far_resolved
    assert calibrate_scores(scores, same, target_far=0.5, current_threshold=None).at_current is None
    with pytest.raises(ValueError, match="target_far: must be in"):
        calibrate_scores(scores, same, target_far=0.0, current_threshold=0.5)


# ------------------------------------------------------------------ calibrate on real images

PAIRS = [
    ("img1.jpg", "img2.jpg", "Yes"),  # Angelina
    ("img3.jpg", "img12.jpg", "Yes"),  # Jennifer
    ("img8.jpg", "img9.jpg", "Yes"),  # Scarlett
    ("img1.jpg", "img3.jpg", "No"),
    ("img2.jpg", "img8.jpg", "No"),
    ("img12.jpg", "img9.jpg", "No"),
    ("img1.jpg", "blank.png", "No"),  # no face: skipped with its pair
]


def _pairs_csv(folder: Path, deepface: Path) -> Path:
    """A deepface-style CSV in ``folder`` whose paths only resolve by their bare file names."""
    for name in {n for a, b, _ in PAIRS for n in (a, b)} - {"blank.png"}:
        (folder / name).symlink_to(deepface / name)
    cv2.imwrite(str(folder / "blank.png"), np.full((120, 120, 3), 90, np.uint8))
    lines = ["file_x,file_y,Decision"] + [f"deepface/tests/dataset/{a},{b},{d}" for a, b, d in PAIRS]
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


@pytest.mark.slow
def test_calibrate_pairs_reports_and_plots(models: Models, deepface: Path, tmp_path: Path) -> None:
    plot = tmp_path / "hist.png"
    text, result = run_calibrate(models, pairs_csv=_pairs_csv(tmp_path, deepface), target_far=1e-3, plot_path=plot)
    assert result["genuine"] == 3 and result["impostor"] == 3
    assert result["images"] == 6 and result["images_without_face"] == ["blank.png"] and result["pairs_skipped"] == 1
    assert result["auc"] == 1.0 and result["eer"] == 0.0
    assert -1 <= result["eer_threshold"] <= 1 and result["at_target_far"]["far"] == 0.0
    assert result["at_current"]["threshold"] == default_threshold(models.embedder.model_id)
    assert not result["far_resolved"] and result["gallery_sizes"] == []  # 3 impostors: no score table
    json.dumps(result)
    for expected in ("ROC AUC: 1.00000", "EER: 0.00% at threshold", "threshold at FAR 0.001:", "current threshold:"):
        assert expected in text
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_calibrate_missing_image_names_the_file(models: Models, tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("file_x,file_y,same\nghost.jpg,ghost2.jpg,0\n")
    with pytest.raises(UserError, match=r"line 2: image ghost.jpg not found"):
        run_calibrate(models, pairs_csv=tmp_path / "pairs.csv")


@pytest.mark.slow
def test_calibrate_needs_exactly_one_source_and_a_sane_far(models: Models, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="exactly one of --identities CSV, --pairs CSV or --gallery DIR"):
        run_calibrate(models)
    with pytest.raises(UserError, match="--target-far: must be between 0 and 1"):
        run_calibrate(models, pairs_csv=tmp_path / "x.csv", target_far=1.5)


def test_parsers_take_the_documented_options() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    calibrate.add_parser(sub)
    identify.add_parser(sub)
    args = parser.parse_args(["calibrate", "--pairs", "p.csv", "--plot", "h.png", "--json"])
    assert (args.pairs, args.gallery, args.target_far) == (Path("p.csv"), None, 1e-3)
    assert (args.plot, args.json, args.identities, args.root, args.write_table) == (Path("h.png"), True, None, None, None)
    args = parser.parse_args(["calibrate", "--identities", "i.csv", "--root", "r", "--write-table", "t.json"])
    assert (args.identities, args.root, args.write_table, args.pairs) == (Path("i.csv"), Path("r"), Path("t.json"), None)
    with pytest.raises(SystemExit):
        parser.parse_args(["calibrate", "--pairs", "p.csv", "--gallery", "g"])
    args = parser.parse_args(["identify", "x.jpg", "--gallery", "g", "--json"])
    assert (args.image, args.gallery, args.json) == (Path("x.jpg"), Path("g"), True)


# ------------------------------------------------------------------ identify on a real image


GALLERY = {"angelina": ("img1.jpg", "img2.jpg"), "jennifer": ("img3.jpg", "img12.jpg")}


@pytest.fixture(scope="module")
def gallery_dir(deepface: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two people from deepface images, linked (not copied) into <tmp>/<person>/."""
    root = tmp_path_factory.mktemp("gallery")
    for person, images in GALLERY.items():
        (root / person).mkdir()
        for name in images:
            (root / person / name).symlink_to(deepface / name)
    return root


@pytest.fixture(scope="module")
def tiny_gallery(models: Models, gallery_dir: Path) -> Gallery:
    gallery = load_gallery(models, gallery_dir, use_cache=False)
    assert gallery.names == tuple(GALLERY) and all(len(p.vectors) == 2 for p in gallery.people)
    return gallery


@pytest.mark.slow
def test_identify_json_names_a_known_face(models: Models, tiny_gallery: Gallery, deepface: Path) -> None:
    faces = run_identify(models, tiny_gallery, deepface / "img4.jpg", threshold=None, min_margin=0.05)
    assert len(faces) >= 1
    decoded = json.loads(format_identities(faces, as_json=True))
    assert all(tuple(face) == JSON_KEYS for face in decoded)
    face = decoded[0]
    assert len(face["box"]) == 4 and all(isinstance(v, float) for v in face["box"])
    table = shipped_table(models.embedder.model_id)
    assert table is not None
    threshold = threshold_for(table, 1e-3 / 2).threshold  # a gallery of 2
    assert face["person"] == "angelina" and face["score"] >= threshold and face["margin"] >= 0.05
    assert "angelina (score" in format_identities(faces, as_json=False)


@pytest.mark.slow
def test_identify_stranger_is_null_and_per_image_works(models: Models, tiny_gallery: Gallery, deepface: Path) -> None:
    faces = run_identify(models, tiny_gallery, deepface / "img18.jpg", None, 0.05, per_image=True)  # Elon
    assert faces and faces[0]["person"] is None and faces[0]["score"] < 0.42
    assert json.loads(format_identities(faces, as_json=True))[0]["person"] is None


@pytest.mark.slow
def test_identify_unreadable_or_faceless_image(models: Models, tiny_gallery: Gallery, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg: not an image"):
        run_identify(models, tiny_gallery, broken, None, 0.05)
    with pytest.raises(UserError, match="missing.jpg: file not found"):
        run_identify(models, tiny_gallery, tmp_path / "missing.jpg", None, 0.05)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 120, 3), 90, np.uint8))
    assert run_identify(models, tiny_gallery, blank, None, 0.05) == []
    assert format_identities([], as_json=True) == "[]" and format_identities([], as_json=False) == "no faces found"


@pytest.mark.slow
def test_identify_refuses_a_gallery_of_another_model(models: Models, tiny_gallery: Gallery, deepface: Path) -> None:
    other = dataclasses.replace(tiny_gallery, model_id="adaface:ir_101:0")
    with pytest.raises(UserError, match="gallery was enrolled with adaface:ir_101:0"):
        run_identify(models, other, deepface / "img4.jpg", None, 0.05)


@pytest.mark.slow
def test_identify_enrolls_a_gallery_folder(models: Models, gallery_dir: Path, deepface: Path) -> None:
    faces = run_identify(models, gallery_dir, deepface / "img4.jpg", None, 0.05, use_cache=False)
    assert faces[0]["person"] == "angelina"
    with pytest.raises(UserError, match="gallery folder not found"):
        run_identify(models, gallery_dir / "nope", deepface / "img4.jpg", None, 0.05)


@pytest.mark.slow
def test_calibrate_on_the_gallery(models: Models, tiny_gallery: Gallery, gallery_dir: Path, tmp_path: Path) -> None:
    data = gallery_scores(models, tiny_gallery)
    assert data.images == 4 and int(data.same.sum()) == 2 and int((~data.same).sum()) == 4
    text, result = run_calibrate(models, gallery=gallery_dir, plot_path=tmp_path / "g.png", use_cache=False)
    assert (result["genuine"], result["impostor"], result["source"]) == (2, 4, str(gallery_dir))
    assert result["auc"] == 1.0 and "ROC AUC" in text and (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC
