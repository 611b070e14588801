"""The library: the people the app knows, the unknown faces it has seen, and what people decide about
both. One API for the web pages (``/people``, ``/unknowns``), the commands (``run.py unknowns``,
``name``, ``not-this``, ``rematch``) and the app; every result is a frozen view with ``to_dict()`` (the
REST shape).

**Where things live.** Photos of known people stay in the gallery folder (``<gallery>/<person>/``),
enrolled as ever by ``stream.identity.gallery.enroll`` (gates, outliers, cache). Everything else is in
the event store, the single source of truth across processes: the remembered faces, their labels, the
review decisions on them (``ignored``, ``pin``, ``detached``) and the negative examples.

**Live changes.** Every change re-enrols the folder (only new or changed photos are embedded: the
cache) and builds a new immutable ``Matcher`` (templates, the threshold for the new gallery size and
the negative examples) in the calling thread, then publishes it in the ``GallerySlot``. The
recognition thread takes it at its next batch; tracks on screen are re-decided at their next vote
(``TrackVoter.set_matcher``). ``sync()`` re-enrols only when the folder (file names, sizes, mtimes) or
the store's negative examples changed since the last publication: call it to pick up hand edits or
another process's decisions.

**People** (``people``, ``person``, ``add_photos``, ``delete_photo``, ``delete_person``,
``rename_person``): each person with their photos, each photo used or rejected with its reason, the
template's quality. Bad input (a name that is not one plain folder name, a file that is not a whole
image, an empty or huge file, a photo or person that is not there) raises ``BadInput``, ``NotFound`` or
``Conflict`` (``UserError`` subclasses, one clear line) and leaves the gallery untouched: uploads are
checked in full and written to a hidden folder before they are moved in, renames and deletes are one
``rename`` of the folder. Stored names never come from the client: see ``stream.identity.photos``.

**Unknowns** (``unknowns``, ``group``, ``name_group``, ``ignore_group``, ``merge_groups``,
``remove_face``, ``ignored_groups``, ``unignore_group``): unnamed stored faces of the model, grouped
(``stream.identity.unknowns``); faces within the threshold of an ignored example are hidden. Naming a
group relabels all its faces, their tracks and identity events in the store (``label_source = user``),
copies its best crops that pass the enrolment gates into ``<gallery>/<person>/unknown-<face id>.jpg``
(at most ``photos_per_name``) and re-enrols. Ignoring keeps up to ``examples_per_ignore`` of its
templates as negative examples against everybody.

**Not this person** (``not_this_person(event_id)``): the track's stored template becomes an impostor
example of the person the event named, and the track's face, track row and identity events are
relabelled unknown (so the face shows up among the unknowns, to be named right).

**Re-match** (``rematch``): every stored face of the model (not ignored, not labelled by a person) is
decided again by the current matcher on its stored template; what changed is reported and, unless
``apply=False``, relabelled (``label_source = rematch``).

Thread safety: every method takes the library's lock, so a web server may call it from several
threads; the store connection and the models it enrols with are its own (the pipeline's detector and
embedder belong to their threads; see ``stream.app``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.config import AppConfig, RecognitionConfig
from stream.errors import UserError
from stream.faces.images import list_images
from stream.faces.models import Models
from stream.identity.ann import IndexSettings
from stream.identity.cache import rename_folder
from stream.identity.gallery import Gallery, enroll
from stream.identity.matcher import Matcher, Negatives
from stream.identity.photos import (
    BadInput,
    Conflict,
    NotFound,
    PhotoLimits,
    Upload,
    check_photo,
    person_name,
    photo_file_name,
)
from stream.identity.quality import EnrollGates
from stream.identity.slot import GallerySlot
from stream.identity.thresholds import threshold_from_config
from stream.identity.unknowns import Group, best_offered, build_groups, near_ignored
from stream.store import FaceRow, NegativeRecord, RelabelCounts, Store, iso_utc

__all__ = [
    "Change",
    "Correction",
    "IgnoredGroup",
    "Ignoring",
    "Library",
    "LibraryView",
    "Naming",
    "PersonView",
    "PhotoView",
    "RematchChange",
    "RematchReport",
    "ReviewSettings",
    "UnknownsView",
    "gallery_matcher",
]

log = logging.getLogger(__name__)

UNKNOWN_PREFIX = "unknown-"  # file names of crops a naming copies into the gallery


# ------------------------------------------------------------------ settings and views


@dataclass(frozen=True, slots=True)
class ReviewSettings:
    """max_faces: the newest unnamed faces that are grouped (grouping is O(n²) in memory: 4000 faces take
    ~64 MB for a moment); crops_per_group: crops a group shows; photos_per_name: best offered crops a
    naming copies into the gallery; examples_per_ignore: templates an ignored group keeps as negative
    examples."""

    max_faces: int = 4000
    crops_per_group: int = 6
    photos_per_name: int = 10
    examples_per_ignore: int = 50

    def __post_init__(self) -> None:
        for name in ("max_faces", "crops_per_group", "photos_per_name", "examples_per_ignore"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ReviewSettings.{name}: must be an integer >= 1, got {value!r}")


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


@dataclass(frozen=True, slots=True)
class PhotoView:
    """One file of a person's folder: ``used`` in the template, or ``rejected`` with the reason, and
    what the gates measured of its largest face (None when it has none)."""

    file: str  # relative to the person's folder
    status: str  # "used" | "rejected"
    reason: str | None
    face_px: float | None = None
    blur: float | None = None
    det_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "status": self.status,
            "reason": self.reason,
            "face_px": _round(self.face_px),
            "blur": _round(self.blur),
            "det_score": _round(self.det_score, 3),
        }


@dataclass(frozen=True, slots=True)
class PersonView:
    """A person of the gallery: enrolled or not, the template's quality (mean feature norm of the
    photos used), every photo with its status, and how many impostor examples they have."""

    name: str
    enrolled: bool
    quality: float | None
    photos: tuple[PhotoView, ...]
    impostors: int = 0
    reason: str | None = None  # why nobody could be enrolled from the folder (e.g. "no images")

    @property
    def used(self) -> int:
        return sum(p.status == "used" for p in self.photos)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "enrolled": self.enrolled,
            "quality": _round(self.quality, 3),
            "used": self.used,
            "rejected": len(self.photos) - self.used,
            "impostors": self.impostors,
            "reason": self.reason,
            "photos": [p.to_dict() for p in self.photos],
        }


@dataclass(frozen=True, slots=True)
class LibraryView:
    """Everybody in the gallery, as last enrolled (``version``: the matcher publication it belongs to)."""

    model_id: str
    threshold: float
    version: int
    people: tuple[PersonView, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "threshold": round(self.threshold, 4),
            "version": self.version,
            "people": [p.to_dict() for p in self.people],
        }


@dataclass(frozen=True, slots=True)
class Change:
    """The outcome of a change to the gallery: the person as now enrolled (None once deleted), the files
    it concerned (added, deleted) and the matcher version the streams now use."""

    action: str  # add_photos | delete_photo | delete_person | rename_person
    person: PersonView | None
    files: tuple[str, ...]
    version: int
    previous: str | None = None  # rename: the old name
    relabelled: RelabelCounts = RelabelCounts()  # noqa: RUF009 - frozen, so a shared default is safe

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "person": None if self.person is None else self.person.to_dict(),
            "files": list(self.files),
            "version": self.version,
            "previous": self.previous,
            "relabelled": self.relabelled.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class UnknownsView:
    """The groups of unnamed faces (``since``: only groups seen since then). ``faces``: unnamed faces
    grouped; ``hidden``: unnamed faces left out because they look like an ignored group; ``limited``:
    only the newest ``max_faces`` were grouped."""

    model_id: str
    threshold: float
    since: float | None
    groups: tuple[Group, ...]
    faces: int
    hidden: int
    limited: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "threshold": round(self.threshold, 4),
            "since": None if self.since is None else iso_utc(self.since),
            "faces": self.faces,
            "hidden": self.hidden,
            "limited": self.limited,
            "groups": [g.to_dict() for g in self.groups],
        }


@dataclass(frozen=True, slots=True)
class Naming:
    """A group named: the crops copied into the gallery (with their enrolment status) and what was
    relabelled in the store."""

    group: int
    person: PersonView
    faces: int
    photos: tuple[PhotoView, ...]
    relabelled: RelabelCounts
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "person": self.person.to_dict(),
            "faces": self.faces,
            "photos": [p.to_dict() for p in self.photos],
            "relabelled": self.relabelled.to_dict(),
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Ignoring:
    """A group ignored: its faces, and the templates kept as negative examples."""

    group: int
    faces: int
    examples: int
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "faces": self.faces, "examples": self.examples, "version": self.version}


@dataclass(frozen=True, slots=True)
class IgnoredGroup:
    """An ignored group: its id (the group's when it was ignored), faces marked with it and examples."""

    id: int
    faces: int
    examples: int
    first_seen: float | None
    last_seen: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "faces": self.faces,
            "examples": self.examples,
            "first_seen": None if self.first_seen is None else iso_utc(self.first_seen),
            "last_seen": None if self.last_seen is None else iso_utc(self.last_seen),
        }


