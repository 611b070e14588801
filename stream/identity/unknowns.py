"""Unknown faces grouped by person: the pure part of the review of unknowns (no I/O, no threads).

The faces are the store's unnamed faces of one model (``stream.identity.library.Library.unknowns``
reads them): one per track, its norm-weighted template. ``threshold`` is the model's match threshold
for one person (per-pair FAR ``recognition.target_far``, 1e-3 by default). Two steps:

1. scikit-learn's ``AgglomerativeClustering`` (cosine distance, **average** linkage) cut at
   ``1 - threshold``: clusters merge while the mean cosine between their faces is above the threshold;
2. then clusters merge, most alike first, while their templates (the norm-weighted fusion of their
   faces, as ``enroll`` makes a person's template) match each other at the threshold: the test
   recognition itself makes. Average linkage alone leaves a poor face (a 36 px, 0.1 s track) with the
   one it resembles most, apart from its person, since its low cosines pull the mean down.

Measured with the offline FaceNet (threshold 0.501). The shared labelled sets (deepface's 13 identities
and face-api.js's 8 characters, 101 photos, one face each): 21 groups for 21 people, none of two people
(average linkage alone: 23 groups, also pure; complete linkage 29; single linkage chained two pairs of
people, purity 0.91). The closest templates of two different people there: cosine 0.475 (face-api.js
amy and penny). OTB David cut into 12 passes (12 tracks, dark room to bright light): one group. Cut
into 6 passes (6 longer tracks): groups of 5 and 1, the track of the pass where he turns his head
(cosine 0.25-0.41 to the other five) alone, as it should be at this threshold.

What people decided is applied on top (``FaceRow`` columns):

- ``pin``: faces with the same pin are in one group whatever the clustering says (``merge``);
- ``detached``: the face is a group of its own (``remove`` from a group);

A group's **id** is its smallest face id: stable while faces arrive (new faces have larger ids) and
the same for everybody who looks, since the grouping is deterministic. A merge takes the smaller id.

**Crops offered.** A face's crop is offered for enrolment only when it passes the enrolment gates on
what the store measured: the face's short side in the frame (``face_px``) at least ``min_face_px``, and
the crop's blur score at least ``blur_floor(min_blur, face_px)`` (the floor ``enroll`` uses, scaled
for faces under 112 px). Faces without those measurements are never offered. Offered crops are
ordered by ``quality = min(1, face_px / 112) * min(1, blur / min_blur)`` (bigger and sharper first, both
saturating at the crop's own scale), then by feature norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.identity.quality import EnrollGates, blur_floor
from stream.store.records import FaceRow, iso_utc

__all__ = ["CropView", "Group", "best_offered", "build_groups", "crop_quality", "group_faces", "near_ignored"]

CROP_PX = 112.0


@dataclass(frozen=True, slots=True)
class CropView:
    """One face's crop as the review shows it."""

    face_id: int
    face_px: float | None
    blur: float | None
    quality: float
    offered: bool  # passes the enrolment gates

    def to_dict(self) -> dict[str, Any]:
        return {
            "face_id": self.face_id,
            "face_px": None if self.face_px is None else round(self.face_px, 1),
            "blur": None if self.blur is None else round(self.blur, 1),
            "quality": round(self.quality, 3),
            "offered": self.offered,
        }


@dataclass(frozen=True, slots=True)
class Group:
    """A group of unnamed faces that look like one person.

    ``faces``: every face id in it, oldest first; ``crops``: its offered crops, best first (at most the
    number asked for); ``offered``: how many of its faces have an offered crop.
    """

    id: int
    faces: tuple[int, ...]
    first_seen: float
    last_seen: float
    streams: tuple[str, ...]
    crops: tuple[CropView, ...]
    offered: int

    @property
    def count(self) -> int:
        return len(self.faces)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "count": self.count,
            "first_seen": iso_utc(self.first_seen),
            "last_seen": iso_utc(self.last_seen),
            "streams": list(self.streams),
            "offered": self.offered,
            "crops": [c.to_dict() for c in self.crops],
            "faces": list(self.faces),
        }


def crop_quality(face: FaceRow, gates: EnrollGates) -> CropView:
    """Whether the face's crop passes the enrolment gates, and its quality (module notes)."""
    if face.face_px is None or face.blur is None:
        return CropView(face.face_id, face.face_px, face.blur, 0.0, False)
    offered = face.face_px >= gates.min_face_px and face.blur >= blur_floor(gates.min_blur, face.face_px)
    sharp = min(1.0, face.blur / gates.min_blur) if gates.min_blur > 0 else 1.0
    quality = min(1.0, face.face_px / CROP_PX) * sharp
    return CropView(face.face_id, face.face_px, face.blur, quality, offered)


