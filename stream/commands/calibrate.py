"""`run.py calibrate`: measure the match threshold on labelled pairs or on the gallery itself.

Two sources of genuine (same person) and impostor (different people) cosine scores:

* ``--pairs CSV`` with columns ``file_x,file_y`` and a label column ``same`` (1/0, true/false,
  yes/no) or deepface's ``Decision``/``decision`` (Yes/No). Relative paths are relative to the
  CSV's folder; a path that does not exist there is also tried as its bare file name in that
  folder (deepface's pivot CSV says ``deepface/tests/dataset/imgN.jpg``). Each distinct image
  is embedded once (its largest face); images without a face are skipped with their pairs.
* ``--gallery DIR``: every within-person pair of enrolled images is genuine, every
  between-person pair impostor.

Reports counts, ROC AUC, the equal-error rate, the threshold at the target false-accept rate
with accuracy/FAR/FRR there, and the same at the threshold in use now; optionally writes a
PNG of the two score histograms with both thresholds marked.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.errors import UserError
from stream.faces.embedder import default_threshold
from stream.faces.models import Models, largest_face_crop
from stream.faces.still import embed_stack
from stream.identity.calibration import Calibration, OperatingPoint, calibrate, gallery_pair_scores
from stream.identity.matcher import GalleryLike

LABEL_COLUMNS = ("same", "decision")
YES = frozenset({"1", "true", "yes", "y", "same"})
NO = frozenset({"0", "false", "no", "n", "different"})
SHOWN_FACELESS = 5  # faceless image names listed in the text report


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool


@dataclass(frozen=True)
class Scores:
    """Labelled cosine scores and where they came from."""

    scores: np.ndarray  # (n,) float64
    same: np.ndarray  # (n,) bool
    source: str
    images: int  # images embedded
    faceless: tuple[str, ...] = ()  # images skipped: no face found
    pairs_skipped: int = 0  # pairs dropped because an image had no face


# ------------------------------------------------------------------ pairs CSV


def read_pairs(csv_path: Path) -> list[Pair]:
    """Parse a pairs CSV; every problem is a UserError naming the file (and line)."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise UserError(f"--pairs {csv_path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"--pairs {csv_path}: cannot read ({exc})") from None
    if not rows:
        raise UserError(f"--pairs {csv_path}: empty file")
    x, y, label = _columns(csv_path, rows[0])
    resolve = _Resolver(csv_path)
    pairs = []
    for line, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(x, y, label):
            raise UserError(f"{csv_path} line {line}: expected at least {max(x, y, label) + 1} columns, got {len(row)}")
        pairs.append(Pair(resolve(row[x], line), resolve(row[y], line), _label(csv_path, line, row[label])))
    if not pairs:
        raise UserError(f"--pairs {csv_path}: no pairs")
    return pairs


def _columns(csv_path: Path, header: list[str]) -> tuple[int, int, int]:
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("file_x", "file_y") if c not in names]
    if missing:
        raise UserError(f"--pairs {csv_path}: missing column {missing[0]} (need file_x, file_y and same or Decision)")
    label = next((c for c in LABEL_COLUMNS if c in names), None)
    if label is None:
        raise UserError(f"--pairs {csv_path}: missing label column (same or Decision)")
    return names.index("file_x"), names.index("file_y"), names.index(label)


def _label(csv_path: Path, line: int, value: str) -> bool:
    word = value.strip().lower()
    if word in YES:
        return True
    if word in NO:
        return False
    raise UserError(f"{csv_path} line {line}: label {value!r} is not yes/no, true/false or 1/0")


class _Resolver:
    """Image path of a CSV cell: absolute, else under the CSV's folder, else its bare name there."""

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = csv_path
        self.folder = csv_path.parent
        self.known: dict[str, Path] = {}

    def __call__(self, cell: str, line: int) -> Path:
        name = cell.strip()
        if name not in self.known:
            self.known[name] = self._find(name, line)
        return self.known[name]

    def _find(self, name: str, line: int) -> Path:
        if not name:
            raise UserError(f"{self.csv_path} line {line}: empty image path")
        given = Path(name)
        tries = [given if given.is_absolute() else self.folder / given, self.folder / given.name]
        found = next((p for p in tries if p.is_file()), None)
        if found is None:
            raise UserError(f"{self.csv_path} line {line}: image {name} not found (looked for {tries[-1]})")
        return found


