"""`run.py calibrate`: measure the match threshold on labelled images, pairs or the gallery itself.

Three sources of genuine (same person) and impostor (different people) cosine scores:

* ``--identities CSV`` with columns ``identity,file`` (``#`` lines are comments): every
  within-identity pair of images is genuine, every between-identity pair impostor. Paths are
  relative to ``--root`` (default: the CSV's folder). A file listed twice, or two byte-identical
  files, is a UserError naming the lines (duplicates would count one photo as a perfect genuine
  pair). The shipped set is ``stream/identity/score_tables/shared_identities.csv`` over
  ``../shared/data`` (README.md in that folder lists the sources and what is left out).
* ``--pairs CSV`` with columns ``file_x,file_y`` and a label column ``same`` (1/0, true/false,
  yes/no) or deepface's ``Decision``/``decision`` (Yes/No). Relative paths are relative to the
  CSV's folder; a path that does not exist there is also tried as its bare file name in that
  folder (deepface's pivot CSV says ``deepface/tests/dataset/imgN.jpg``).
* ``--gallery DIR``: every within-person pair of enrolled images is genuine, every
  between-person pair impostor.

Each distinct image is embedded once (its largest face); images without a face are reported and
skipped with their pairs. Reports counts, ROC AUC, the equal-error rate, the threshold at the
target false-accept rate with the FAR's 95 % Clopper–Pearson interval and the FRR there (and a
note when the impostor count cannot measure that FAR), the same at the threshold in use now, and
the thresholds a gallery of 1, 10, 100 and 1000 people would use (``stream.identity.thresholds``).
``--write-table`` saves the score table the app scales thresholds with; ``--plot`` a PNG of the
two score histograms with both thresholds marked.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.errors import UserError
from stream.faces.models import Models, largest_face_crop
from stream.faces.still import embed_stack
from stream.identity.calibration import (
    MEASURABLE_FALSE_ACCEPTS,
    Calibration,
    OperatingPoint,
    calibrate,
    gallery_pair_scores,
)
from stream.identity.matcher import GalleryLike
from stream.identity.thresholds import (
    MIN_TABLE_IMPOSTORS,
    ScoreTable,
    build_table,
    default_threshold,
    per_pair_far,
    threshold_for,
    write_table,
)

LABEL_COLUMNS = ("same", "decision")
YES = frozenset({"1", "true", "yes", "y", "same"})
NO = frozenset({"0", "false", "no", "n", "different"})
SHOWN_FACELESS = 5  # faceless image names listed in the text report
GALLERY_SIZES = (1, 10, 100, 1000)  # the gallery-size lines of the report


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
    identities: int | None = None  # identities with at least one embedded image (identities CSV)
    identities_skipped: tuple[str, ...] = ()  # identities left without an image with a face
    single_image_identities: int = 0  # identities with one image: impostor pairs only


@dataclass(frozen=True)
class Entry:
    """One row of an identities CSV."""

    identity: str
    path: Path
    line: int


# ------------------------------------------------------------------ identities CSV


def read_identities(csv_path: Path, root: Path | None = None) -> list[Entry]:
    """Parse an ``identity,file`` CSV (``#`` lines are comments); paths relative to ``root``
    (default: the CSV's folder). Every problem is a UserError naming the file and line."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            lines = [
                (n, text) for n, text in enumerate(handle, 1) if text.strip() and not text.lstrip().startswith("#")
            ]
    except FileNotFoundError:
        raise UserError(f"--identities {csv_path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--identities {csv_path}: cannot read ({exc})") from None
    if not lines:
        raise UserError(f"--identities {csv_path}: empty file")
    rows = list(zip([n for n, _ in lines], csv.reader(text for _, text in lines), strict=True))
    header = [h.strip().lower() for h in rows[0][1]]
    if "identity" not in header or "file" not in header:
        raise UserError(
            f"--identities {csv_path}: the header must name columns identity and file, got {','.join(header)}"
        )
    who, where = header.index("identity"), header.index("file")
    folder = csv_path.parent if root is None else root
    if not folder.is_dir():
        raise UserError(f"--root {folder}: folder not found")
    entries: list[Entry] = []
    seen: dict[Path, int] = {}
    for line, row in rows[1:]:
        if len(row) <= max(who, where) or not row[who].strip() or not row[where].strip():
            raise UserError(f"{csv_path} line {line}: expected an identity and a file")
        path = folder / row[where].strip()
        if not path.is_file():
            raise UserError(f"{csv_path} line {line}: image {row[where].strip()} not found under {folder}")
        if path.resolve() in seen:
            raise UserError(
                f"{csv_path} line {line}: {row[where].strip()} is already listed on line {seen[path.resolve()]}"
            )
        seen[path.resolve()] = line
        entries.append(Entry(row[who].strip(), path, line))
    if not entries:
        raise UserError(f"--identities {csv_path}: no images listed")
    _refuse_copies(csv_path, entries)
    return entries


def _refuse_copies(csv_path: Path, entries: list[Entry]) -> None:
    """Byte-identical files would be a perfect 'genuine' pair (or a same-person 'impostor' one)."""
    first: dict[str, Entry] = {}
    for entry in entries:
        digest = hashlib.sha256(entry.path.read_bytes()).hexdigest()
        if digest in first:
            raise UserError(
                f"{csv_path} line {entry.line}: {entry.path.name} is byte-identical to "
                f"{first[digest].path.name} (line {first[digest].line}); list one of them"
            )
        first[digest] = entry


def identity_scores(models: Models, entries: list[Entry], source: str) -> Scores:
    """Embed each image once (largest face); all within-identity pairs genuine, all between impostor."""
    vectors, faceless = _embed_largest(models, [e.path for e in entries])
    order: dict[str, list[np.ndarray]] = {}
    for entry in entries:
        order.setdefault(entry.identity, [])
        if entry.path in vectors:
            order[entry.identity].append(vectors[entry.path])
    blocks = [np.stack(v).astype(np.float32) for v in order.values() if v]
    skipped = tuple(name for name, v in order.items() if not v)
    total_images = len(entries)
    all_pairs = total_images * (total_images - 1) // 2
    scores, same = gallery_pair_scores(blocks) if blocks else (np.zeros(0), np.zeros(0, bool))
    return Scores(
        scores,
        same,
        source,
        len(vectors),
        tuple(p.name for p in faceless),
        all_pairs - int(scores.size),
        identities=len(blocks),
        identities_skipped=skipped,
        single_image_identities=sum(1 for b in blocks if len(b) == 1),
    )


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
    identities_csv: Path | None = None,
    root: Path | None = None,
    table_path: Path | None = None,
) -> tuple[str, dict[str, Any]]:
    """Calibrate on ``identities_csv``, ``pairs_csv`` or ``gallery`` (exactly one); returns
    (text report, JSON-able dict).

    ``gallery`` is a folder (enrolled here, cached per model when ``use_cache``) or an enrolled
    gallery. ``root`` is where the identities CSV's paths start (default: its folder).
    ``current_threshold`` None means the model's default. ``table_path`` writes the score table.
    Photos are detected with ``models``' still-image detector (full quality whatever the profile).
    """
    models = models.for_stills()
    if sum(source is not None for source in (identities_csv, pairs_csv, gallery)) != 1:
        raise UserError("calibrate: give exactly one of --identities CSV, --pairs CSV or --gallery DIR")
    if root is not None and identities_csv is None:
        raise UserError("--root: only with --identities")
    if not 0.0 < target_far < 1.0:
        raise UserError(f"--target-far: must be between 0 and 1, got {target_far:g}")
    model_id = models.embedder.model_id
    current = _current_threshold(model_id) if current_threshold is None else current_threshold
    if identities_csv is not None:
        data = identity_scores(models, read_identities(identities_csv, root), _source(identities_csv, root))
    elif pairs_csv is not None:
        data = pair_scores(models, read_pairs(pairs_csv), str(pairs_csv))
    else:
        assert gallery is not None
        data = gallery_scores(models, gallery, use_cache)
    result = _calibrate(data, target_far, current)
    table = _table(data, result, model_id, required=table_path is not None)
    if table_path is not None and table is not None:
        write_table(table_path, table)
    if plot_path is not None:
        write_plot(plot_path, data, result, model_id)
    report = _result_dict(data, result, model_id, plot_path, table, table_path)
    return format_report(report), report


