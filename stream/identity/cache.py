"""The enrollment cache: what was found in each gallery photo, so unchanged photos are not redone.

One file per model, ``<gallery>/.cache/<safe model_id>.npz`` (``np.savez``; loaded with
``allow_pickle=False``, so it holds only numbers and fixed-width strings, never pickles). It keys
each photo by its path relative to the gallery, size, mtime_ns and the SHA-256 of its content, and
stores the outcome: the read error, or the measurements of its largest face (for the gates) and
that face's embedding and norm. Gates, outlier removal and templates are recomputed from these
records on every run, so changing a gate needs no re-embedding.

The cache also records a signature of everything else that shapes a record (format version,
model, crop, detector settings); a cache made under another signature is ignored. A cache that
cannot be read is rebuilt with a warning. Writes go to a temporary file that replaces the old one
(``os.replace``), so a crash never leaves half a cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.identity.quality import FaceMeasure

__all__ = [
    "CACHE_DIR",
    "FileKey",
    "ImageRecord",
    "cache_path",
    "file_key",
    "load_records",
    "rename_folder",
    "save_records",
]

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"
FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 20
_FILE_MODE = 0o644
_MEASURE_FIELDS = ("side_px", "det_score", "blur", "second_ratio")


@dataclass(frozen=True, slots=True)
class FileKey:
    """A photo as it is on disk now: any change in these means it must be looked at again."""

    rel: str  # path relative to the gallery folder, with '/' separators
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """What one photo gave: a read error, no face, or its largest face's measurements and embedding."""

    key: FileKey
    error: str | None = None
    measure: FaceMeasure | None = None
    vector: np.ndarray | None = None  # (D,) float32 unit vector, present with ``measure``
    norm: float = 0.0

    def __post_init__(self) -> None:
        if (self.measure is None) != (self.vector is None):
            raise ValueError(f"ImageRecord {self.key.rel}: a face needs both its measurements and its vector")
        if self.error is not None and self.measure is not None:
            raise ValueError(f"ImageRecord {self.key.rel}: a read error cannot have a face")