def pair_scores(models: Models, pairs: list[Pair], source: str) -> Scores:
    """Embed each distinct image once (largest face) and score every pair whose images have a face."""
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    vectors, faceless = _embed_largest(models, paths)
    usable = [p for p in pairs if p.a in vectors and p.b in vectors]
    a = np.stack([vectors[p.a] for p in usable]) if usable else np.zeros((0, 1), np.float32)
    b = np.stack([vectors[p.b] for p in usable]) if usable else np.zeros((0, 1), np.float32)
    scores = np.clip(np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64)), -1.0, 1.0)
    same = np.array([p.same for p in usable], bool)
    return Scores(scores, same, source, len(vectors), tuple(p.name for p in faceless), len(pairs) - len(usable))


def _embed_largest(models: Models, paths: list[Path]) -> tuple[dict[Path, np.ndarray], list[Path]]:
    """Unit vector of each image's largest face (in embedder batches), and the faceless images."""
    vectors: dict[Path, np.ndarray] = {}
    faceless: list[Path] = []
    pending: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        crop = largest_face_crop(models, path)
        if crop is None:
            faceless.append(path)
            continue
        pending.append((path, crop))
        if len(pending) >= models.batch_size:
            vectors.update(_embed(models, pending))
            pending = []
    vectors.update(_embed(models, pending))
    return vectors, faceless


def _embed(models: Models, pending: list[tuple[Path, np.ndarray]]) -> dict[Path, np.ndarray]:
    if not pending:
        return {}
    vectors, _ = embed_stack(models.embedder, [crop for _, crop in pending])
    return {path: vectors[i] for i, (path, _) in enumerate(pending)}


# ------------------------------------------------------------------ gallery


def gallery_scores(models: Models, gallery: Path | GalleryLike, use_cache: bool = True) -> Scores:
    """Within-person (genuine) and between-person (impostor) pairs of the enrolled images.

    Enrollment has already dropped photos that failed its gates or were outliers, so these
    genuine scores are those of the gallery as it is used, not of every photo in the folder.
    """
    if isinstance(gallery, Path):
        from stream.commands.identify import load_gallery

        source, gallery = str(gallery), load_gallery(models, gallery, use_cache)
    else:
        source = "gallery"
    blocks = [np.asarray(p.vectors, np.float32) for p in gallery.people]
    scores, same = gallery_pair_scores(blocks)
    return Scores(scores, same, source, sum(len(b) for b in blocks))


# ------------------------------------------------------------------ report