def group_faces(faces: Sequence[FaceRow], threshold: float) -> list[list[FaceRow]]:
    """The faces in groups (module notes): each group oldest face first, groups by smallest id."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"group_faces.threshold: must be in [-1, 1], got {threshold}")
    faces = sorted(faces, key=lambda f: f.face_id)
    parent = list(range(len(faces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    free = [i for i, f in enumerate(faces) if not f.detached]
    chosen = [faces[i] for i in free]
    for members in _merge_templates(chosen, _clusters(chosen, threshold), threshold):
        for i in members[1:]:
            join(free[members[0]], free[i])
    pinned: dict[int, int] = {}
    for i, f in enumerate(faces):
        if f.pin is not None and not f.detached:
            join(pinned.setdefault(f.pin, i), i)
    groups: dict[int, list[FaceRow]] = {}
    for i, f in enumerate(faces):
        groups.setdefault(root(i), []).append(f)
    return [groups[k] for k in sorted(groups)]


def _clusters(faces: Sequence[FaceRow], threshold: float) -> list[list[int]]:
    """Average-linkage cosine clusters of the faces' templates, cut at distance ``1 - threshold``."""
    if len(faces) < 2:
        return [[i] for i in range(len(faces))]
    from sklearn.cluster import AgglomerativeClustering

    vectors = np.stack([f.embedding for f in faces]).astype(np.float64)
    labels = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=max(1e-9, 1.0 - threshold)
    ).fit_predict(vectors)
    out: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(int(label), []).append(i)
    return list(out.values())


def _merge_templates(faces: Sequence[FaceRow], clusters: list[list[int]], threshold: float) -> list[list[int]]:
    """Merge clusters while the two closest ones' templates (norm-weighted fusions of their faces, as
    ``enroll`` makes a person's) match at ``threshold``: most alike first, templates updated after each."""
    if len(clusters) < 2:
        return clusters
    vectors = np.stack([f.embedding for f in faces]).astype(np.float64)
    norms = np.array([max(f.norm, 1e-6) for f in faces], np.float64)
    groups = [list(c) for c in clusters]
    sums = np.stack([(vectors[g] * norms[g, None]).sum(axis=0) for g in groups])
    templates = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    scores = templates @ templates.T
    np.fill_diagonal(scores, -np.inf)
    alive = np.ones(len(groups), bool)
    while alive.sum() > 1:
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if scores[i, j] < threshold:
            break
        i, j = min(i, j), max(i, j)
        groups[i] += groups[j]
        sums[i] += sums[j]
        templates[i] = sums[i] / np.linalg.norm(sums[i])
        alive[j] = False
        scores[j, :] = scores[:, j] = -np.inf
        row = np.where(alive, templates @ templates[i], -np.inf)
        row[i] = -np.inf
        scores[i, :] = scores[:, i] = row
    return [sorted(g) for g, keep in zip(groups, alive, strict=True) if keep]


def build_groups(
    faces: Sequence[FaceRow],
    threshold: float,
    gates: EnrollGates,
    crops_per_group: int = 6,
) -> list[Group]:
    """``group_faces`` as ``Group`` views, most recently seen first (then by id)."""
    out = []
    for members in group_faces(faces, threshold):
        views = {f.face_id: crop_quality(f, gates) for f in members}
        norms = {f.face_id: f.norm for f in members}
        offered = sorted(
            (v for v in views.values() if v.offered), key=lambda v: (-v.quality, -norms[v.face_id], v.face_id)
        )
        out.append(
            Group(
                id=members[0].face_id,
                faces=tuple(f.face_id for f in members),
                first_seen=min(f.first_time for f in members),
                last_seen=max(f.last_time for f in members),
                streams=tuple(sorted({f.stream for f in members})),
                crops=tuple(offered[:crops_per_group]),
                offered=len(offered),
            )
        )
    out.sort(key=lambda g: (-g.last_seen, g.id))
    return out


def best_offered(group: Group, faces: Sequence[FaceRow], gates: EnrollGates, limit: int) -> list[CropView]:
    """The group's offered crops, best first, at most ``limit`` (not only those shown)."""
    members = {f.face_id: f for f in faces if f.face_id in set(group.faces)}
    views = [crop_quality(f, gates) for f in members.values()]
    offered = sorted((v for v in views if v.offered), key=lambda v: (-v.quality, -members[v.face_id].norm, v.face_id))
    return offered[:limit]


def near_ignored(faces: Sequence[FaceRow], ignored: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) bool: which faces are at least ``threshold`` (cosine) from some ignored example (rows (M, D))."""
    if not len(faces) or not len(ignored):
        return np.zeros(len(faces), bool)
    vectors = np.stack([f.embedding for f in faces]).astype(np.float32)
    return np.asarray((vectors @ np.asarray(ignored, np.float32).T).max(axis=1) >= threshold)
