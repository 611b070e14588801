"""Score tables and gallery-size thresholds: the CI maths, the FAR grid, interpolation and the tail
fit (synthetic scores), the shipped FaceNet table, config, and `identify` / the app's matcher using
them (fake detector and embedder); slow: calibrate on the shared identities reproduces the table."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import binom, norm

from stream.app import build_matcher
from stream.commands.calibrate import read_identities, run_calibrate
from stream.commands.identify import run_identify
from stream.config import AppConfig, ConfigError, parse_config
from stream.errors import UserError
from stream.faces.models import Models
from stream.identity.calibration import far_interval, far_measurable, threshold_at_far_of
from stream.identity.thresholds import (
    TABLES_DIR,
    ScoreTable,
    build_table,
    choose_threshold,
    default_threshold,
    far_grid_points,
    load_table,
    model_key,
    per_pair_far,
    shipped_table,
    table_for,
    table_from_dict,
    table_to_dict,
    threshold_for,
    write_table,
)
from tests.conftest import REPO
from tests.fakes import FakeGallery, FakePerson, LevelEmbedder, OneFaceDetector, RecordingLogHandler

FACENET = "facenet:casia-webface:6df0e335375c"
SHARED_CSV = REPO / "stream/identity/score_tables/shared_identities.csv"


def _normal_table(n: int = 20_000, std: float = 0.1, seed: int = 0) -> tuple[ScoreTable, np.ndarray]:
    rng = np.random.default_rng(seed)
    impostor = rng.normal(0.0, std, n)
    genuine = rng.normal(0.7, 0.1, 500)
    table = build_table(
        genuine,
        impostor,
        model_id="facenet:casia-webface:test",
        source="synthetic",
        created="2026-01-01",
        images=0,
        identities=None,
        auc=1.0,
        eer=0.0,
        eer_threshold=0.4,
    )
    return table, impostor


# ------------------------------------------------------------------ CI maths


@pytest.mark.parametrize(("k", "n"), [(0, 1000), (1, 1000), (10, 10_893), (37, 500), (500, 500)])
def test_far_interval_is_clopper_pearson(k: int, n: int) -> None:
    low, high = far_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    if k < n:  # P(X <= k | high) = 2.5 %
        assert binom.cdf(k, n, high) == pytest.approx(0.025, rel=1e-4)
    if k > 0:  # P(X >= k | low) = 2.5 %
        assert binom.sf(k - 1, n, low) == pytest.approx(0.025, rel=1e-4)
    if k == 0:
        assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / n))


def test_far_interval_rejects_bad_counts() -> None:
    for k, n in [(-1, 10), (11, 10), (0, 0)]:
        with pytest.raises(ValueError, match="false_accepts"):
            far_interval(k, n)
    with pytest.raises(ValueError, match="confidence"):
        far_interval(1, 10, confidence=1.0)


def test_a_far_is_measurable_from_three_expected_false_accepts() -> None:
    assert far_measurable(1e-3, 3000) and not far_measurable(1e-3, 2999)
    assert far_measurable(1e-3, 10_893) and not far_measurable(1e-4, 10_893)


# ------------------------------------------------------------------ grid, interpolation, tail


def test_far_grid_runs_from_one_half_to_the_smallest_measurable_far() -> None:
    points = far_grid_points(10_000)
    assert points[0] == 0.5 and points[-1] == pytest.approx(3e-4) and 1e-3 in points and 1e-2 in points
    assert all(a > b for a, b in itertools.pairwise(points))
    assert len(points) == 1 + 32 + 1  # 0.5; 10^-0.4 … 10^-3.5; 3/N
    assert far_grid_points(100)[-1] == pytest.approx(0.03)


def test_measured_thresholds_are_exact_at_grid_points_and_interpolated_between() -> None:
    table, impostor = _normal_table()
    at = threshold_for(table, 1e-3)
    assert not at.extrapolated and at.threshold == pytest.approx(threshold_at_far_of(impostor, 1e-3), abs=1e-6)
    assert np.mean(impostor >= at.threshold) <= 1e-3
    between = threshold_for(table, 2e-3).threshold
    assert threshold_for(table, 10**-2.6).threshold <= between <= threshold_for(table, 10**-2.7).threshold
    assert threshold_for(table, 0.9).threshold == threshold_for(table, 0.5).threshold  # above the grid: its top
    with pytest.raises(ValueError, match="per_pair_far"):
        threshold_for(table, 0.0)


def test_tail_fit_recovers_a_normal_and_extrapolates_flagged() -> None:
    table, _ = _normal_table(std=0.1)
    assert table.tail.std == pytest.approx(0.1, rel=0.08) and abs(table.tail.mean) < 0.02
    assert table.min_measured_far == pytest.approx(3 / 20_000)
    deep = threshold_for(table, 1e-6)
    assert deep.extrapolated and deep.threshold == pytest.approx(norm.isf(1e-6) * 0.1, abs=0.03)
    fars = np.logspace(-1, -9, 60)
    values = [threshold_for(table, f).threshold for f in fars]
    assert all(b >= a for a, b in itertools.pairwise(values)) and max(values) <= 1.0
    edge = table.min_measured_far
    assert threshold_for(table, edge * 0.999).threshold == pytest.approx(threshold_for(table, edge).threshold, abs=1e-3)


def test_a_heavy_tail_is_followed_by_the_fit_not_the_bulk() -> None:
    """Student-t impostors (heavier than normal): the upper-tail fit is steeper than the bulk's std."""
    rng = np.random.default_rng(1)
    impostor = 0.05 * rng.standard_t(4, 30_000)
    table = build_table(
        np.full(10, 0.8), impostor, model_id="facenet:x:y", source="t", created="d", images=0,
        identities=None, auc=1.0, eer=0.0, eer_threshold=0.5,
    )  # fmt: skip
    assert table.tail.std > 1.2 * float(np.std(impostor[np.abs(impostor) < np.quantile(impostor, 0.9)]))


