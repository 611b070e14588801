"""Match thresholds from a model's score table, scaled with the gallery size (pure lookups).

**Score table.** ``run.py calibrate --write-table`` summarises the impostor (different-person)
cosine scores of a labelled set as a FAR→threshold grid: for per-pair false-accept rates from
0.5 down to the smallest the impostor count can measure (``MEASURABLE_FALSE_ACCEPTS`` expected
false accepts), ten points a decade, the lowest threshold whose measured FAR is at most that
rate (``stream.identity.calibration.threshold_at_far``). Tables for the shipped models live in
``stream/identity/score_tables/`` (README.md there), keyed by model family and weights
(``facenet:casia-webface``; the weights hash of the model id is recorded, not matched).

**Lookup.** ``threshold_for(table, far)`` interpolates the grid linearly in log10(FAR) where the
FAR is measurable. Below that it extrapolates with a **normal fit to the upper tail** of the
impostor scores: a least-squares line ``score = mean + std * z`` with ``z = Φ⁻¹(1 - FAR)``
through the grid points of FAR <= 0.1 (a probit / Q-Q fit; the log-spaced grid weighs each
decade equally, so the line follows the tail, not the bulk). Only the fitted slope ``std`` is
used, anchored at the last measured point, so the curve is continuous and monotone there:
``t(f) = t(f_min) + std * (z(f) - z(f_min))``. Why normal and not an extreme-value (GPD) fit:
a cosine of unit embeddings is a sum of many small products, close to normal for unrelated
faces; with ~10⁴ impostor pairs a GPD shape parameter is poorly determined and its
extrapolation swings with it, while the probit line has two well-determined parameters. Its
known bias: real impostor tails are somewhat heavier than normal (look-alikes, relatives,
twins), so an extrapolated threshold can be slightly too low; such thresholds are flagged
``extrapolated`` and logged as such.

**Gallery size.** ``recognition.target_far`` is the chance that a stranger is named as *anybody*
in a gallery of G people. A stranger meets all G, so (union bound) each per-person comparison
may false-accept with at most ``target_far / G``; ``choose_threshold`` uses the threshold of that
per-pair FAR. For G >= 1 it is therefore never below the threshold at ``target_far`` itself. An
explicit ``recognition.match_threshold`` wins; a model without a table (AdaFace: no checkpoint to
calibrate here) keeps its fixed default (``stream.faces.embedder.DEFAULT_THRESHOLDS``) and the
gallery-size scaling is off.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import ndtri

from stream.errors import UserError
from stream.faces.embedder import DEFAULT_THRESHOLDS, family_of
from stream.identity.calibration import MEASURABLE_FALSE_ACCEPTS, threshold_at_far_of

if TYPE_CHECKING:
    from stream.config import RecognitionConfig

TABLE_FORMAT = 1
DEFAULT_TARGET_FAR = 1e-3  # per-pair FAR of a model's default threshold (and recognition.target_far's default)
GRID_TOP_FAR = 0.5  # the table's largest FAR; larger requests get its threshold
GRID_STEPS_PER_DECADE = 10
TAIL_FIT_FAR = 0.1  # the normal tail fit uses the grid points with FAR at most this
MIN_TABLE_IMPOSTORS = 100  # fewer impostor pairs cannot make a table with a tail to fit
TABLES_DIR = Path(__file__).resolve().parent / "score_tables"


@dataclass(frozen=True)
class TailFit:
    """Normal fit to the upper tail: impostor score ≈ mean + std * Φ⁻¹(1 - FAR)."""

    mean: float
    std: float
    points: int  # grid points fitted (FAR from TAIL_FIT_FAR down to the smallest measurable)


@dataclass(frozen=True)
class GenuineSummary:
    """Same-person scores of the set: count, mean and low quantiles (FRR is read off these)."""

    count: int
    mean: float
    minimum: float
    p01: float
    p05: float
    p50: float


@dataclass(frozen=True)
class ScoreTable:
    """A model's impostor-score summary: FAR grid (measured), tail fit (extrapolation) and provenance."""

    model_key: str  # family:weights, e.g. facenet:casia-webface
    model_id: str  # the full id it was measured with (weights hash included)
    source: str
    created: str  # ISO date
    images: int
    identities: int | None
    genuine: int
    impostor: int
    auc: float
    eer: float
    eer_threshold: float
    far_grid: tuple[tuple[float, float], ...]  # (FAR, threshold), FAR descending, thresholds ascending
    tail: TailFit
    genuine_scores: GenuineSummary

    def __post_init__(self) -> None:
        fars = np.array([f for f, _ in self.far_grid], np.float64)
        thresholds = np.array([t for _, t in self.far_grid], np.float64)
        if fars.size < 2 or not np.all(np.isfinite(fars)) or not np.all(np.isfinite(thresholds)):
            raise ValueError(f"far_grid: need >= 2 finite (far, threshold) points, got {fars.size}")
        if np.any(np.diff(fars) >= 0) or np.any(np.diff(thresholds) < 0) or fars[-1] <= 0 or fars[0] > 1:
            raise ValueError("far_grid: FARs must fall in (0, 1] and thresholds must not fall with them")
        if not (math.isfinite(self.tail.std) and self.tail.std > 0):
            raise ValueError(f"tail.std: must be a positive number, got {self.tail.std}")

    @property
    def min_measured_far(self) -> float:
        """The smallest FAR the impostor count measures (the grid's last point)."""
        return self.far_grid[-1][0]