def cache_path(gallery_dir: Path, model_id: str) -> Path:
    """``<gallery>/.cache/<model_id with unsafe characters replaced>.npz``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_id).strip(".") or "model"
    return gallery_dir / CACHE_DIR / f"{safe}.npz"


def file_key(root: Path, rel: str) -> FileKey:
    """Stat and hash ``root / rel`` (raises OSError when it cannot be read)."""
    path = root / rel
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return FileKey(rel, int(stat.st_size), int(stat.st_mtime_ns), digest.hexdigest())


# ------------------------------------------------------------------ saving


def save_records(path: Path, signature: str, records: Iterable[ImageRecord]) -> bool:
    """Write the cache atomically; on an OS error log a warning and return False."""
    return _write_arrays(path, _to_arrays(signature, list(records)))


def _to_arrays(signature: str, records: list[ImageRecord]) -> dict[str, np.ndarray]:
    dim = next((len(r.vector) for r in records if r.vector is not None), 0)
    vectors = np.zeros((len(records), dim), np.float32)
    measures = {name: np.full(len(records), np.nan) for name in _MEASURE_FIELDS}
    index = np.full(len(records), -1, np.int64)
    faces = np.zeros(len(records), np.int64)
    for row, record in enumerate(records):
        if record.measure is not None and record.vector is not None:
            vectors[row] = record.vector
            index[row], faces[row] = record.measure.index, record.measure.faces
            for name in _MEASURE_FIELDS:
                measures[name][row] = getattr(record.measure, name)
    return {
        "version": np.array(FORMAT_VERSION, np.int64),
        "signature": np.array(signature),
        "files": np.array([r.key.rel for r in records], dtype=str),
        "sizes": np.array([r.key.size for r in records], np.int64),
        "mtimes": np.array([r.key.mtime_ns for r in records], np.int64),
        "sha256": np.array([r.key.sha256 for r in records], dtype=str),
        "errors": np.array([r.error or "" for r in records], dtype=str),
        "has_error": np.array([r.error is not None for r in records], bool),
        "index": index,
        "faces": faces,
        **measures,
        "vectors": vectors,
        "norms": np.array([r.norm for r in records], np.float32),
    }


def rename_folder(gallery_dir: Path, old: str, new: str) -> int:
    """After ``<gallery>/<old>`` was renamed to ``<new>``: point every model's cache records of its photos
    at the new paths (content, size and mtime are unchanged, so nothing needs embedding again). An
    unreadable cache is left alone (it will be rebuilt); returns the records moved."""
    moved = 0
    folder = gallery_dir / CACHE_DIR
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            arrays = _read_arrays(path)
        except _BadCache:
            continue
        files = [str(f) for f in arrays["files"]]
        renamed = [f"{new}/{f[len(old) + 1 :]}" if f.startswith(f"{old}/") else f for f in files]
        changed = sum(a != b for a, b in zip(files, renamed, strict=True))
        if not changed:
            continue
        arrays["files"] = np.array(renamed, dtype=str)
        if _write_arrays(path, arrays):
            moved += changed
    return moved


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes it private; a cache is as readable as the photos
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        log.warning("%s: cannot write the enrollment cache (%s); continuing without it", path, exc.strerror or exc)
        return False
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return True


# ------------------------------------------------------------------ loading


class _BadCache(Exception):
    """The cache file is unreadable or inconsistent."""


def load_records(path: Path, signature: str) -> dict[str, ImageRecord]:
    """Records by relative path; empty when there is no cache, it is for other settings, or it is
    corrupt (then with a warning: it will be rebuilt)."""
    if not path.is_file():
        return {}
    try:
        arrays = _read_arrays(path)
        if int(arrays["version"]) != FORMAT_VERSION or str(arrays["signature"]) != signature:
            log.info("%s: made with other settings; re-enrolling every photo", path)
            return {}
        return _from_arrays(arrays)
    except _BadCache as exc:
        log.warning("%s: enrollment cache is corrupt (%s); rebuilding it", path, exc)
        return {}


_KEYS = (
    "version",
    "signature",
    "files",
    "sizes",
    "mtimes",
    "sha256",
    "errors",
    "has_error",
    "index",
    "faces",
    *_MEASURE_FIELDS,
    "vectors",
    "norms",
)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _KEYS if k not in data.files]
            if missing:
                raise _BadCache(f"missing {', '.join(missing)}")
            return {k: data[k] for k in _KEYS}
    except _BadCache:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise _BadCache(" ".join(str(exc).split()) or type(exc).__name__) from None


def _from_arrays(a: dict[str, np.ndarray]) -> dict[str, ImageRecord]:
    count = len(a["files"])
    per_file = [k for k in _KEYS if k not in ("version", "signature")]
    if any(a[k].ndim < 1 or len(a[k]) != count for k in per_file) or a["vectors"].ndim != 2:
        raise _BadCache("arrays of different lengths")
    vectors = a["vectors"].astype(np.float32)
    if not np.isfinite(vectors).all():
        raise _BadCache("non-finite embeddings")
    records = {}
    for row in range(count):
        record = _record(a, vectors, row)
        records[record.key.rel] = record
    return records


def _record(a: dict[str, np.ndarray], vectors: np.ndarray, row: int) -> ImageRecord:
    key = FileKey(str(a["files"][row]), int(a["sizes"][row]), int(a["mtimes"][row]), str(a["sha256"][row]))
    if bool(a["has_error"][row]):
        return ImageRecord(key, error=str(a["errors"][row]))
    if int(a["index"][row]) < 0:
        return ImageRecord(key)
    measure = FaceMeasure(
        index=int(a["index"][row]),
        faces=int(a["faces"][row]),
        **{name: float(a[name][row]) for name in _MEASURE_FIELDS},
    )
    vector = vectors[row].copy()
    vector.flags.writeable = False
    return ImageRecord(key, measure=measure, vector=vector, norm=float(a["norms"][row]))