@dataclass(frozen=True, slots=True)
class Correction:
    """ "Not this person" on an event: the track's face kept as an impostor example of ``person``."""

    event_id: int
    person: str
    face_id: int
    stream: str
    epoch: int
    track_id: int
    relabelled: RelabelCounts
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "person": self.person,
            "face_id": self.face_id,
            "stream": self.stream,
            "epoch": self.epoch,
            "track_id": self.track_id,
            "relabelled": self.relabelled.to_dict(),
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class RematchChange:
    """A stored face whose decision changed: ``before`` → ``after`` (None: unknown), at ``score`` (its
    best cosine to anybody)."""

    face_id: int
    run_id: str
    stream: str
    epoch: int
    track_id: int
    first_time: float
    last_time: float
    before: str | None
    after: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "face_id": self.face_id,
            "run_id": self.run_id,
            "stream": self.stream,
            "epoch": self.epoch,
            "track_id": self.track_id,
            "first_seen": iso_utc(self.first_time),
            "last_seen": iso_utc(self.last_time),
            "before": self.before,
            "after": self.after,
            "score": round(self.score, 4),
        }


@dataclass(frozen=True, slots=True)
class RematchReport:
    """What ``rematch`` found: faces checked, those that changed, faces left alone because a person
    labelled them, and (when applied) the rows relabelled."""

    model_id: str
    since: float | None
    checked: int
    changes: tuple[RematchChange, ...]
    kept_user_labels: int
    applied: bool
    relabelled: RelabelCounts

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "since": None if self.since is None else iso_utc(self.since),
            "checked": self.checked,
            "changed": len(self.changes),
            "kept_user_labels": self.kept_user_labels,
            "applied": self.applied,
            "relabelled": self.relabelled.to_dict(),
            "changes": [c.to_dict() for c in self.changes],
        }