@dataclass(frozen=True)
class Lookup:
    """The threshold for a per-pair FAR, and whether the table measured it or the tail fit guessed it."""

    per_pair_far: float
    threshold: float
    extrapolated: bool


def model_key(model_id: str) -> str:
    """``family:weights`` of a model id (``facenet:casia-webface:6df0e335375c`` → ``facenet:casia-webface``)."""
    return ":".join(model_id.split(":")[:2])


# ------------------------------------------------------------------ building (from scores)


def far_grid_points(impostors: int) -> list[float]:
    """FARs of the grid: 0.5, then 10 steps a decade from 10^-0.4 down to the smallest measurable."""
    smallest = MEASURABLE_FALSE_ACCEPTS / impostors
    points = [GRID_TOP_FAR]
    k = 4  # 10^-0.4 ≈ 0.398 is the first decade step under 0.5
    while (far := 10.0 ** (-k / GRID_STEPS_PER_DECADE)) >= smallest * (1 - 1e-12):
        points.append(far)
        k += 1
    if points[-1] > smallest * (1 + 1e-9):
        points.append(smallest)
    return points


def build_table(
    genuine: np.ndarray,
    impostor: np.ndarray,
    *,
    model_id: str,
    source: str,
    created: str,
    images: int,
    identities: int | None,
    auc: float,
    eer: float,
    eer_threshold: float,
) -> ScoreTable:
    """The score table of labelled scores; ValueError with fewer than ``MIN_TABLE_IMPOSTORS`` impostors."""
    genuine = np.sort(np.asarray(genuine, np.float64))
    impostor = np.asarray(impostor, np.float64)
    if impostor.size < MIN_TABLE_IMPOSTORS or genuine.size == 0:
        raise ValueError(
            f"a score table needs >= {MIN_TABLE_IMPOSTORS} impostor and >= 1 genuine pairs, "
            f"got {impostor.size} and {genuine.size}"
        )
    fars = far_grid_points(impostor.size)
    thresholds = np.maximum.accumulate([threshold_at_far_of(impostor, f) for f in fars])
    grid = tuple((float(f"{f:.6g}"), math.ceil(float(t) * 1e6) / 1e6) for f, t in zip(fars, thresholds, strict=True))
    return ScoreTable(
        model_key=model_key(model_id),
        model_id=model_id,
        source=source,
        created=created,
        images=int(images),
        identities=identities,
        genuine=int(genuine.size),
        impostor=int(impostor.size),
        auc=round(float(auc), 6),
        eer=round(float(eer), 6),
        eer_threshold=round(float(eer_threshold), 6),
        far_grid=grid,
        tail=fit_tail(grid),
        genuine_scores=GenuineSummary(
            count=int(genuine.size),
            mean=round(float(genuine.mean()), 6),
            minimum=round(float(genuine[0]), 6),
            p01=round(float(np.quantile(genuine, 0.01)), 6),
            p05=round(float(np.quantile(genuine, 0.05)), 6),
            p50=round(float(np.quantile(genuine, 0.5)), 6),
        ),
    )