def test_table_needs_enough_impostors_and_a_monotone_grid() -> None:
    with pytest.raises(ValueError, match="needs >= 100 impostor"):
        build_table(
            np.ones(3), np.zeros(99), model_id="facenet:a:b", source="s", created="d", images=0,
            identities=None, auc=1.0, eer=0.0, eer_threshold=0.5,
        )  # fmt: skip
    table, _ = _normal_table(n=2000)
    data = table_to_dict(table)
    data["far_grid"] = [[0.5, 0.3], [0.1, 0.2]]
    with pytest.raises(ValueError, match="far_grid"):
        table_from_dict(data)


def test_table_json_round_trip_and_bad_files(tmp_path: Path) -> None:
    table, _ = _normal_table(n=2000)
    write_table(tmp_path / "t.json", table)
    assert load_table(tmp_path / "t.json") == table
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match=r"score table .*bad.json: cannot read"):
        load_table(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": 1, "model_key": "x"}))
    with pytest.raises(UserError, match=r"other.json: not a score table"):
        load_table(tmp_path / "other.json")
    with pytest.raises(UserError, match="missing.json: file not found"):
        load_table(tmp_path / "missing.json")
    with pytest.raises(UserError, match="table is for facenet:casia-webface, the model is adaface:ir_101:1"):
        table_for("adaface:ir_101:1", tmp_path / "t.json")
    assert table_for("facenet:casia-webface:other-hash", tmp_path / "t.json") == table


# ------------------------------------------------------------------ gallery size


def test_threshold_rises_with_gallery_size() -> None:
    table, _ = _normal_table()
    one = choose_threshold(FACENET, gallery_size=1, table=table)
    hundred = choose_threshold(FACENET, gallery_size=100, table=table)
    assert hundred.threshold > one.threshold
    assert one.lookup is not None and one.lookup.per_pair_far == 1e-3 and not one.lookup.extrapolated
    assert hundred.lookup is not None and hundred.lookup.per_pair_far == pytest.approx(1e-5)
    assert hundred.lookup.extrapolated and "extrapolated" in hundred.describe()
    assert "gallery of 100, target FAR 0.001 → per-pair FAR 1e-05" in hundred.describe()
    assert choose_threshold(FACENET, gallery_size=0, table=table).threshold == one.threshold  # empty: as one
    assert per_pair_far(1e-3, 10) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="target_far"):
        per_pair_far(1.0, 1)