# ------------------------------------------------------------------ the matcher of a gallery


def gallery_matcher(gallery: Gallery, recognition: RecognitionConfig, negatives: Negatives | None = None) -> Matcher:
    """The matcher of an enrolled gallery: its threshold for the gallery's size (``threshold_from_config``),
    ``recognition.min_margin``, and the negative examples."""
    choice = threshold_from_config(gallery.model_id, recognition, max(1, len(gallery.people)))
    if not gallery.people:
        return Matcher((), np.zeros((0, 512), np.float32), choice.threshold, recognition.min_margin)
    return Matcher.from_gallery(
        gallery,
        choice.threshold,
        recognition.min_margin,
        negatives=negatives,
        index=IndexSettings.from_recognition(recognition),
    )


# ------------------------------------------------------------------ the library


class Library:
    """The gallery folder, the review of unknown faces, negative examples (see the module notes).

    ``models``: the detector and embedder to enrol with, or a function that builds them on first need
    (the app passes one: enrolling must not use the pipeline's own models while they run).
    ``model_id``: the embedder's id (None: asked of the models). ``store``: opens the library's own
    connection to the event store (None: the store is off, and the unknowns, negatives and re-matching
    with it). ``slot``: where matchers are published (None: a new one, made at ``load``).
    """

    def __init__(
        self,
        gallery_dir: Path,
        config: AppConfig,
        *,
        models: Models | Callable[[], Models],
        model_id: str | None = None,
        store: Callable[[], Store] | None = None,
        slot: GallerySlot | None = None,
        gates: EnrollGates = EnrollGates(),  # noqa: B008 - frozen, so a shared default is safe
        limits: PhotoLimits = PhotoLimits(),  # noqa: B008
        settings: ReviewSettings = ReviewSettings(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gallery_dir = Path(gallery_dir)
        self._config = config
        self._models_source = models
        self._models = models if isinstance(models, Models) else None
        self._model_id = model_id
        self._store_source = store
        self._store: Store | None = None
        self._slot = slot
        self.gates = gates
        self.limits = limits
        self.settings = settings
        self._clock = clock
        self._lock = threading.RLock()
        self._gallery: Gallery | None = None
        self._impostors: dict[str, int] = {}
        self._stamp: tuple[Any, ...] | None = None

    # ---------------------------------------------------------------- state

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = self._enrol_models().embedder.model_id
        return self._model_id

    @property
    def slot(self) -> GallerySlot:
        """Where the current matcher is published (``load`` first)."""
        with self._lock:
            if self._slot is None:
                self.load()
            assert self._slot is not None
            return self._slot

    @property
    def matcher(self) -> Matcher:
        return self.slot.matcher

    @property
    def gallery(self) -> Gallery | None:
        """The enrolled gallery now (None before ``load``)."""
        with self._lock:
            return self._gallery

    @property
    def version(self) -> int:
        return self.slot.version

    @property
    def group_threshold(self) -> float:
        """The cosine above which faces are one person when grouping unknowns: the model's threshold
        for a gallery of one (per-pair FAR ``recognition.target_far``)."""
        return threshold_from_config(self.model_id, self._config.recognition, 1).threshold

    def load(self, models: Models | None = None) -> Matcher:
        """Enrol the gallery (with ``models``, e.g. the pipeline's before its threads start, else the
        library's own) and publish its matcher; returns it."""
        with self._lock:
            if models is not None and self._model_id is None:
                self._model_id = models.embedder.model_id
            return self._refresh(models)

    def reload(self) -> LibraryView:
        """Enrol the folder again and publish (after hand edits)."""
        with self._lock:
            self._refresh()
            return self._view()

    def sync(self) -> bool:
        """Re-enrol and publish when the folder or the negative examples changed since the last
        publication (cheap otherwise: a listing of the folder and one query); True when it did."""
        with self._lock:
            if self._gallery is not None and self._fingerprint() == self._stamp:
                return False
            self._refresh()
            return True

    def close(self) -> None:
        """Close the library's store connection (a later call opens a new one)."""
        with self._lock:
            store, self._store = self._store, None
            if store is not None:
                with contextlib.suppress(UserError):
                    store.close()

    # ---------------------------------------------------------------- people

    def people(self) -> LibraryView:
        """Everybody, as last enrolled (``sync`` first to see hand edits)."""
        with self._lock:
            self._loaded()
            return self._view()

    def person(self, name: str) -> PersonView:
        with self._lock:
            self._loaded()
            folder = self._person_folder(name)
            view = self._person_view(folder.name)
            assert view is not None
            return view

    def photo_path(self, person: str, file: str) -> Path:
        """The file of a person's photo (to serve it); ``NotFound`` unless it is one of their files."""
        with self._lock:
            folder = self._person_folder(person)
            return folder / self._own_file(folder, file)

    def add_photos(self, person: str, uploads: Sequence[Upload]) -> Change:
        """Add photos to a person (made when new); all or nothing: one bad upload refuses them all."""
        with self._lock:
            name = person_name(person)
            if not uploads:
                raise BadInput("no photos to add")
            if len(uploads) > self.limits.max_files:
                raise BadInput(f"too many photos at once ({len(uploads)}; at most {self.limits.max_files})")
            extensions = [check_photo(u, self.limits) for u in uploads]
            folder = self.gallery_dir / name
            self._check_new_name(name, allow=name if folder.is_dir() else None)
            taken = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
            names = []
            for upload, extension in zip(uploads, extensions, strict=True):
                names.append(photo_file_name(upload.name, extension, taken))
                taken.add(names[-1])
            self._move_in(folder, [(n, u.data) for n, u in zip(names, uploads, strict=True)])
            self._refresh()
            return Change("add_photos", self._person_view(name), tuple(names), self.version)

    def delete_photo(self, person: str, file: str) -> Change:
        with self._lock:
            folder = self._person_folder(person)
            rel = self._own_file(folder, file)
            (folder / rel).unlink()
            self._refresh()
            return Change("delete_photo", self._person_view(folder.name), (rel,), self.version)

    def delete_person(self, person: str) -> Change:
        """Delete the person's folder and their impostor examples (their past events keep the name)."""
        with self._lock:
            folder = self._person_folder(person)
            files = tuple(p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file())
            trash = self.gallery_dir / f".deleted-{uuid.uuid4().hex}"
            os.replace(folder, trash)
            try:
                if self._store_source is not None:
                    self._review_store().delete_negatives(person=folder.name)
            except BaseException:
                os.replace(trash, folder)
                raise
            shutil.rmtree(trash, ignore_errors=True)
            self._refresh()
            return Change("delete_person", None, files, self.version)

    def rename_person(self, old: str, new: str) -> Change:
        """Rename a person: the folder, and in the store every face, track, event and impostor example
        of theirs (so history follows the new name)."""
        with self._lock:
            folder = self._person_folder(old)
            name = person_name(new, field="new name")
            if name == folder.name:
                raise BadInput(f"new name: {name!r} is already the person's name")
            self._check_new_name(name, allow=folder.name)
            target = self.gallery_dir / name
            step = self.gallery_dir / f".rename-{uuid.uuid4().hex}"  # case-only renames on any filesystem
            os.replace(folder, step)
            os.replace(step, target)
            try:
                counts = (
                    self._review_store().rename_person(folder.name, name)
                    if self._store_source is not None
                    else RelabelCounts()
                )
            except BaseException:
                os.replace(target, step)
                os.replace(step, folder)
                raise
            rename_folder(self.gallery_dir, folder.name, name)
            self._refresh()
            view = self._person_view(name)
            return Change("rename_person", view, (), self.version, previous=folder.name, relabelled=counts)

    # ---------------------------------------------------------------- unknowns

    def unknowns(self, since: float | None = None) -> UnknownsView:
        """The groups of unnamed faces, most recently seen first (``since``: seen since then, Unix s)."""
        with self._lock:
            faces, hidden, limited = self._unnamed()
            groups = build_groups(faces, self.group_threshold, self.gates, self.settings.crops_per_group)
            if since is not None:
                groups = [g for g in groups if g.last_seen >= since]
            return UnknownsView(self.model_id, self.group_threshold, since, tuple(groups), len(faces), hidden, limited)

    def group(self, group_id: int) -> Group:
        with self._lock:
            return self._find_group(group_id)[0]

    def face_crop(self, face_id: int) -> bytes:
        """A stored face's crop (JPEG bytes)."""
        with self._lock:
            data = self._review_store().face_crop(_int(face_id, "face"))
            if data is None:
                raise NotFound(f"no stored face {face_id}")
            return data

    def name_group(self, group_id: int, person: str) -> Naming:
        """Name a group: relabel its faces, tracks and events, add its best gated crops to the gallery."""
        with self._lock:
            name = person_name(person)
            folder = self.gallery_dir / name
            self._check_new_name(name, allow=name if folder.is_dir() else None)
            group, faces = self._find_group(group_id)
            store = self._review_store()
            crops = best_offered(group, faces, self.gates, self.settings.photos_per_name)
            files = []
            for crop in crops:
                data = store.face_crop(crop.face_id)
                file = f"{UNKNOWN_PREFIX}{crop.face_id}.jpg"
                if data is not None and not (folder / file).exists():
                    files.append((file, data))
            staged = self._stage(files)
            try:
                counts = store.relabel_faces(group.faces, name, source="user", at=self._clock())
                self._move_staged(staged, folder, [f for f, _ in files])
            finally:
                shutil.rmtree(staged, ignore_errors=True)
            self._refresh()
            view = self._person_view(name)
            assert view is not None
            added = {f for f, _ in files}
            photos = tuple(p for p in view.photos if p.file in added)
            return Naming(group.id, view, group.count, photos, counts, self.version)

    def ignore_group(self, group_id: int) -> Ignoring:
        """Ignore a group: its faces are never offered again, and its templates count against everybody."""
        with self._lock:
            group, faces = self._find_group(group_id)
            ids = set(group.faces)
            members = sorted((f for f in faces if f.face_id in ids), key=lambda f: (-f.norm, f.face_id))
            members = members[: self.settings.examples_per_ignore]
            now = self._clock()
            examples = [
                NegativeRecord(
                    "ignored", None, f.model_id, f.norm, f.embedding, now, face_id=f.face_id, group_id=group.id
                )
                for f in members
            ]
            marked = self._review_store().ignore_faces(group.faces, group.id, examples)
            self._republish()
            return Ignoring(group.id, marked, len(examples), self.version)

    def ignored_groups(self) -> tuple[IgnoredGroup, ...]:
        with self._lock:
            store = self._review_store()
            faces = store.faces(model_id=self.model_id, ignored=True)
            examples: dict[int, int] = {}
            for row in store.negatives(self.model_id, kind="ignored"):
                if row.group_id is not None:
                    examples[row.group_id] = examples.get(row.group_id, 0) + 1
            ids = sorted({f.ignored for f in faces if f.ignored is not None} | set(examples))
            out = []
            for gid in ids:
                members = [f for f in faces if f.ignored == gid]
                out.append(
                    IgnoredGroup(
                        gid,
                        len(members),
                        examples.get(gid, 0),
                        min((f.first_time for f in members), default=None),
                        max((f.last_time for f in members), default=None),
                    )
                )
            return tuple(out)

    def unignore_group(self, group_id: int) -> Ignoring:
        with self._lock:
            gid = _int(group_id, "group")
            faces, examples = self._review_store().unignore(gid)
            if not faces and not examples:
                raise NotFound(f"no ignored group {gid}")
            self._republish()
            return Ignoring(gid, faces, examples, self.version)

    def merge_groups(self, group_id: int, other_id: int) -> Group:
        """Merge two groups (they stay together from now on); the merged group (the smaller id)."""
        with self._lock:
            if _int(group_id, "group") == _int(other_id, "group"):
                raise BadInput(f"cannot merge group {group_id} with itself")
            first, _ = self._find_group(group_id)
            second, _ = self._find_group(other_id)
            pin = min(first.id, second.id)
            self._review_store().pin_faces([*first.faces, *second.faces], pin)
            return self._find_group(pin)[0]

    def remove_face(self, group_id: int, face_id: int) -> Group | None:
        """Take a face out of its group (it becomes a group of its own); the rest of the group, or None."""
        with self._lock:
            group, _ = self._find_group(group_id)
            face = _int(face_id, "face")
            if face not in group.faces:
                raise NotFound(f"face {face} is not in group {group.id}")
            self._review_store().detach_faces([face])
            rest = [f for f in group.faces if f != face]
            if not rest:
                return None
            groups = {f: g for g in self.unknowns().groups for f in g.faces}
            return groups.get(rest[0])

    # ---------------------------------------------------------------- negatives and the past

    def not_this_person(self, event_id: int) -> Correction:
        """The event named the wrong person: keep the track's template as an impostor example of that
        person and relabel the track unknown."""
        with self._lock:
            store = self._review_store()
            eid = _int(event_id, "event")
            event = store.event(eid)
            if event is None:
                raise NotFound(f"no event {eid}")
            if event.person is None:
                raise BadInput(f"event {eid} ({event.kind}) names nobody")
            if event.run_id is None or event.epoch is None or event.track_id is None:
                raise BadInput(f"event {eid} ({event.kind}) is not about a track of a recorded run")
            faces = store.track_faces(event.run_id, event.stream, event.epoch, event.track_id)
            if not faces:
                raise Conflict(
                    f"the face of track {event.stream}:{event.epoch}:{event.track_id} is not stored yet (it is "
                    "written when the track ends); try again once it has left"
                )
            face = faces[-1]
            example = NegativeRecord(
                "impostor", event.person, face.model_id, face.norm, face.embedding, self._clock(), face_id=face.face_id
            )
            marked = store.negatives(face.model_id, kind="impostor", person=event.person)
            if any(row.face_id == face.face_id for row in marked) and face.person != event.person:
                counts = RelabelCounts()  # marked before: nothing more to do
            elif face.person == event.person:
                counts = store.relabel_faces([face.face_id], None, source="user", at=self._clock(), negatives=[example])
            else:
                counts = RelabelCounts(negatives=store.add_negatives([example]))
            self._republish()
            return Correction(
                eid, event.person, face.face_id, event.stream, event.epoch, event.track_id, counts, self.version
            )

    def rematch(self, since: float | None = None, apply: bool = True) -> RematchReport:
        """Decide every stored face of the model again with the current matcher (module notes)."""
        with self._lock:
            store = self._review_store()
            matcher = self.matcher
            faces = [f for f in store.faces(model_id=self.model_id, since=since) if f.ignored is None]
            kept = sum(f.label_source == "user" for f in faces)
            faces = [f for f in faces if f.label_source != "user"]
            changes = []
            for start in range(0, len(faces), 1024):
                chunk = faces[start : start + 1024]
                matches = matcher.match(np.stack([f.embedding for f in chunk])) if len(matcher) else None
                for i, f in enumerate(chunk):
                    decided = matcher.decide(matches[i]) if matches is not None else None
                    after = decided.person if decided is not None else None
                    if after != f.person:
                        score = decided.confidence if decided is not None else -1.0
                        changes.append(_change(f, after, score))
            counts = RelabelCounts()
            if apply:
                now = self._clock()
                for after in sorted({c.after for c in changes}, key=lambda p: (p is not None, p or "")):
                    ids = [c.face_id for c in changes if c.after == after]
                    counts = counts + store.relabel_faces(ids, after, source="rematch", at=now)
            return RematchReport(self.model_id, since, len(faces) + kept, tuple(changes), kept, apply, counts)

    # ---------------------------------------------------------------- internals: enrolment

    def _enrol_models(self) -> Models:
        if self._models is None:
            source = self._models_source
            assert callable(source)
            self._models = source()
        return self._models

    def _loaded(self) -> None:
        if self._gallery is None:
            self._refresh()

    def _refresh(self, models: Models | None = None) -> Matcher:
        """Enrol the folder, then publish."""
        self._stamp = self._fingerprint()
        if self.gallery_dir.is_dir():
            gallery = enroll(
                self.gallery_dir,
                models or self._enrol_models(),
                self.gates,
                use_cache=self._config.gallery.cache,
                progress=False,
            )
        else:
            gallery = Gallery(self.model_id, (), ())
        self._gallery = gallery
        return self._publish()

    def _republish(self) -> Matcher:
        """Publish again with the gallery as enrolled (the negative examples changed)."""
        self._loaded()
        self._stamp = self._fingerprint()
        return self._publish()

    def _publish(self) -> Matcher:
        gallery = self._gallery
        assert gallery is not None
        negatives = self._negatives()
        matcher = gallery_matcher(gallery, self._config.recognition, negatives)
        if self._slot is None:
            self._slot = GallerySlot(matcher)
        else:
            self._slot.publish(matcher)
        log.info(
            "library: %d people (%s), %d negative examples; matcher version %d",
            len(gallery.people),
            ", ".join(gallery.names) or "-",
            len(matcher.negatives),
            self._slot.version,
        )
        return matcher

    def _negatives(self) -> Negatives:
        self._impostors = {}
        if self._store_source is None:
            return Negatives.none()
        rows = self._review_store().negatives(self.model_id)
        for row in rows:
            if row.kind == "impostor" and row.person is not None:
                self._impostors[row.person] = self._impostors.get(row.person, 0) + 1
        if not rows:
            return Negatives.none()
        return Negatives(
            tuple(r.person if r.kind == "impostor" else None for r in rows), np.stack([r.embedding for r in rows])
        )

    def _fingerprint(self) -> tuple[Any, ...]:
        """What the published matcher depends on besides the models: the folder's files and the
        negative examples."""
        files: list[tuple[str, int, int]] = []
        if self.gallery_dir.is_dir():
            for path in sorted(self.gallery_dir.rglob("*")):
                rel = path.relative_to(self.gallery_dir)
                if rel.parts[0].startswith(".") or not path.is_file():
                    continue
                stat = path.stat()
                files.append((rel.as_posix(), stat.st_size, stat.st_mtime_ns))
        negatives = self._review_store().negatives_stamp(self.model_id) if self._store_source is not None else None
        return (tuple(files), negatives)

    # ---------------------------------------------------------------- internals: views and files

    def _view(self) -> LibraryView:
        gallery = self._gallery
        assert gallery is not None
        names = sorted(set(gallery.names) | {r.person for r in gallery.rejections})
        people = tuple(v for v in (self._person_view(n) for n in names) if v is not None)
        return LibraryView(self.model_id, self.matcher.threshold, self.version, people)

    def _person_view(self, name: str) -> PersonView | None:
        gallery = self._gallery
        assert gallery is not None
        entry = gallery.person(name)
        rejected = [r for r in gallery.rejections if r.person == name]
        if entry is None and not rejected:
            return None
        prefix = f"{name}/"
        reasons = {r.file: r.reason for r in rejected if r.file.startswith(prefix)}
        folder_reason = next((r.reason for r in rejected if r.file == name), None)
        used = set(entry.images) if entry is not None else set()
        photos = []
        for rel in sorted(used | set(reasons)):
            measure = gallery.measures.get(rel)
            photos.append(
                PhotoView(
                    rel[len(prefix) :],
                    "used" if rel in used else "rejected",
                    reasons.get(rel),
                    None if measure is None else measure.side_px,
                    None if measure is None else measure.blur,
                    None if measure is None else measure.det_score,
                )
            )
        quality = entry.quality if entry is not None else None
        return PersonView(name, entry is not None, quality, tuple(photos), self._impostors.get(name, 0), folder_reason)

    def _person_folder(self, name: object) -> Path:
        """The folder of an existing person (exactly that name); ``NotFound`` otherwise."""
        if not isinstance(name, str) or not name.strip():
            raise BadInput("person: the name is empty")
        text = name.strip()
        folders = {p.name: p for p in self._folders()}
        if text not in folders:
            raise NotFound(f"no person {text!r} in the gallery")
        return folders[text]

    def _folders(self) -> list[Path]:
        if not self.gallery_dir.is_dir():
            return []
        return sorted(p for p in self.gallery_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _check_new_name(self, name: str, allow: str | None) -> None:
        """``name`` may become a person's folder: nobody else's name, even differing only in case."""
        for folder in self._folders():
            if folder.name != allow and folder.name.casefold() == name.casefold():
                raise Conflict(f"person {folder.name!r} already exists")
        clash = self.gallery_dir / name
        if clash.exists() and not clash.is_dir():
            raise Conflict(f"{name!r} is a file in the gallery folder, not a person")

    @staticmethod
    def _own_file(folder: Path, file: object) -> str:
        """``file`` as one of the folder's own files (relative, '/' separators); ``NotFound`` otherwise."""
        if not isinstance(file, str) or not file:
            raise BadInput("file: the name is empty")
        images, others = list_images(folder, recursive=True)
        own = {p.relative_to(folder).as_posix() for p in [*images, *others]}
        if file not in own:
            raise NotFound(f"no photo {file!r} of {folder.name!r}")
        return file

    def _stage(self, files: Sequence[tuple[str, bytes]]) -> Path:
        """Write files into a new hidden folder of the gallery (``enroll`` skips hidden folders)."""
        self.gallery_dir.mkdir(parents=True, exist_ok=True)
        staged = self.gallery_dir / f".upload-{uuid.uuid4().hex}"
        staged.mkdir()
        try:
            for name, data in files:
                (staged / name).write_bytes(data)
        except OSError as exc:
            shutil.rmtree(staged, ignore_errors=True)
            raise UserError(f"cannot write to the gallery {self.gallery_dir}: {exc.strerror or exc}") from None
        return staged

    def _move_staged(self, staged: Path, folder: Path, names: Sequence[str]) -> None:
        """Move staged files into the person's folder (made when new); on failure, none stays."""
        made = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        moved: list[Path] = []
        try:
            for name in names:
                os.replace(staged / name, folder / name)
                moved.append(folder / name)
        except OSError as exc:
            for path in moved:
                path.unlink(missing_ok=True)
            if made:
                shutil.rmtree(folder, ignore_errors=True)
            raise UserError(f"cannot write to {folder}: {exc.strerror or exc}") from None

    def _move_in(self, folder: Path, files: Sequence[tuple[str, bytes]]) -> None:
        staged = self._stage(files)
        try:
            self._move_staged(staged, folder, [n for n, _ in files])
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    # ---------------------------------------------------------------- internals: the store

    def _review_store(self) -> Store:
        if self._store_source is None:
            raise UserError("the event store is off (outputs.events_sqlite: false): no stored faces to review")
        if self._store is None:
            self._store = self._store_source()
        return self._store

    def _unnamed(self) -> tuple[list[FaceRow], int, bool]:
        """The newest unnamed, not ignored faces of the model, less those near an ignored example; how
        many were left out that way; whether the limit cut older ones off."""
        store = self._review_store()
        limit = self.settings.max_faces
        faces = store.faces(model_id=self.model_id, unnamed=True, ignored=False, newest=limit)
        ignored = [r.embedding for r in store.negatives(self.model_id, kind="ignored")]
        near = near_ignored(faces, np.stack(ignored) if ignored else np.zeros((0, 1)), self.group_threshold)
        visible = [f for f, hide in zip(faces, near, strict=True) if not hide]
        return visible, int(near.sum()), len(faces) >= limit

    def _find_group(self, group_id: object) -> tuple[Group, list[FaceRow]]:
        gid = _int(group_id, "group")
        faces, _, _ = self._unnamed()
        groups = build_groups(faces, self.group_threshold, self.gates, self.settings.crops_per_group)
        for group in groups:
            if group.id == gid:
                return group, faces
        raise NotFound(f"no group {gid} among the unknown faces (named, ignored or merged meanwhile? reload them)")


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        raise BadInput(f"{what}: expected an id (a whole number), got {value!r}")
    return int(value)


def _change(face: FaceRow, after: str | None, score: float) -> RematchChange:
    return RematchChange(
        face.face_id,
        face.run_id,
        face.stream,
        face.epoch,
        face.track_id,
        face.first_time,
        face.last_time,
        face.person,
        after,
        score,
    )