def _current_threshold(model_id: str) -> float | None:
    """The model's default threshold, or None for a model with neither a table nor a fixed default."""
    try:
        return default_threshold(model_id)
    except UserError:
        return None


def _source(identities_csv: Path, root: Path | None) -> str:
    return str(identities_csv) if root is None else f"{identities_csv} (root {root})"


def _table(data: Scores, result: Calibration, model_id: str, required: bool) -> ScoreTable | None:
    """The score table of these scores, or None (UserError when ``required``) with too few impostors."""
    impostor = data.scores[~data.same]
    if impostor.size < MIN_TABLE_IMPOSTORS:
        if required:
            raise UserError(
                f"--write-table: {impostor.size} impostor pairs are too few for a score table "
                f"(need >= {MIN_TABLE_IMPOSTORS})"
            )
        return None
    stats = result.stats
    return build_table(
        data.scores[data.same],
        impostor,
        model_id=model_id,
        source=data.source,
        created=datetime.date.today().isoformat(),
        images=data.images,
        identities=data.identities,
        auc=stats.auc,
        eer=stats.eer,
        eer_threshold=stats.eer_threshold,
    )


def _calibrate(data: Scores, target_far: float, current: float | None) -> Calibration:
    genuine = int(data.same.sum())
    if genuine == 0 or genuine == data.same.size:
        raise UserError(
            f"{data.source}: need both same-person and different-person pairs with faces, "
            f"got {genuine} and {data.same.size - genuine}"
        )
    return calibrate(data.scores, data.same, target_far, current)