def fit_tail(grid: tuple[tuple[float, float], ...]) -> TailFit:
    """Least-squares ``threshold = mean + std * Φ⁻¹(1 - FAR)`` over the grid points of FAR <= 0.1."""
    points = [(f, t) for f, t in grid if f <= TAIL_FIT_FAR * (1 + 1e-9)]
    if len(points) < 2:
        points = list(grid[-2:])  # a small set: the two smallest FARs it measures
    z = ndtri(1.0 - np.array([f for f, _ in points]))
    t = np.array([t for _, t in points])
    std, mean = np.polyfit(z, t, 1) if np.ptp(z) > 0 else (0.0, float(t.mean()))
    return TailFit(mean=round(float(mean), 6), std=round(max(float(std), 1e-6), 6), points=len(points))


# ------------------------------------------------------------------ lookups (pure)


def threshold_for(table: ScoreTable, per_pair_far: float) -> Lookup:
    """Threshold whose per-pair FAR on the table's set is about ``per_pair_far``.

    Measured range: linear in log10(FAR) between grid points (exact at the grid points, e.g.
    1e-3). Larger than the grid's top: its top threshold. Smaller than it can measure: the
    anchored normal tail (module docstring), flagged ``extrapolated``, at most 1.
    """
    if not 0.0 < per_pair_far < 1.0:
        raise ValueError(f"per_pair_far: must be in (0, 1), got {per_pair_far!r}")
    fars = np.log10([f for f, _ in table.far_grid])[::-1]  # ascending
    thresholds = np.array([t for _, t in table.far_grid])[::-1]
    smallest = table.min_measured_far
    if per_pair_far >= smallest * (1 - 1e-9):
        value = float(np.interp(math.log10(min(per_pair_far, GRID_TOP_FAR)), fars, thresholds))
        return Lookup(per_pair_far, value, extrapolated=False)
    z_gap = float(ndtri(1.0 - per_pair_far) - ndtri(1.0 - smallest))
    value = min(1.0, table.far_grid[-1][1] + table.tail.std * z_gap)
    return Lookup(per_pair_far, value, extrapolated=True)


def per_pair_far(target_far: float, gallery_size: int) -> float:
    """Per-comparison FAR that keeps a stranger's chance of being named in a gallery of G under target."""
    if not 0.0 < target_far < 1.0:
        raise ValueError(f"target_far: must be in (0, 1), got {target_far!r}")
    return target_far / max(1, int(gallery_size))


@dataclass(frozen=True)
class ThresholdChoice:
    """The match threshold in use and why (``describe`` is the one log line)."""

    threshold: float
    source: str  # "config": recognition.match_threshold; "table": score table; "fixed": family default
    model_key: str
    gallery_size: int
    target_far: float | None = None
    lookup: Lookup | None = None

    def describe(self) -> str:
        if self.source == "config":
            return f"match threshold {self.threshold:.4f} (recognition.match_threshold)"
        if self.source == "fixed":
            return (
                f"match threshold {self.threshold:.4f}: fixed default of {self.model_key}, which has no score table "
                "(recognition.target_far not applied; run.py calibrate --write-table makes one)"
            )
        assert self.lookup is not None and self.target_far is not None
        guess = ", extrapolated from the impostor tail fit" if self.lookup.extrapolated else ""
        return (
            f"match threshold {self.threshold:.4f}: gallery of {self.gallery_size}, target FAR {self.target_far:g} "
            f"→ per-pair FAR {self.lookup.per_pair_far:.3g}{guess}"
        )


