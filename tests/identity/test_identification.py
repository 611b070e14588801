"""Open-set identification on the deepface identities (MANIFEST.md clusters), through real enrollment,
with exact search and with each FAISS search forced on (the results must not change)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream.cli import main
from stream.config import AppConfig
from stream.faces.images import read_bgr
from stream.faces.models import ModelOverrides, Models, build_models
from stream.faces.still import crop_faces, largest_face
from stream.identity.ann import IndexSettings
from stream.identity.gallery import Gallery, enroll
from stream.identity.matcher import Matcher
from stream.identity.thresholds import default_threshold, shipped_table, threshold_for
from tests.conftest import REPO, shared_file

pytestmark = pytest.mark.slow  # real MTCNN and FaceNet enrollment of the deepface identities

# Identity clusters of ../shared/data/deepface (MANIFEST.md), in the manifest's order.
CLUSTERS = {
    "A": [1, 2, 4, 5, 6, 7, 10, 11],
    "B": [3, 12, 53, 54, 55, 56],
    "C": [8, 9, 47, 48, 49, 50, 51],
    "D": [13, 14, 15, 57, 58],
    "E": [16, 17, 59, 61, 62],
    "F": [18, 19, 67],
    "G": [20, 21],
    "H": [22, 23],
    "I": [24, 25],
    "J": [26, 27, 28, 42, 43, 44, 45, 46],
    "K": [29, 30, 31, 32, 33],
    "L": [34, 35, 36, 37],
    "M": [38, 39, 40, 41],
}


def split(numbers: list[int]) -> tuple[list[int], list[int]]:
    """≥ 3 images: enroll all but the last two; 2 images: enroll the first. The rest are probes."""
    cut = len(numbers) - 2 if len(numbers) >= 3 else 1
    return numbers[:cut], numbers[cut:]


@pytest.fixture(scope="module")
def models() -> Models:
    args = ModelOverrides(device="cpu")
    return build_models(AppConfig().resolve_paths(REPO), args, stills=True)


@pytest.fixture(scope="module")
def deepface_gallery(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[tuple[str, Path]]]:
    folder = shared_file(shared_data, "deepface/tests/unit/dataset")
    gallery = tmp_path_factory.mktemp("gallery")
    probes = []
    for person, numbers in CLUSTERS.items():
        enrolled, probing = split(numbers)
        (gallery / person).mkdir()
        for n in enrolled:
            (gallery / person / f"img{n}.jpg").symlink_to(folder / f"img{n}.jpg")
        probes += [(person, folder / f"img{n}.jpg") for n in probing]
    return gallery, probes


def _probe_vectors(models: Models, probes: list[tuple[str, Path]]) -> np.ndarray:
    crops = []
    for _, path in probes:
        image = read_bgr(path)
        detections = models.detector.detect_one(image)
        k = largest_face(detections)
        assert k is not None, path
        crops.append(crop_faces(image, detections.select([k]), models.embedder).crops[0])
    return models.embedder.embed(np.stack(crops))[0]


@pytest.fixture(scope="module")
def enrolled(models: Models, deepface_gallery: tuple[Path, list[tuple[str, Path]]]) -> tuple[Gallery, np.ndarray, list[str]]:
    """The enrolled gallery, the probes' embeddings and their true persons."""
    gallery_dir, probes = deepface_gallery
    gallery = enroll(gallery_dir, models, progress=False)
    return gallery, _probe_vectors(models, probes), [person for person, _ in probes]


