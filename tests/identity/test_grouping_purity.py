"""Grouping unknowns never puts two people in one group at the default threshold, on every labelled
photo of the deepface (13 identities, 61 photos) and face-api.js (8 characters, 40 photos) sets.

How the photos are "fed as a stream": each photo is one track that ended, recorded by the output
stage's ``EventRecorder`` into a real store, exactly as the pipeline records a track (its
``track_started``/``track_ended`` events, then its ``TrackFace``). The face is found, aligned and
embedded by the same detector, aligner and embedder, and the crop is the aligned crop the recogniser
keeps. A still photo shown as video for a moment would give its track the same template: every
embedding of its frames is the same, and the norm-weighted fusion of equal vectors is that vector.
What the video path would add (decoding, tracking, best-shot choice among identical frames) cannot
change the template, so this skips ~800 detections of repeated frames and keeps the test to seconds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stream.config import AppConfig
from stream.faces.images import read_bgr
from stream.faces.models import ModelOverrides, Models, build_models
from stream.faces.still import crop_faces, largest_face
from stream.identity.library import Library
from stream.pipeline.messages import TrackFace
from stream.pipeline.recording import EventRecorder
from stream.store import RunRecord, open_store
from stream.types import Event, EventKind, TrackKey
from tests.conftest import REPO, shared_file
from tests.identity.test_identification import CLUSTERS

pytestmark = pytest.mark.slow

T0 = 1_796_092_710.0


def _photos(shared: Path) -> list[tuple[str, Path]]:
    deepface = shared_file(shared, "deepface/tests/unit/dataset")
    photos = [(f"deepface:{k}", deepface / f"img{n}.jpg") for k, numbers in CLUSTERS.items() for n in numbers]
    characters = shared_file(shared, "face-api.js/examples/images")
    for folder in sorted(p for p in characters.iterdir() if p.is_dir()):
        photos += [(f"face-api.js:{folder.name}", p) for p in sorted(folder.glob("*.png"))]
    return photos


def _record(models: Models, photos: list[tuple[str, Path]], db: Path) -> list[str]:
    """Each photo's face as one ended track of stream "photos"; the labels in track order."""
    recorder = EventRecorder(RunRecord.new(started=T0), store=open_store(db))
    labels = []
    for i, (label, path) in enumerate(photos, 1):
        image = read_bgr(path)
        detections = models.detector.detect_one(image)
        k = largest_face(detections)
        assert k is not None, f"no face in {path}"
        one = detections.select([k])
        faces = crop_faces(image, one, models.embedder)
        vectors, norms = models.embedder.embed(faces.crops)
        box = one.boxes[0]
        key = TrackKey("photos", 0, i)
        t = T0 + 5 * i
        recorder.events([Event.of_track(5.0 * i, EventKind.TRACK_STARTED, key).at(t)])
        recorder.events([Event.of_track(5.0 * i + 1, EventKind.TRACK_ENDED, key).at(t + 1)])
        side = float(min(box[2] - box[0], box[3] - box[1]))
        recorder.faces(
            [TrackFace(key, vectors[0], float(norms[0]), models.embedder.model_id, faces.aligned[0], None, None, side)]
        )
        labels.append(label)
    recorder.close(T0 + 5 * len(photos) + 5)
    return labels


def test_no_group_holds_two_people_on_the_labelled_sets(shared_data: Path, tmp_path: Path) -> None:
    config = AppConfig().resolve_paths(REPO)
    models = build_models(config, ModelOverrides(device="cpu"))
    photos = _photos(shared_data)
    assert len(photos) == 101
    labels = _record(models, photos, tmp_path / "events.db")
    library = Library(tmp_path / "gallery", config, models=models, store=lambda: open_store(tmp_path / "events.db"))
    view = library.unknowns()
    with open_store(tmp_path / "events.db", create=False) as store:
        label_of = {f.face_id: labels[f.track_id - 1] for f in store.faces()}
    assert view.faces == len(photos) and sum(g.count for g in view.groups) == len(photos)
    majority = 0
    mixed = []
    for group in view.groups:
        counts = Counter(label_of[f] for f in group.faces)
        majority += counts.most_common(1)[0][1]
        if len(counts) > 1:
            mixed.append(dict(counts))
    purity = majority / len(photos)
    people = len(set(labels))
    split = sum(
        1 for label in set(labels) if len({g.id for g in view.groups for f in g.faces if label_of[f] == label}) > 1
    )
    print(
        f"\n{len(photos)} photos of {people} people → {len(view.groups)} groups at threshold {view.threshold:.3f}: "
        f"purity {purity:.3f}, mixed groups {mixed}, people split over groups {split}"
    )
    assert purity >= 0.95
    assert not mixed, "a group of two different people"
    assert len(view.groups) <= people + 5, "and people are not scattered either"
    assert np.isclose(view.threshold, library.group_threshold)