def choose_threshold(
    model_id: str,
    *,
    gallery_size: int,
    target_far: float = DEFAULT_TARGET_FAR,
    match_threshold: float | None = None,
    table: ScoreTable | None = None,
) -> ThresholdChoice:
    """recognition.match_threshold if set; else the table's threshold at ``target_far / G``; else the fixed default."""
    key, size = model_key(model_id), max(1, int(gallery_size))
    if match_threshold is not None:
        return ThresholdChoice(float(match_threshold), "config", key, size)
    if table is None:
        return ThresholdChoice(fixed_threshold(model_id), "fixed", key, size)
    lookup = threshold_for(table, per_pair_far(target_far, size))
    return ThresholdChoice(lookup.threshold, "table", key, size, float(target_far), lookup)


def threshold_from_config(model_id: str, rec: RecognitionConfig, gallery_size: int) -> ThresholdChoice:
    """``choose_threshold`` with the recognition section's match_threshold, target_far and score_table."""
    table = None if rec.match_threshold is not None else table_for(model_id, rec.score_table)
    return choose_threshold(
        model_id,
        gallery_size=gallery_size,
        target_far=rec.target_far,
        match_threshold=rec.match_threshold,
        table=table,
    )


def fixed_threshold(model_id: str) -> float:
    family = family_of(model_id)
    if family not in DEFAULT_THRESHOLDS:
        raise UserError(
            f"model {model_id}: no score table and no fixed default threshold; set recognition.match_threshold"
        )
    return DEFAULT_THRESHOLDS[family]


def default_threshold(model_id: str) -> float:
    """The model's default (gallery of one): its shipped table at per-pair FAR 1e-3, else its fixed default."""
    table = shipped_table(model_id)
    if table is None:
        return fixed_threshold(model_id)
    return threshold_for(table, DEFAULT_TARGET_FAR).threshold


# ------------------------------------------------------------------ files


def table_path(key: str, folder: Path = TABLES_DIR) -> Path:
    """Where the shipped table of ``family:weights`` lives: ``score_tables/<family>-<weights>.json``."""
    return folder / f"{key.replace(':', '-')}.json"


def shipped_table(model_id: str, folder: Path = TABLES_DIR) -> ScoreTable | None:
    """The table shipped for this model's family and weights, or None."""
    path = table_path(model_key(model_id), folder)
    return load_table(path) if path.is_file() else None


def table_for(model_id: str, path: Path | None) -> ScoreTable | None:
    """``path`` (recognition.score_table) when given, checked against the model; else the shipped table."""
    if path is None:
        return shipped_table(model_id)
    table = load_table(path)
    if table.model_key != model_key(model_id):
        raise UserError(f"recognition.score_table {path}: table is for {table.model_key}, the model is {model_id}")
    return table


def table_to_dict(table: ScoreTable) -> dict[str, Any]:
    data = asdict(table)
    data["far_grid"] = [list(point) for point in table.far_grid]
    return {"format": TABLE_FORMAT, **data}


def table_from_dict(data: dict[str, Any]) -> ScoreTable:
    """A table from its JSON dict; KeyError/TypeError/ValueError on a malformed one."""
    if data.get("format") != TABLE_FORMAT:
        raise ValueError(f"format: expected {TABLE_FORMAT}, got {data.get('format')!r}")
    fields = {k: v for k, v in data.items() if k != "format"}
    fields["far_grid"] = tuple((float(f), float(t)) for f, t in fields["far_grid"])
    fields["tail"] = TailFit(**fields["tail"])
    fields["genuine_scores"] = GenuineSummary(**fields["genuine_scores"])
    return ScoreTable(**fields)


def load_table(path: Path) -> ScoreTable:
    """Read a score table; any problem is one UserError line naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"score table {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"score table {path}: cannot read ({exc})") from None
    try:
        return table_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"score table {path}: not a score table ({type(exc).__name__}: {exc})") from None


def table_json(table: ScoreTable) -> str:
    """The table as JSON text, one (FAR, threshold) grid point a line."""
    text = json.dumps(table_to_dict(table), indent=1)
    return re.sub(r"\[\s+(-?[0-9.e+-]+),\s+(-?[0-9.e+-]+)\s+\]", r"[\1, \2]", text) + "\n"


def write_table(path: Path, table: ScoreTable) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table_json(table), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--write-table {path}: cannot write ({exc.strerror or exc})") from None