def _point(point: OperatingPoint) -> dict[str, float]:
    return {k: round(v, 6) for k, v in asdict(point).items()}


def _result_dict(
    data: Scores,
    result: Calibration,
    model_id: str,
    plot_path: Path | None,
    table: ScoreTable | None,
    table_path: Path | None,
) -> dict[str, Any]:
    stats = result.stats
    low, high = result.far_ci
    return {
        "model_id": model_id,
        "source": data.source,
        "images": data.images,
        "images_without_face": list(data.faceless),
        "pairs_skipped": data.pairs_skipped,
        "identities": data.identities,
        "identities_skipped": list(data.identities_skipped),
        "single_image_identities": data.single_image_identities,
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
        "false_accepts_at_target": result.false_accepts,
        "far_ci_at_target": [round(low, 8), round(high, 8)],
        "at_current": None if result.at_current is None else _point(result.at_current),
        "gallery_sizes": _gallery_sizes(data, result.target_far, table),
        "table": None if table_path is None else str(table_path),
        "plot": None if plot_path is None else str(plot_path),
    }


def _gallery_sizes(data: Scores, target_far: float, table: ScoreTable | None) -> list[dict[str, Any]]:
    """Per gallery size G: the per-pair FAR target/G, its threshold and the FRR on these pairs."""
    if table is None:
        return []
    genuine = data.scores[data.same]
    rows = []
    for size in GALLERY_SIZES:
        lookup = threshold_for(table, per_pair_far(target_far, size))
        rows.append(
            {
                "gallery": size,
                "per_pair_far": lookup.per_pair_far,
                "threshold": round(lookup.threshold, 6),
                "extrapolated": lookup.extrapolated,
                "frr": round(float(np.mean(genuine < lookup.threshold)), 6),
            }
        )
    return rows


