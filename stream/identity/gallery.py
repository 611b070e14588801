"""Gallery enrollment: ``gallery/<person>/*`` photos → one fused template per person.

The sub-folder name is the identity (its sub-folders count too); files in the gallery root are
ignored with a warning and hidden files and folders (such as ``.cache``) are skipped. For each
photo: read, detect, measure the largest face, embed it (in batches across photos), then gate it
(``stream.identity.quality``). Per person, outliers are removed and the accepted photos are fused
into a template with the official norm-weighted fusion (``templates.fuse``). One bad file never
stops the others: it becomes a ``Rejection`` with a short reason.

Per-photo outcomes are cached per model (``stream.identity.cache``), so a re-run only looks at new
or changed photos; gates, outliers and templates are recomputed from the records every run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stream.errors import UserError
from stream.faces.images import ImageReadError, list_images, read_bgr
from stream.faces.models import Models
from stream.faces.still import crop_faces, embed_stack
from stream.identity.cache import FileKey, ImageRecord, cache_path, file_key, load_records, save_records
from stream.identity.quality import EnrollGates, FaceMeasure, find_outliers, judge, measure_face, outlier_threshold
from stream.identity.templates import fuse
from trackers import check_array, check_finite

__all__ = ["Gallery", "PersonEntry", "Rejection", "enroll"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ result types


@dataclass(frozen=True, slots=True)
class PersonEntry:
    """One enrolled person: the fused template and the accepted photos it came from.

    template (D,) float32 unit vector; vectors (k, D) float32 unit vectors; norms (k,) float32;
    images: the k photos, relative to the gallery folder; quality: mean norm of the k photos.
    """

    name: str
    template: np.ndarray
    vectors: np.ndarray
    norms: np.ndarray
    images: tuple[str, ...]
    quality: float

    def __post_init__(self) -> None:
        sizes: dict[str, int] = {}
        for field, shape in (("template", ("d",)), ("vectors", ("k", "d")), ("norms", ("k",))):
            array = check_array(f"PersonEntry.{field}", getattr(self, field), np.float32, shape, sizes)
            check_finite(f"PersonEntry.{field}", array)
            object.__setattr__(self, field, array)
        object.__setattr__(self, "images", tuple(self.images))
        _require(bool(self.name), "PersonEntry.name: must not be empty")
        _require(sizes["k"] >= 1, f"PersonEntry {self.name}: needs at least one photo")
        _require(
            len(self.images) == sizes["k"],
            f"PersonEntry {self.name}: {len(self.images)} images for {sizes['k']} vectors",
        )
        length = float(np.linalg.norm(self.template))
        _require(abs(length - 1.0) < 1e-3, f"PersonEntry {self.name}: template must be unit-norm, has {length:.6f}")
        _require(math.isfinite(self.quality), f"PersonEntry {self.name}: quality must be finite")


@dataclass(frozen=True, slots=True)
class Rejection:
    """A photo (or a person's folder) that was not enrolled, and why."""

    person: str
    file: str  # relative to the gallery folder; the person's folder for person-level reasons
    reason: str


@dataclass(frozen=True, slots=True)
class Gallery:
    """Enrolled people (sorted by name) for one model, and everything that was rejected.

    ``measures``: what the gates measured of each photo with a face (relative path → its largest face)."""

    model_id: str
    people: tuple[PersonEntry, ...]
    rejections: tuple[Rejection, ...]
    measures: Mapping[str, FaceMeasure] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "people", tuple(self.people))
        object.__setattr__(self, "rejections", tuple(self.rejections))
        _require(bool(self.model_id), "Gallery.model_id: must not be empty")
        names = self.names
        _require(len(set(names)) == len(names), f"Gallery.people: repeated names in {names}")
        dims = {p.template.shape[0] for p in self.people}
        _require(len(dims) <= 1, f"Gallery.people: templates of different sizes {sorted(dims)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.people)

    @property
    def templates(self) -> np.ndarray:
        """(P, D) float32 matrix of unit templates, in the order of ``names`` ((0, 0) when empty)."""
        if not self.people:
            return np.zeros((0, 0), np.float32)
        return np.stack([p.template for p in self.people]).astype(np.float32)

    def person(self, name: str) -> PersonEntry | None:
        return next((p for p in self.people if p.name == name), None)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


# ------------------------------------------------------------------ enroll


@dataclass(frozen=True, slots=True)
class _Folder:
    """One person's folder: its photos and its non-image files, relative to the gallery."""

    person: str
    images: tuple[str, ...]
    others: tuple[str, ...]


def enroll(
    gallery_dir: Path,
    models: Models,
    gates: EnrollGates = EnrollGates(),  # noqa: B008 - frozen, so a shared default is safe
    use_cache: bool = True,
    progress: bool = True,
) -> Gallery:
    """Enroll every ``<gallery_dir>/<person>/`` folder; raises UserError when the folder is missing."""
    gallery_dir = Path(gallery_dir)
    if not gallery_dir.is_dir():
        raise UserError(f"{gallery_dir}: gallery folder not found (expected {gallery_dir}/<person>/<photos>)")
    folders = _scan(gallery_dir)
    records = _records(gallery_dir, folders, models, use_cache, progress)
    threshold = outlier_threshold(gates, models.embedder.model_id)
    people: list[PersonEntry] = []
    rejections: list[Rejection] = []
    for folder in folders:
        entry, rejected = _enroll_person(folder, records, gates, threshold)
        people += [entry] if entry is not None else []
        rejections += rejected
    measures = {rel: r.measure for rel, r in records.items() if r.measure is not None}
    return Gallery(models.embedder.model_id, tuple(people), tuple(rejections), measures)


def _scan(gallery_dir: Path) -> list[_Folder]:
    """Person folders sorted by name; files in the gallery root are reported and ignored."""
    folders = []
    for entry in sorted(gallery_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            log.warning("%s: ignored: gallery photos go in a sub-folder named after the person", entry)
            continue
        images, others = list_images(entry, recursive=True)
        folders.append(_Folder(entry.name, _rels(images, gallery_dir), _rels(others, gallery_dir)))
    return folders


def _rels(paths: Sequence[Path], root: Path) -> tuple[str, ...]:
    return tuple(p.relative_to(root).as_posix() for p in paths)


def _enroll_person(
    folder: _Folder, records: dict[str, ImageRecord], gates: EnrollGates, threshold: float
) -> tuple[PersonEntry | None, list[Rejection]]:
    """The person's entry (None when no photo passed) and their rejected files."""
    rejected = [
        Rejection(folder.person, rel, f"not an image file ({Path(rel).suffix or 'no extension'})")
        for rel in folder.others
    ]
    if not folder.images:
        return None, [Rejection(folder.person, folder.person, "no images"), *rejected]
    accepted: list[ImageRecord] = []
    for rel in folder.images:
        record = records[rel]
        reason = record.error if record.error is not None else judge(record.measure, gates)
        if reason is None:
            accepted.append(record)
        else:
            rejected.append(Rejection(folder.person, rel, reason))
    accepted, outliers = _drop_outliers(folder.person, accepted, gates, threshold)
    rejected += outliers
    rejected.sort(key=lambda r: r.file)
    return (_person_entry(folder.person, accepted) if accepted else None), rejected


def _drop_outliers(
    person: str, accepted: list[ImageRecord], gates: EnrollGates, threshold: float
) -> tuple[list[ImageRecord], list[Rejection]]:
    if len(accepted) < gates.outlier_min_images:
        return accepted, []
    vectors, norms = _stack(accepted)
    removed = find_outliers(vectors, norms, threshold, gates.outlier_min_images)
    gone = {row for row, _ in removed}
    rejections = [
        Rejection(person, accepted[row].key.rel, f"outlier (cosine {cos:.2f} to the person's other photos)")
        for row, cos in removed
    ]
    return [r for i, r in enumerate(accepted) if i not in gone], rejections


def _stack(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.stack([r.vector for r in records if r.vector is not None]).astype(np.float32)
    norms = np.array([r.norm for r in records], np.float32)
    return vectors, norms


def _person_entry(person: str, accepted: Sequence[ImageRecord]) -> PersonEntry:
    vectors, norms = _stack(accepted)
    return PersonEntry(
        name=person,
        template=fuse(vectors, norms),
        vectors=vectors,
        norms=norms,
        images=tuple(r.key.rel for r in accepted),
        quality=float(norms.mean()),
    )


# ------------------------------------------------------------------ per-photo records (cached)


def _records(
    gallery_dir: Path, folders: Sequence[_Folder], models: Models, use_cache: bool, progress: bool
) -> dict[str, ImageRecord]:
    """A record for every photo: from the cache when its key is unchanged, else freshly made."""
    rels = [rel for folder in folders for rel in folder.images]
    keys, unreadable = _keys(gallery_dir, rels)
    path = cache_path(gallery_dir, models.embedder.model_id)
    signature = _signature(models)
    cached = load_records(path, signature) if use_cache else {}
    fresh = [key for key in keys if not _same(cached.get(key.rel), key)]
    records = {key.rel: cached[key.rel] for key in keys if _same(cached.get(key.rel), key)}
    records.update((r.key.rel, r) for r in _analyse(gallery_dir, fresh, models, progress))
    if use_cache and (fresh or set(cached) != set(records)):
        save_records(path, signature, [records[key.rel] for key in keys])
    records.update(unreadable)
    return records


def _keys(gallery_dir: Path, rels: Sequence[str]) -> tuple[list[FileKey], dict[str, ImageRecord]]:
    """File keys, and records for files that cannot even be opened (never cached)."""
    keys, unreadable = [], {}
    for rel in rels:
        try:
            keys.append(file_key(gallery_dir, rel))
        except OSError as exc:
            unreadable[rel] = ImageRecord(FileKey(rel, -1, -1, ""), error=f"cannot read file ({exc.strerror or exc})")
    return keys, unreadable


def _same(record: ImageRecord | None, key: FileKey) -> bool:
    return record is not None and record.key == key


def _signature(models: Models) -> str:
    """Everything besides the file that shapes a record: a cache made under another is stale."""
    embedder = models.embedder
    settings = getattr(models.detector, "settings", None)
    detector = (
        f"min_face_px={settings.min_face_px},thresholds={settings.thresholds},factor={settings.factor},"
        f"detect_width={settings.detect_width},edge_pad={settings.edge_pad}"
        if settings is not None
        else type(models.detector).__name__
    )
    return f"model={embedder.model_id};crop={embedder.crop_kind}{embedder.crop_size};detector={detector}"


def _analyse(gallery_dir: Path, keys: Sequence[FileKey], models: Models, progress: bool) -> list[ImageRecord]:
    """Read, detect and measure each photo, embedding the largest faces one batch at a time."""
    records: list[ImageRecord] = []
    with tqdm(total=len(keys), unit="img", desc="enroll", disable=not progress or not keys) as bar:
        for chunk in _chunks(keys, models.batch_size):
            looked = []
            for key in chunk:
                looked.append(_look(gallery_dir / key.rel, models))
                bar.update(1)
            records += _embed_chunk(chunk, looked, models)
    return records


def _chunks(items: Sequence[FileKey], size: int) -> Iterator[Sequence[FileKey]]:
    step = max(1, size)
    for start in range(0, len(items), step):
        yield items[start : start + step]


@dataclass(frozen=True, slots=True)
class _Look:
    """One photo before embedding: an error, no face, or its largest face's measure and crop."""

    error: str | None = None
    measure: FaceMeasure | None = None
    crop: np.ndarray | None = None


def _look(path: Path, models: Models) -> _Look:
    from stream.faces.detector import FaceDetectionError

    try:
        image = read_bgr(path)
    except ImageReadError as exc:
        return _Look(error=str(exc).removeprefix(f"{path}: "))
    try:
        detections = models.detector.detect_one(image)
    except FaceDetectionError as exc:
        log.warning("%s: face detection failed: %s", path, exc)
        return _Look(error="face detection failed")
    faces = crop_faces(image, detections, models.embedder)
    measure = measure_face(detections, faces.aligned)
    if measure is None:
        return _Look()
    return _Look(measure=measure, crop=faces.crops[measure.index])


def _embed_chunk(keys: Sequence[FileKey], looked: Sequence[_Look], models: Models) -> list[ImageRecord]:
    crops = [look.crop for look in looked if look.crop is not None]
    vectors, norms = embed_stack(models.embedder, crops) if crops else (np.zeros((0, 0), np.float32), np.zeros(0))
    out, row = [], 0
    for key, look in zip(keys, looked, strict=True):
        if look.crop is None:
            out.append(ImageRecord(key, error=look.error))
            continue
        vector = np.asarray(vectors[row], np.float32)
        out.append(ImageRecord(key, measure=look.measure, vector=vector, norm=float(norms[row])))
        row += 1
    return out