@pytest.mark.parametrize("kind", ["exact", "flat", "ivf", "hnsw"])
def test_rank1_and_open_set_rejection(models: Models, enrolled: tuple[Gallery, np.ndarray, list[str]], kind: str) -> None:
    gallery, vectors, truth = enrolled
    index = IndexSettings(kind)  # type: ignore[arg-type]
    assert set(gallery.names) == set(CLUSTERS)
    threshold = default_threshold(models.embedder.model_id)
    matcher = Matcher.from_gallery(gallery, threshold=threshold, min_margin=0.05, index=index)
    assert matcher.search == kind

    rank1 = np.mean([m.best[0] == person for m, person in zip(matcher.match(vectors), truth, strict=True)])
    assert rank1 >= 0.95, f"rank-1 {rank1:.3f} over {len(truth)} probes"

    unknown = _unknown_when_absent(gallery, vectors, truth, threshold, index)
    assert unknown >= 0.95, f"open-set unknown rate {unknown:.3f}"
    named = _named_right(matcher, vectors, truth)
    # What the app uses for this gallery: the score table's threshold at per-pair FAR 1e-3 / 13.
    table = shipped_table(models.embedder.model_id)
    assert table is not None
    scaled = threshold_for(table, 1e-3 / len(gallery.names)).threshold
    scaled_matcher = Matcher.from_gallery(gallery, threshold=scaled, min_margin=0.05, index=index)
    scaled_unknown = _unknown_when_absent(gallery, vectors, truth, scaled, index)
    assert scaled_unknown >= unknown
    print(
        f"\n[{kind}] probes={len(truth)} rank1={rank1:.3f}; threshold {threshold:.4f} (default, per-pair FAR 1e-3): "
        f"named right {named:.3f}, unknown_when_absent={unknown:.3f}; threshold {scaled:.4f} (gallery of "
        f"{len(gallery.names)}): named right {_named_right(scaled_matcher, vectors, truth):.3f}, "
        f"unknown_when_absent={scaled_unknown:.3f}"
    )


@pytest.mark.parametrize("per_image", [False, True])
def test_faiss_search_gives_the_exact_results(
    models: Models, enrolled: tuple[Gallery, np.ndarray, list[str]], per_image: bool
) -> None:
    """Every FAISS search, forced on for this small gallery, names the same persons with the same
    scores, margins and decisions as exact search (templates, and every enrolled image)."""
    gallery, vectors, _ = enrolled
    threshold = default_threshold(models.embedder.model_id)

    def results(kind: str) -> list[tuple[list[str], list[float], float, str | None]]:
        matcher = Matcher.from_gallery(gallery, threshold, 0.05, top_k=3, per_image=per_image, index=IndexSettings(kind))  # type: ignore[arg-type]
        return [([n for n, _ in m.candidates], [s for _, s in m.candidates], m.margin, i.person) for m, i in matcher.identify(vectors)]

    exact = results("exact")
    assert sum(person is not None for *_, person in exact) >= 15  # most probes are named
    for kind in ("flat", "ivf", "hnsw"):
        for got, want in zip(results(kind), exact, strict=True):
            assert got[0] == want[0] and got[3] == want[3], kind
            np.testing.assert_allclose(got[1], want[1], atol=1e-5)
            assert got[2] == pytest.approx(want[2], abs=1e-5)


def _unknown_when_absent(
    gallery: Gallery, vectors: np.ndarray, truth: list[str], threshold: float, index: IndexSettings | None = None
) -> float:
    """Share of probes left unknown when their own person is taken out of the gallery."""
    unknown = []
    for i, person in enumerate(truth):
        others = [k for k, name in enumerate(gallery.names) if name != person]
        without = Matcher([gallery.names[k] for k in others], gallery.templates[others], threshold, 0.05, index=index)
        unknown.append(without.decide(without.match(vectors[i : i + 1])[0]).person is None)
    return float(np.mean(unknown))


def _named_right(matcher: Matcher, vectors: np.ndarray, truth: list[str]) -> float:
    """Share of probes named as their own person (threshold and margin passed)."""
    return float(np.mean([matcher.decide(m).person == p for m, p in zip(matcher.match(vectors), truth, strict=True)]))


def test_enroll_and_identify_cli(
    deepface_gallery: tuple[Path, list[tuple[str, Path]]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    gallery_dir, probes = deepface_gallery
    assert main(["enroll", "--gallery", str(gallery_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {p["person"] for p in report["people"]} == set(CLUSTERS)
    person, probe = probes[0]
    assert main(["identify", str(probe), "--gallery", str(gallery_dir), "--json"]) == 0
    faces = json.loads(capsys.readouterr().out)
    assert faces and set(faces[0]) == {"box", "person", "score", "margin"}
    assert max(faces, key=lambda f: f["score"])["person"] == person
    # The same through config.yaml's recognition.index: an HNSW search, forced on, answers the same.
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"recognition:\n  checkpoints_dir: {REPO / 'checkpoints'}\n  index: hnsw\n")
    assert main(["identify", str(probe), "--gallery", str(gallery_dir), "--json", "--config", str(cfg)]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert [(f["box"], f["person"]) for f in forced] == [(f["box"], f["person"]) for f in faces]
    np.testing.assert_allclose([f["score"] for f in forced], [f["score"] for f in faces], atol=1e-5)