def format_report(r: dict[str, Any]) -> str:
    faceless = r["images_without_face"]
    lines = [
        f"model {r['model_id']}, scores from {r['source']}",
        f"images embedded: {r['images']}, without a face: {len(faceless)}{_names(faceless)}"
        f" (pairs skipped: {r['pairs_skipped']})",
    ]
    if r["identities"] is not None:
        skipped = r["identities_skipped"]
        lines.append(
            f"identities: {r['identities']} used ({r['single_image_identities']} with one image: impostor pairs only), "
            f"{len(skipped)} skipped (no image with a face){_names(skipped)}"
        )
    low, high = r["far_ci_at_target"]
    at = r["at_target_far"]
    lines += [
        f"pairs: {r['genuine']} genuine, {r['impostor']} impostor",
        f"ROC AUC: {r['auc']:.5f}",
        f"EER: {r['eer']:.2%} at threshold {r['eer_threshold']:.4f}",
        f"threshold at FAR {r['target_far']:g}: {_op(at)}",
        f"  FAR there: {r['false_accepts_at_target']} of {r['impostor']} impostor pairs, "
        f"95% CI {low:.4%} to {high:.4%} (Clopper-Pearson); FRR {at['frr']:.2%}",
        f"current threshold: {_op(r['at_current']) if r['at_current'] else 'none (the model has no default)'}",
        f"best accuracy {r['best_accuracy']:.2%} at threshold {r['best_threshold']:.4f}",
    ]
    if not r["far_resolved"]:
        lines.append(
            _unmeasurable(r["target_far"], r["impostor"]) + "; the threshold is set by the few highest impostor scores"
        )
    if r["gallery_sizes"]:
        lines.append(
            f"gallery size G (target FAR {r['target_far']:g} that a stranger is named as anybody → per-pair FAR target/G):"
        )
        lines += [_gallery_line(row) for row in r["gallery_sizes"]]
        if any(row["extrapolated"] for row in r["gallery_sizes"]):
            first = next(row for row in r["gallery_sizes"] if row["extrapolated"])
            lines.append(_unmeasurable(first["per_pair_far"], r["impostor"]) + "; those thresholds are extrapolated")
    if r["table"]:
        lines.append(f"score table: {r['table']}")
    if r["plot"]:
        lines.append(f"plot: {r['plot']}")
    return "\n".join(lines)


def _unmeasurable(far: float, impostors: int) -> str:
    return (
        f"note: FAR {far:.3g} is below what {impostors} impostor pairs can measure "
        f"({far * impostors:.2g} false accepts expected, needs >= {MEASURABLE_FALSE_ACCEPTS:g}: "
        f">= {int(np.ceil(MEASURABLE_FALSE_ACCEPTS / far))} pairs)"
    )


def _gallery_line(row: dict[str, Any]) -> str:
    how = "extrapolated" if row["extrapolated"] else "measured"
    return (
        f"  G={row['gallery']:<5d} per-pair FAR {row['per_pair_far']:.0e}: threshold {row['threshold']:.4f} "
        f"({how}), FRR {row['frr']:.2%}"
    )


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
    chosen = result.at_target.threshold
    ax.axvline(chosen, color="black", linestyle="-", label=f"FAR {result.target_far:g}: {chosen:.3f}")
    if result.at_current is not None:
        current = result.at_current.threshold
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
    p = sub.add_parser("calibrate", help="measure the match threshold on labelled images, pairs or the gallery")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--identities", type=Path, help="CSV of identity,file: all within/between-identity pairs")
    source.add_argument("--pairs", type=Path, help="CSV of file_x,file_y,same (or deepface's Decision)")
    source.add_argument("--gallery", type=Path, help="folder of <person>/<images>: all within/between pairs")
    p.add_argument(
        "--root", type=Path, default=None, help="folder the --identities paths start from (default: its folder)"
    )
    p.add_argument("--target-far", type=float, default=1e-3, help="per-pair false-accept rate to pick a threshold for")
    p.add_argument("--write-table", type=Path, default=None, help="write the model's score table (JSON) here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of the score histograms here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p
