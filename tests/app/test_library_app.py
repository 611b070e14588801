"""The library end to end with real models: OTB David collected as unknown, grouped, named once and
known from the start on the next run; a look-alike wrongly named, corrected with "not this person"
and no longer named on a re-run.

OTB David (../shared/data/otb-david, 471 frames, dark room → bright light) is cut into 6 passes of
~78 frames, run as 6 streams at once (the ``cpu`` profile: detection on every 5th frame), so he
leaves several tracks, as someone walking past a camera several times would.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.app import RunOptions, build_app
from stream.cli import main
from stream.config import AppConfig, parse_config
from stream.faces.images import read_bgr
from stream.faces.models import ModelOverrides, Models, build_models
from stream.faces.still import crop_faces, largest_face
from stream.identity.quality import EnrollGates, blur_floor
from stream.identity.templates import fuse
from stream.store import EventQuery, EventRow, Store, open_store
from tests.conftest import app_config_text, shared_file

pytestmark = pytest.mark.slow

DAVID = "otb-david/demo/David/img"
PASSES = 12  # about 1.3 s a pass, one track each (6 passes: groups of 5 and 1, the pass of profile views alone)


@pytest.fixture(scope="module")
def models() -> Models:
    from tests.conftest import REPO

    return build_models(AppConfig().resolve_paths(REPO), ModelOverrides(device="cpu"))


def _config(tmp: Path, gallery: Path, recognition: str = "") -> tuple[Path, AppConfig]:
    """config.yaml for these runs (and its parsed form): the cpu profile, outputs under ``tmp``, no video,
    ``gallery``, and ``recognition`` lines added to that section."""
    text = "profile: cpu\n" + app_config_text(tmp) + "  annotated_video: false\n" + f"gallery:\n  dir: {gallery}\n"
    text = text.replace("recognition:\n", "recognition:\n" + recognition, 1)
    path = tmp / "config.yaml"
    path.write_text(text)
    return path, parse_config(text).resolve_paths(tmp)


def _run(config: AppConfig, sources: list[Path], models: Models) -> None:
    build_app(config, RunOptions(sources=tuple(str(s) for s in sources)), models=models).run()


def _passes(shared_data: Path, tmp: Path) -> list[Path]:
    frames = sorted(shared_file(shared_data, DAVID).glob("*.jpg"))
    folders = []
    for i in range(PASSES):
        folder = tmp / "passes" / f"david{i}"
        folder.mkdir(parents=True)
        for frame in frames[i * len(frames) // PASSES : (i + 1) * len(frames) // PASSES]:
            (folder / frame.name).symlink_to(frame)
        folders.append(folder)
    return folders


def _tracks(store: Store, run_id: str) -> dict[tuple[str, int, int], list[EventRow]]:
    tracks: dict[tuple[str, int, int], list[EventRow]] = {}
    for e in store.events(EventQuery(run_id=run_id, limit=100_000, newest_first=False)):
        if e.track_id is not None and e.epoch is not None:
            tracks.setdefault((e.stream, e.epoch, e.track_id), []).append(e)
    return tracks


def test_david_collected_grouped_named_once_and_known_from_the_start(
    shared_data: Path, tmp_path: Path, models: Models, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = tmp_path / "gallery"
    path, config = _config(tmp_path, gallery)
    passes = _passes(shared_data, tmp_path)
    db = tmp_path / "rec" / "events.db"

    _run(config, passes, models)  # 1. nobody enrolled: every face is unknown
    with open_store(db, create=False) as store:
        (first,) = store.runs()
        faces = store.faces(first.run_id)
    assert len(faces) >= PASSES and all(f.person is None for f in faces)  # one track a pass at least

    args = ["--config", str(path), "--device", "cpu", "--json"]
    assert main(["unknowns", *args]) == 0
    view = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    biggest = max(view["groups"], key=lambda g: g["count"])
    share = biggest["count"] / len(faces)
    print(f"\nOTB David: {len(faces)} stored faces, groups {[g['count'] for g in view['groups']]}, share {share:.0%}")
    assert share >= 0.9
    gates = EnrollGates()
    for crop in biggest["crops"]:  # offered crops pass the gates, and are written for a look
        assert crop["offered"] and crop["face_px"] >= gates.min_face_px
        assert crop["blur"] >= blur_floor(gates.min_blur, crop["face_px"]) - 0.1
        assert Path(crop["path"]).read_bytes()[:2] == b"\xff\xd8"

    assert main(["name", str(biggest["id"]), "david", *args]) == 0  # 2. name the group once
    naming = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    added = sorted(p.name for p in (gallery / "david").iterdir())
    assert added == sorted(p["file"] for p in naming["photos"]) and len(added) >= 3
    assert all(name.startswith("unknown-") and name.endswith(".jpg") for name in added)
    by_id = {f.face_id: f for f in faces}
    for name in added:  # only crops that pass the enrolment gates went in
        f = by_id[int(name.removeprefix("unknown-").removesuffix(".jpg"))]
        assert f.face_px is not None and f.blur is not None and f.face_px >= gates.min_face_px
        assert f.blur >= blur_floor(gates.min_blur, f.face_px)
    assert naming["person"]["enrolled"] and naming["person"]["used"] >= 3
    with open_store(db, create=False) as store:
        relabelled = _tracks(store, first.run_id)
        named = {f.face_id for f in store.faces(first.run_id) if f.person == "david"}
    assert named == set(biggest["faces"])
    for key, events in relabelled.items():  # the group's past events say david now
        ended = next(e for e in events if e.kind == "track_ended")
        face = next(f for f in faces if (f.stream, f.epoch, f.track_id) == key)
        assert (ended.person == "david") == (face.face_id in named)
        if ended.person == "david":
            assert ended.extra["relabelled_by"] == "user" and ended.extra["relabelled_from"] is None

    _run(config, passes, models)  # 3. the next run knows him
    with open_store(db, create=False) as store:
        second = store.runs()[-1]
        tracks = _tracks(store, second.run_id)
    decided = {k: v for k, v in tracks.items() if any(e.kind in ("identity_assigned", "stranger_assigned") for e in v)}
    named_tracks = {k for k, v in tracks.items() if v[-1].kind == "track_ended" and v[-1].person == "david"}
    people = {e.person for v in tracks.values() for e in v} - {None}
    first_track = min(tracks, key=lambda k: (tracks[k][0].time or 0.0, k))
    start = tracks[first_track][0].pts_s or 0.0
    assigned = [e for e in tracks[first_track] if e.kind == "identity_assigned"]
    print(
        f"second run: {len(named_tracks)} of {len(tracks)} tracks named david ({len(decided)} decided); first track "
        f"named after {(assigned[0].pts_s or 0.0) - start if assigned else None} s"
    )
    assert people == {"david"}
    assigned_tracks = {k for k, v in tracks.items() if any(e.kind == "identity_assigned" for e in v)}
    assert assigned_tracks <= named_tracks, "every track named during the run ends as david"
    assert len(named_tracks) >= 0.75 * len(tracks)
    assert assigned and (assigned[0].pts_s or 0.0) - start <= 0.5, "the first track is named from its start"


# ------------------------------------------------------------------ not this person

DEEPFACE = "deepface/tests/unit/dataset"
MATT = [29, 30, 31]  # enrolled as "matt" (cluster K of MANIFEST.md)
MATT_PROBE = 32
LOOKALIKES = [34, 35, 36, 37]  # cluster L: somebody else


def _embed(models: Models, path: Path) -> tuple[np.ndarray, float]:
    image = read_bgr(path)
    detections = models.detector.detect_one(image)
    k = largest_face(detections)
    assert k is not None, f"no face in {path}"
    vectors, norms = models.embedder.embed(crop_faces(image, detections.select([k]), models.embedder).crops)
    return vectors[0], float(norms[0])


def _clip(folder: Path, photos: list[Path], hold: int = 30) -> Path:
    """An image-folder stream: each photo held ``hold`` frames (one track), then black frames for
    tracking.max_age_s at 30 fps and half a second more, so the track ends before the next photo."""
    gap = round((AppConfig().tracking.max_age_s + 0.5) * 30)
    folder.mkdir(parents=True)
    black = np.zeros((480, 640, 3), np.uint8)
    n = 0
    for photo in photos:
        image = read_bgr(photo)
        scale = min(440 / image.shape[0], 600 / image.shape[1])
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frame = black.copy()
        y, x = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
        frame[y : y + small.shape[0], x : x + small.shape[1]] = small
        for image_out in [frame] * hold + [black] * gap:
            n += 1
            cv2.imwrite(str(folder / f"{n:05d}.png"), image_out)
    return folder


def test_not_this_person_stops_a_lookalike_being_named_in_a_rerun(
    shared_data: Path, tmp_path: Path, models: Models
) -> None:
    folder = shared_file(shared_data, DEEPFACE)
    gallery = tmp_path / "gallery"
    (gallery / "matt").mkdir(parents=True)
    for n in MATT:
        (gallery / "matt" / f"img{n}.jpg").symlink_to(folder / f"img{n}.jpg")
    vectors, norms = zip(*(_embed(models, folder / f"img{n}.jpg") for n in MATT), strict=True)
    template = fuse(np.stack(vectors), np.array(norms))
    scores = {n: float(_embed(models, folder / f"img{n}.jpg")[0] @ template) for n in [MATT_PROBE, *LOOKALIKES]}
    lookalike = max(LOOKALIKES, key=lambda n: scores[n])
    # A deliberately wrong match: the threshold just under the look-alike's score, still under Matt's own.
    threshold = round(scores[lookalike] - 0.02, 3)
    print(f"\nscores to matt's template: {scores}; look-alike img{lookalike}; threshold {threshold}")
    assert scores[MATT_PROBE] > scores[lookalike] + 0.05
    path, config = _config(tmp_path, gallery, f"  match_threshold: {threshold}\n")
    clip = _clip(tmp_path / "clip", [folder / f"img{lookalike}.jpg", folder / f"img{MATT_PROBE}.jpg"])
    db = tmp_path / "rec" / "events.db"

    def named_in_last_run() -> dict[int, str | None]:
        with open_store(db, create=False) as store:
            run = store.runs()[-1]
            ended = store.events(EventQuery(run_id=run.run_id, kinds=("track_ended",), newest_first=False))
        return {e.track_id or 0: e.person for e in ended}

    _run(config, [clip], models)
    first = named_in_last_run()
    assert list(first.values()) == ["matt", "matt"], "the look-alike is (wrongly) named matt, then matt himself"
    with open_store(db, create=False) as store:
        (wrong,) = [
            e
            for e in store.events(EventQuery(kinds=("identity_assigned",), newest_first=False))
            if e.track_id == min(first)
        ]
    assert main(["not-this", str(wrong.id), "--config", str(path), "--device", "cpu"]) == 0

    _run(config, [clip], models)  # the re-run
    second = named_in_last_run()
    assert list(second.values()) == [None, "matt"], "the look-alike stays unknown; matt is still named"