def test_explicit_threshold_wins_and_a_model_without_table_keeps_its_fixed_default() -> None:
    table, _ = _normal_table()
    chosen = choose_threshold(FACENET, gallery_size=100, match_threshold=0.37, table=table)
    assert (chosen.threshold, chosen.source) == (0.37, "config") and "recognition.match_threshold" in chosen.describe()
    fixed = choose_threshold("adaface:ir_101:abc", gallery_size=100, table=None)
    assert (fixed.threshold, fixed.source) == (0.3, "fixed")
    assert "no score table" in fixed.describe() and "target_far not applied" in fixed.describe()
    with pytest.raises(UserError, match="no score table and no fixed default"):
        choose_threshold("mystery:model:1", gallery_size=1)


def test_shipped_facenet_table_gives_the_default_threshold() -> None:
    table = shipped_table(FACENET)
    assert table is not None and table.model_key == model_key(FACENET) == "facenet:casia-webface"
    assert (TABLES_DIR / "facenet-casia-webface.json").is_file()
    assert table.impostor >= 10_000 and table.identities is not None and table.identities >= 40
    default = default_threshold(FACENET)
    assert default == threshold_for(table, 1e-3).threshold and dict(table.far_grid)[1e-3] == default
    assert 0.42 < default < 0.6
    assert default_threshold("adaface:ir_101:abc") == 0.3 and shipped_table("adaface:ir_101:abc") is None
    sizes = [threshold_for(table, 1e-3 / g).threshold for g in (1, 10, 100, 1000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] < 1.0


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "recognition.target_far: must be > 0.0, got 0"),
        ("1.5", "recognition.target_far: must be < 1.0, got 1.5"),
        ("-0.1", "recognition.target_far: must be > 0.0, got -0.1"),
        ("often", "recognition.target_far: input should be a valid number"),
    ],
)
def test_target_far_is_validated(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"recognition:\n  target_far: {value}\n")


def test_target_far_default_and_score_table_path(tmp_path: Path) -> None:
    assert AppConfig().recognition.target_far == 1e-3 and AppConfig().recognition.score_table is None
    config = parse_config("recognition:\n  target_far: 0.01\n  score_table: tables/mine.json\n")
    assert config.recognition.target_far == 0.01
    assert config.resolve_paths(tmp_path).recognition.score_table == tmp_path / "tables/mine.json"


# ------------------------------------------------------------------ identify and the app's matcher (fakes)


def _grey(path: Path, level: int, seed: int = 0) -> Path:
    """A 200×200 image of grey ``level`` plus noise (sharp enough for enrollment's blur gate)."""
    rng = np.random.default_rng(seed + level)
    image = np.clip(level + rng.normal(0, 12, (200, 200, 3)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), image)
    return path


def _unit(dim: int, index: int) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[index] = 1.0
    return v


def _between(g_small: int, g_large: int) -> float:
    """A cosine a gallery of ``g_small`` accepts and one of ``g_large`` rejects (shipped table)."""
    table = shipped_table(FACENET)
    assert table is not None
    low, high = (threshold_for(table, 1e-3 / g).threshold for g in (g_small, g_large))
    assert high - low > 0.02
    return (low + high) / 2


def _fake_gallery(size: int, dim: int = 512) -> FakeGallery:
    templates = np.stack([_unit(dim, i) for i in range(size)])
    people = tuple(FakePerson(templates[i : i + 1]) for i in range(size))
    return FakeGallery(tuple(f"p{i}" for i in range(size)), templates, people, model_id="facenet:casia-webface:fake")