def run_calibrate(
    models: Models,
    pairs_csv: Path | None = None,
    gallery: Path | GalleryLike | None = None,
    target_far: float = 1e-3,
    plot_path: Path | None = None,
    current_threshold: float | None = None,
    use_cache: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Calibrate on ``pairs_csv`` or ``gallery`` (exactly one); returns (text report, JSON-able dict).

    ``gallery`` is a folder (enrolled here, cached per model when ``use_cache``) or an enrolled
    gallery. ``current_threshold`` None means the model's calibrated default.
    """
    if (pairs_csv is None) == (gallery is None):
        raise UserError("calibrate: give exactly one of --pairs CSV or --gallery DIR")
    if not 0.0 < target_far < 1.0:
        raise UserError(f"--target-far: must be between 0 and 1, got {target_far:g}")
    model_id = models.embedder.model_id
    current = default_threshold(model_id) if current_threshold is None else current_threshold
    if pairs_csv is not None:
        data = pair_scores(models, read_pairs(pairs_csv), str(pairs_csv))
    else:
        assert gallery is not None
        data = gallery_scores(models, gallery, use_cache)
    result = _calibrate(data, target_far, current)
    if plot_path is not None:
        write_plot(plot_path, data, result, model_id)
    report = _result_dict(data, result, model_id, plot_path)
    return format_report(report), report


def _calibrate(data: Scores, target_far: float, current: float) -> Calibration:
    genuine = int(data.same.sum())
    if genuine == 0 or genuine == data.same.size:
        raise UserError(
            f"{data.source}: need both same-person and different-person pairs with faces, "
            f"got {genuine} and {data.same.size - genuine}"
        )
    return calibrate(data.scores, data.same, target_far, current)


def _point(point: OperatingPoint) -> dict[str, float]:
    return {k: round(v, 6) for k, v in asdict(point).items()}


def _result_dict(data: Scores, result: Calibration, model_id: str, plot_path: Path | None) -> dict[str, Any]:
    stats = result.stats
    return {
        "model_id": model_id,
        "source": data.source,
        "images": data.images,
        "images_without_face": list(data.faceless),
        "pairs_skipped": data.pairs_skipped,
        "genuine": stats.genuine,
        "impostor": stats.impostor,
        "auc": round(stats.auc, 6),
        "eer": round(stats.eer, 6),
        "eer_threshold": round(stats.eer_threshold, 6),
        "best_accuracy": round(stats.best_accuracy, 6),
        "best_threshold": round(stats.best_threshold, 6),
        "target_far": result.target_far,
        "far_resolved": result.far_resolved,
        "at_target_far": _point(result.at_target),
        "at_current": _point(result.at_current),
        "plot": None if plot_path is None else str(plot_path),
    }


def format_report(r: dict[str, Any]) -> str:
    faceless = r["images_without_face"]
    lines = [
        f"model {r['model_id']}, scores from {r['source']}",
        f"images embedded: {r['images']}, without a face: {len(faceless)}{_names(faceless)}"
        f" (pairs skipped: {r['pairs_skipped']})",
        f"pairs: {r['genuine']} genuine, {r['impostor']} impostor",
        f"ROC AUC: {r['auc']:.5f}",
        f"EER: {r['eer']:.2%} at threshold {r['eer_threshold']:.4f}",
        f"threshold at FAR {r['target_far']:g}: {_op(r['at_target_far'])}",
        f"current threshold: {_op(r['at_current'])}",
        f"best accuracy {r['best_accuracy']:.2%} at threshold {r['best_threshold']:.4f}",
    ]
    if not r["far_resolved"]:
        lines.append(
            f"note: {r['impostor']} impostor pairs cannot measure FAR {r['target_far']:g} "
            f"(needs >= {int(np.ceil(1 / r['target_far']))}); the threshold is just above the highest impostor score"
        )
    if r["plot"]:
        lines.append(f"plot: {r['plot']}")
    return "\n".join(lines)


def _op(p: dict[str, float]) -> str:
    return f"{p['threshold']:.4f} (accuracy {p['accuracy']:.2%}, FAR {p['far']:.3%}, FRR {p['frr']:.2%})"


def _names(faceless: list[str]) -> str:
    if not faceless:
        return ""
    more = f", +{len(faceless) - SHOWN_FACELESS} more" if len(faceless) > SHOWN_FACELESS else ""
    return f" ({', '.join(faceless[:SHOWN_FACELESS])}{more})"


def write_plot(path: Path, data: Scores, result: Calibration, model_id: str) -> None:
    """Histograms of genuine and impostor scores with the chosen and current thresholds (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    bins = np.linspace(min(-0.2, float(data.scores.min())), 1.0, 61).tolist()
    ax.hist(data.scores[~data.same], bins=bins, density=True, alpha=0.6, color="tab:red", label="impostor")
    ax.hist(data.scores[data.same], bins=bins, density=True, alpha=0.6, color="tab:green", label="genuine")
    chosen, current = result.at_target.threshold, result.at_current.threshold
    ax.axvline(chosen, color="black", linestyle="-", label=f"FAR {result.target_far:g}: {chosen:.3f}")
    ax.axvline(current, color="tab:blue", linestyle="--", label=f"current: {current:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(f"{model_id}: AUC {result.stats.auc:.5f}, EER {result.stats.eer:.2%}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise UserError(f"--plot {path}: cannot write ({exc.strerror or exc})") from None


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("calibrate", help="measure the match threshold on labelled pairs or the gallery")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", type=Path, help="CSV of file_x,file_y,same (or deepface's Decision)")
    source.add_argument("--gallery", type=Path, help="folder of <person>/<images>: all within/between pairs")
    p.add_argument("--target-far", type=float, default=1e-3, help="false-accept rate to pick a threshold for")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of the score histograms here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p
