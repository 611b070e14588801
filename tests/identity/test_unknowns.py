"""Grouping unknown faces (pure): average linkage then template merges at the threshold, pins and
detached faces, stable ids, and which crops are offered for enrolment."""

from __future__ import annotations

import numpy as np
import pytest

from stream.identity.quality import EnrollGates
from stream.identity.unknowns import build_groups, crop_quality, group_faces, near_ignored
from stream.store import FaceRow

T0 = 1_796_092_710.0
DIM = 32
RNG = np.random.default_rng(7)
PEOPLE = {name: RNG.normal(size=DIM) for name in ("ann", "bob")}


def face(face_id: int, vector: np.ndarray, **fields: object) -> FaceRow:
    values: dict[str, object] = {"face_px": 80.0, "blur": 300.0, "norm": 20.0, "stream": "cam", "t": float(face_id)}
    values.update(fields)
    unit = (np.asarray(vector, np.float32) / np.linalg.norm(vector)).astype(np.float32)
    t = T0 + float(values.pop("t"))  # type: ignore[arg-type]
    return FaceRow(
        face_id, "run", str(values.pop("stream")), 0, face_id, t, t + 1, None, None, None, "m",
        float(values.pop("norm")), unit, **values,  # type: ignore[arg-type]
    )  # fmt: skip


def like(name: str, noise: float, seed: int) -> np.ndarray:
    return PEOPLE[name] + np.random.default_rng(seed).normal(scale=noise, size=DIM)


def ids(groups: list[list[FaceRow]]) -> list[list[int]]:
    return [[f.face_id for f in g] for g in groups]


def test_faces_of_two_people_make_two_groups_whose_ids_are_their_smallest_face_ids() -> None:
    faces = [face(i, like("ann" if i % 2 else "bob", 0.4, i)) for i in range(1, 9)]
    assert ids(group_faces(faces, 0.5)) == [[1, 3, 5, 7], [2, 4, 6, 8]]
    later = [*faces, face(20, like("bob", 0.4, 20))]  # a new face joins; the ids stay
    assert ids(group_faces(later, 0.5)) == [[1, 3, 5, 7], [2, 4, 6, 8, 20]]
    assert ids(group_faces(faces[:1], 0.5)) == [[1]] and group_faces([], 0.5) == []
    with pytest.raises(ValueError, match="threshold"):
        group_faces(faces, 1.5)


def test_a_poor_face_joins_its_person_when_it_matches_their_template() -> None:
    """Eight faces at cosine 0.72 to each other, and a poor one at 0.47 to each of them (average linkage
    leaves it apart) but 0.54 to their template: it joins them."""
    basis, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(DIM, 10)))
    a, others, q = basis[:, 0], basis[:, 1:9].T, basis[:, 9]
    core = [face(i + 1, 0.85 * a + np.sqrt(1 - 0.85**2) * e) for i, e in enumerate(others)]
    poor = face(9, 0.55 * a + np.sqrt(1 - 0.55**2) * q, norm=20.0)
    cos = np.stack([f.embedding for f in core]) @ poor.embedding
    assert np.allclose(cos, 0.4675, atol=1e-3)
    assert ids(group_faces([*core, poor], 0.5)) == [list(range(1, 10))]
    assert ids(group_faces([*core, poor], 0.55)) == [list(range(1, 9)), [9]]


def test_pins_keep_faces_together_and_a_detached_face_is_alone() -> None:
    faces = [face(i, like("ann" if i <= 3 else "bob", 0.3, i)) for i in range(1, 7)]
    merged = [face(f.face_id, f.embedding, pin=1) if f.face_id in (1, 4) else f for f in faces]
    assert ids(group_faces(merged, 0.5)) == [[1, 2, 3, 4, 5, 6]]
    detached = [face(f.face_id, f.embedding, detached=True) if f.face_id == 2 else f for f in faces]
    assert ids(group_faces(detached, 0.5)) == [[1, 3], [2], [4, 5, 6]]


def test_groups_show_offered_crops_best_first_newest_group_first() -> None:
    gates = EnrollGates()
    faces = [
        face(1, like("ann", 0.3, 1), face_px=120.0, blur=400.0),
        face(2, like("ann", 0.3, 2), face_px=60.0, blur=100.0),  # floor 150 * (60/112)² = 43: offered
        face(3, like("ann", 0.3, 3), face_px=39.0, blur=900.0),  # too small
        face(4, like("ann", 0.3, 4), face_px=100.0, blur=50.0),  # too blurry for 100 px (floor 120)
        face(5, like("ann", 0.3, 5), face_px=None, blur=None),  # not measured: never offered
        face(6, like("bob", 0.3, 6), stream="door", t=100.0),
    ]
    bob, ann = build_groups(faces, 0.5, gates, crops_per_group=5)
    assert (bob.id, ann.id, ann.count, ann.offered) == (6, 1, 5, 2)
    assert [c.face_id for c in ann.crops] == [1, 2] and ann.crops[0].quality == 1.0
    assert ann.to_dict()["crops"][1] == {
        "face_id": 2,
        "face_px": 60.0,
        "blur": 100.0,
        "quality": 0.357,
        "offered": True,
    }
    assert bob.to_dict()["streams"] == ["door"] and bob.to_dict()["first_seen"] == "2026-12-01T02:40:10.000Z"
    assert [crop_quality(f, gates).offered for f in faces] == [True, True, False, False, False, True]


def test_faces_near_an_ignored_example_are_found() -> None:
    faces = [face(1, like("ann", 0.2, 1)), face(2, like("bob", 0.2, 2))]
    ignored = (PEOPLE["bob"] / np.linalg.norm(PEOPLE["bob"]))[None]
    assert near_ignored(faces, ignored, 0.5).tolist() == [False, True]
    assert near_ignored(faces, np.zeros((0, DIM)), 0.5).tolist() == [False, False]