def test_identify_threshold_scales_with_the_gallery(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cosine = _between(1, 100)
    query = cosine * _unit(512, 0) + np.sqrt(1 - cosine**2) * _unit(512, 511)
    models = Models(OneFaceDetector(), LevelEmbedder({120: query}), batch_size=8)
    image = _grey(tmp_path / "q.png", 120)
    with caplog.at_level(logging.INFO, logger="stream.commands.identify"):
        alone = run_identify(models, _fake_gallery(1), image, threshold=None, min_margin=0.05)
        crowd = run_identify(models, _fake_gallery(100), image, threshold=None, min_margin=0.05)
        forced = run_identify(models, _fake_gallery(100), image, threshold=cosine - 0.01, min_margin=0.05)
    assert alone[0]["score"] == pytest.approx(cosine, abs=1e-5)
    assert alone[0]["person"] == "p0" and crowd[0]["person"] is None and forced[0]["person"] == "p0"
    assert any("gallery of 100" in m and "extrapolated" in m for m in caplog.messages)
    assert any("gallery of 1," in m for m in caplog.messages)
    loose = run_identify(models, _fake_gallery(100), image, None, 0.05, target_far=0.5)
    assert loose[0]["person"] == "p0"  # a much looser target names the face again


def _enrollable_gallery(root: Path, size: int) -> dict[int, np.ndarray]:
    """``size`` people with one photo each at grey levels 20, 30, …; their vectors (one-hot)."""
    vectors = {}
    for i in range(size):
        level = 20 + 10 * i
        (root / f"p{i:03d}").mkdir(parents=True)
        _grey(root / f"p{i:03d}" / "a.png", level)
        vectors[level] = _unit(512, i)
    return vectors


@pytest.mark.parametrize("size", [1, 20])
def test_app_matcher_uses_the_gallery_size(tmp_path: Path, size: int) -> None:
    models = Models(OneFaceDetector(), LevelEmbedder(_enrollable_gallery(tmp_path / "g", size)), batch_size=8)
    config = parse_config("gallery:\n  cache: false\n")
    handler = RecordingLogHandler()
    logging.getLogger("stream.app").addHandler(handler)
    logging.getLogger("stream.app").setLevel(logging.INFO)
    try:
        matcher = build_matcher(models, config, tmp_path / "g")
    finally:
        logging.getLogger("stream.app").removeHandler(handler)
    table = shipped_table(FACENET)
    assert table is not None and len(matcher) == size
    assert matcher.threshold == pytest.approx(threshold_for(table, 1e-3 / size).threshold)
    assert any(f"gallery of {size}, target FAR 0.001" in m for m in handler.messages)
    explicit = build_matcher(
        models, parse_config("recognition:\n  match_threshold: 0.33\ngallery:\n  cache: false\n"), tmp_path / "g"
    )
    assert explicit.threshold == 0.33


def test_app_matcher_reads_a_configured_table_and_falls_back_without_a_gallery(tmp_path: Path) -> None:
    table, _ = _normal_table(n=5000)
    write_table(tmp_path / "mine.json", table)
    models = Models(OneFaceDetector(), LevelEmbedder(_enrollable_gallery(tmp_path / "g", 3)), batch_size=8)
    config = parse_config(f"recognition:\n  score_table: {tmp_path / 'mine.json'}\ngallery:\n  cache: false\n")
    assert build_matcher(models, config, tmp_path / "g").threshold == threshold_for(table, 1e-3 / 3).threshold
    empty = build_matcher(models, config, tmp_path / "nowhere")
    assert len(empty) == 0 and empty.threshold == threshold_for(table, 1e-3).threshold


# ------------------------------------------------------------------ calibrate --identities (fakes)


def _identity_set(folder: Path, people: int = 8, photos: int = 2) -> tuple[Path, dict[int, np.ndarray]]:
    """``people`` × ``photos`` noisy grey images (one level each), vectors close within a person,
    a faceless black image, and an identities CSV with a comment header."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    vectors: dict[int, np.ndarray] = {}
    lines = ["# made by the test", "identity,file"]
    level = 20
    for p in range(people):
        centre = rng.standard_normal(64)
        for k in range(photos):
            vectors[level] = centre + 0.4 * rng.standard_normal(64)
            _grey(folder / f"p{p}_{k}.png", level)
            lines.append(f"person{p},p{p}_{k}.png")
            level += 10
    cv2.imwrite(str(folder / "dark.png"), np.zeros((200, 200, 3), np.uint8))
    lines.append("ghost,dark.png")
    (folder / "ids.csv").write_text("\n".join(lines) + "\n")
    return folder / "ids.csv", vectors


def test_read_identities_resolves_paths_and_refuses_mistakes(tmp_path: Path) -> None:
    csv_path, _ = _identity_set(tmp_path, people=2, photos=2)
    entries = read_identities(csv_path)
    assert [(e.identity, e.path.name, e.line) for e in entries][:2] == [
        ("person0", "p0_0.png", 3),
        ("person0", "p0_1.png", 4),
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ids.csv").write_text("identity,file\na,p0_0.png\n")
    assert read_identities(tmp_path / "sub" / "ids.csv", root=tmp_path)[0].path == tmp_path / "p0_0.png"
    (tmp_path / "copy.png").write_bytes((tmp_path / "p0_0.png").read_bytes())
    cases = {
        "file,who\nx,y\n": "must name columns identity and file",
        "identity,file\na,nope.png\n": "line 2: image nope.png not found",
        "identity,file\na,p0_0.png\nb,p0_0.png\n": "line 3: p0_0.png is already listed on line 2",
        "identity,file\na,p0_0.png\nb,copy.png\n": r"line 3: copy.png is byte-identical to p0_0.png \(line 2\)",
        "identity,file\n,p0_0.png\n": "line 2: expected an identity and a file",
        "# only a comment\n": "empty file",
        "identity,file\n": "no images listed",
    }
    for text, message in cases.items():
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(UserError, match=message):
            read_identities(tmp_path / "bad.csv")
    with pytest.raises(UserError, match="--root .*nowhere: folder not found"):
        read_identities(csv_path, root=tmp_path / "nowhere")


def test_calibrate_identities_reports_intervals_and_writes_a_table(tmp_path: Path) -> None:
    csv_path, vectors = _identity_set(tmp_path)
    models = Models(OneFaceDetector(), LevelEmbedder(vectors), batch_size=4)
    out = tmp_path / "table.json"
    text, result = run_calibrate(models, identities_csv=csv_path, table_path=out, target_far=0.01)
    assert (result["images"], result["identities"], result["identities_skipped"]) == (16, 8, ["ghost"])
    assert result["images_without_face"] == ["dark.png"] and result["pairs_skipped"] == 16
    assert (result["genuine"], result["impostor"]) == (8, 112) and not result["far_resolved"]
    low, high = result["far_ci_at_target"]
    assert low <= result["at_target_far"]["far"] <= high
    assert [row["gallery"] for row in result["gallery_sizes"]] == [1, 10, 100, 1000]
    assert all(row["extrapolated"] for row in result["gallery_sizes"])
    for expected in (
        "identities: 8 used (0 with one image: impostor pairs only), 1 skipped (no image with a face) (ghost)",
        "pairs: 8 genuine, 112 impostor",
        "95% CI",
        "note: FAR 0.01 is below what 112 impostor pairs can measure (1.1 false accepts expected, needs >= 3",
        "G=1000",
        f"score table: {out}",
    ):
        assert expected in text, expected
    table = load_table(out)
    assert (table.model_key, table.images, table.identities, table.impostor) == ("facenet:casia-webface", 16, 8, 112)
    with pytest.raises(UserError, match="too few for a score table"):
        run_calibrate(models, identities_csv=_identity_set(tmp_path / "small", people=3)[0], table_path=out)


def test_calibrate_source_and_root_options_are_checked(tmp_path: Path) -> None:
    models = Models(OneFaceDetector(), LevelEmbedder({20: _unit(8, 0)}), batch_size=4)
    with pytest.raises(UserError, match="exactly one of --identities CSV, --pairs CSV or --gallery DIR"):
        run_calibrate(models, identities_csv=tmp_path / "a.csv", pairs_csv=tmp_path / "b.csv")
    with pytest.raises(UserError, match="--root: only with --identities"):
        run_calibrate(models, pairs_csv=tmp_path / "b.csv", root=tmp_path)


# ------------------------------------------------------------------ the shared set (slow)


@pytest.mark.slow
def test_calibrate_on_the_shared_identities_matches_the_shipped_table(shared_data: Path, tmp_path: Path) -> None:
    from stream.faces.models import ModelOverrides, build_models

    models = build_models(AppConfig().resolve_paths(REPO), ModelOverrides(device="cpu"))
    written = tmp_path / "table.json"
    text, result = run_calibrate(models, identities_csv=SHARED_CSV, root=shared_data, table_path=written)
    print("\n" + text)
    assert result["impostor"] >= 10_000 and result["genuine"] >= 250 and result["images_without_face"] == []
    assert result["identities"] >= 40 and result["far_resolved"]
    shipped, fresh = shipped_table(models.embedder.model_id), load_table(written)
    assert shipped is not None and shipped.model_id == fresh.model_id == models.embedder.model_id
    counts = ("images", "identities", "genuine", "impostor")
    assert [getattr(shipped, c) for c in counts] == [getattr(fresh, c) for c in counts]
    assert [f for f, _ in shipped.far_grid] == pytest.approx([f for f, _ in fresh.far_grid])
    np.testing.assert_allclose([t for _, t in shipped.far_grid], [t for _, t in fresh.far_grid], atol=2e-3)
    assert shipped.tail.std == pytest.approx(fresh.tail.std, abs=2e-3)
    assert result["at_target_far"]["threshold"] == pytest.approx(default_threshold(models.embedder.model_id), abs=2e-3)
