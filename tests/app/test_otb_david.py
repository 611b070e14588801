"""Tracking and identity over time on OTB 'David' (../shared/data/otb-david, MANIFEST.md).

471 JPEG frames (0300-0770, 320x240) of one person walking from a dark room into bright light,
with one ground-truth face box per frame. The sequence has no frame rate; it is read as 30 fps,
so frame ``f`` is at ``t = (f - 300) / 30`` seconds.

MTCNN runs **once** over all frames (``detections`` fixture, ~30-60 s on one CPU thread); every
test reuses those detections.

1. Tracking: the default ``Tracker`` over all 471 frames. Among the frames where MTCNN found the
   face (a detection with IoU >= 0.5 to the ground truth), at least 90 % must have exactly one
   confirmed track, and its box must have IoU >= 0.5 to the ground truth; at most 2 ID switches
   (py-motmetrics over the confirmed tracks).
2. Identity: "david" is enrolled from 5 evenly spaced frames of 0300-0330 only, next to the 13
   deepface identities (MANIFEST.md clusters) as distractors. A fresh tracker runs over 0331-0770;
   confirmed tracks offer crops to ``BestShotSelector`` (drained every frame) and the embeddings go
   to ``TrackVoter``. Definition of the david-named rate: over the frames where the main track (the
   one confirmed on most frames) is CONFIRMED, from the first such frame to the end (LOST frames
   are not counted), the share where ``voter.identity(track).person == "david"``. So the delay
   before the first naming counts against it. It must be >= 90 %, and no track may ever be named
   anyone but david.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from stream.config import AppConfig
from stream.faces.detector import DetectorSettings, MtcnnDetector
from stream.faces.images import read_bgr
from stream.faces.models import ModelOverrides, Models, build_models
from stream.faces.still import crop_faces, largest_face
from stream.identity.bestshot import BestShotSelector, crop_quality
from stream.identity.gallery import enroll
from stream.identity.matcher import Matcher
from stream.identity.templates import fuse
from stream.identity.thresholds import default_threshold
from stream.identity.voting import TrackVoter, VotingSettings
from stream.types import Embedding, EventKind, FaceCrop, FaceDetections, TrackKey
from tests.conftest import REPO, shared_file
from tests.identity.test_identification import CLUSTERS
from tests.mot_helpers import mot_summary
from trackers import Tracker, TrackerSettings, TrackSnapshot, TrackState, iou_matrix

pytestmark = pytest.mark.slow  # real MTCNN over 471 frames and real FaceNet

DAVID = "otb-david/demo/David"
FIRST, LAST = 300, 770
FPS = 30.0
MIN_FACE_PX = 20
DETECT_BATCH = 16
ENROLL_FRAMES = np.linspace(FIRST, 330, 5).round().astype(int)  # 300, 308, 315, 322, 330
QUERY_FIRST = 331
MIN_IOU = 0.5
EMBED_PER_FRAME = 4  # crops handed out per frame by the best-shot selector (drained each frame)


def frame_time(frame: int) -> float:
    return (frame - FIRST) / FPS


@dataclass(frozen=True)
class David:
    folder: Path
    gt: np.ndarray  # (471, 4) x1, y1, x2, y2, row i is frame FIRST + i
    detections: list[FaceDetections]  # one per frame, same order

    def image(self, frame: int) -> np.ndarray:
        return read_bgr(self.folder / "img" / f"{frame:04d}.jpg")

    def dets(self, frame: int) -> FaceDetections:
        return self.detections[frame - FIRST]

    def truth(self, frame: int) -> np.ndarray:
        return self.gt[frame - FIRST]


@pytest.fixture(scope="module")
def david(shared_data: Path) -> David:
    """Ground truth and MTCNN detections of every frame (the module's single detection pass)."""
    folder = shared_file(shared_data, DAVID)
    xywh = np.loadtxt(shared_file(shared_data, f"{DAVID}/groundtruth_rect.txt"), delimiter=",", ndmin=2)
    assert xywh.shape == (LAST - FIRST + 1, 4)
    gt = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    detector = MtcnnDetector(DetectorSettings(min_face_px=MIN_FACE_PX, detect_width=None))
    frames = list(range(FIRST, LAST + 1))
    detections: list[FaceDetections] = []
    for start in range(0, len(frames), DETECT_BATCH):
        images = [read_bgr(folder / "img" / f"{f:04d}.jpg") for f in frames[start : start + DETECT_BATCH]]
        detections += detector.detect(images)
    return David(folder, gt, detections)


@pytest.fixture(scope="module")
def models() -> Models:
    args = ModelOverrides(device="cpu")
    return build_models(AppConfig().resolve_paths(REPO), args, stills=True)


def best_iou(truth: np.ndarray, boxes: np.ndarray) -> float:
    if len(boxes) == 0:
        return 0.0
    return float(iou_matrix(truth[None, :], np.asarray(boxes).reshape(-1, 4)).max())


def confirmed(snaps: list[TrackSnapshot]) -> list[TrackSnapshot]:
    return [s for s in snaps if s.state is TrackState.CONFIRMED]


def update(tracker: Tracker, dets: FaceDetections, t: float) -> list[TrackSnapshot]:
    return tracker.update(dets.boxes, dets.scores, t, extras=list(dets.landmarks))


# ------------------------------------------------------------------ 1. tracking


def test_one_confirmed_track_follows_the_face(david: David) -> None:
    tracker = Tracker(TrackerSettings())
    detected, covered = 0, 0
    gt_frames, hyp_frames = [], []
    for frame in range(FIRST, LAST + 1):
        truth, dets = david.truth(frame), david.dets(frame)
        tracks = confirmed(update(tracker, dets, frame_time(frame)))
        gt_frames.append({0: truth})
        hyp_frames.append({s.track_id: s.box for s in tracks})
        if best_iou(truth, dets.boxes) < MIN_IOU:
            continue
        detected += 1
        covered += len(tracks) == 1 and best_iou(truth, tracks[0].box[None, :]) >= MIN_IOU

    summary = mot_summary(gt_frames, hyp_frames)
    coverage = covered / detected
    print(
        f"\nOTB David tracking: frames={len(gt_frames)} face_detected={detected} "
        f"one_confirmed_track_on_face={covered} ({coverage:.1%}) MOTA={summary['mota']:.3f} "
        f"IDF1={summary['idf1']:.3f} switches={summary['num_switches']:.0f} "
        f"FP={summary['num_false_positives']:.0f} misses={summary['num_misses']:.0f}"
    )
    assert detected >= 0.8 * len(gt_frames), f"MTCNN found the face on only {detected} frames"
    assert coverage >= 0.9, f"one confirmed track on the face in {coverage:.1%} of {detected} detected frames"
    assert summary["num_switches"] <= 2


# ------------------------------------------------------------------ 2. identity over time


@pytest.fixture(scope="module")
def distractors(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, models: Models):
    """The 13 deepface identities enrolled through the real ``enroll`` (symlinked gallery)."""
    folder = shared_file(shared_data, "deepface/tests/unit/dataset")
    gallery_dir = tmp_path_factory.mktemp("david_gallery")
    for person, numbers in CLUSTERS.items():
        (gallery_dir / person).mkdir()
        for n in numbers:
            (gallery_dir / person / f"img{n}.jpg").symlink_to(folder / f"img{n}.jpg")
    gallery = enroll(gallery_dir, models, progress=False)
    assert set(gallery.names) == set(CLUSTERS)
    return gallery


def david_template(david: David, models: Models) -> np.ndarray:
    crops = []
    for frame in ENROLL_FRAMES:
        dets = david.dets(int(frame))
        k = largest_face(dets)
        assert k is not None, f"no face on enrollment frame {frame}"
        crops.append(crop_faces(david.image(int(frame)), dets.select([k]), models.embedder).crops[0])
    vectors, norms = models.embedder.embed(np.stack(crops))
    return fuse(vectors, norms)


@dataclass
class IdentityRun:
    named: dict[int, list[str | None]]  # track id -> identity on each frame it was confirmed
    embeddings: int
    offered: int
    events: list
    best_rival: float = -1.0  # highest cosine of any embedding to a distractor's template


def run_identity(david: David, models: Models, matcher: Matcher) -> IdentityRun:
    """Track 0331-0770; best-shot crops of confirmed tracks → embeddings → per-track votes."""
    tracker = Tracker(TrackerSettings())
    selector = BestShotSelector()
    voter = TrackVoter(matcher, VotingSettings())
    run = IdentityRun(named={}, embeddings=0, offered=0, events=[])
    for frame in range(QUERY_FIRST, LAST + 1):
        t, dets = frame_time(frame), david.dets(frame)
        image = david.image(frame)
        snaps = update(tracker, dets, t)
        for snap in confirmed(snaps):
            if snap.matched:
                run.offered += selector.offer(face_crop(image, dets, snap, frame, models), t)
        for snap in snaps:
            if snap.state is TrackState.REMOVED:
                selector.end(key_of(snap))
        crops = selector.ready(t, EMBED_PER_FRAME)
        if crops:
            vectors, norms = models.embedder.embed(np.stack([c.crop for c in crops]))
            run.embeddings += len(crops)
            for crop, vector, norm in zip(crops, vectors, norms, strict=True):
                embedding = Embedding(vector, float(norm), models.embedder.model_id)
                run.events += voter.add(crop.track, embedding, t)
            rival = matcher.scores(vectors)[:, 1:]  # column 0 is david
            run.best_rival = max(run.best_rival, float(rival.max()))
        for snap in confirmed(snaps):
            run.named.setdefault(snap.track_id, []).append(voter.identity(key_of(snap)).person)
    return run


def key_of(snap: TrackSnapshot) -> TrackKey:
    return TrackKey("david", 0, snap.track_id)


def face_crop(image: np.ndarray, dets: FaceDetections, snap: TrackSnapshot, frame: int, models: Models) -> FaceCrop:
    """The embedder's crop of the detection the track matched, scored for best-shot selection."""
    one = dets.select([snap.det_index])
    faces = crop_faces(image, one, models.embedder)
    quality = crop_quality(
        one.boxes[0], float(one.scores[0]), one.landmarks[0], image.shape[:2], faces.aligned[0], MIN_FACE_PX
    )
    return FaceCrop(key_of(snap), frame, faces.crops[0], quality.score, quality.flags)


def test_track_is_named_david_and_nobody_else(david: David, models: Models, distractors) -> None:
    template = david_template(david, models)
    names = ["david", *distractors.names]
    templates = np.concatenate([template[None, :], distractors.templates])
    matcher = Matcher(names, templates, default_threshold(models.embedder.model_id), min_margin=0.05)

    run = run_identity(david, models, matcher)

    main_track = max(run.named, key=lambda k: len(run.named[k]))
    timeline = run.named[main_track]
    rate = sum(p == "david" for p in timeline) / len(timeline)
    first_named = next((i for i, p in enumerate(timeline) if p is not None), None)
    others = Counter(p for track in run.named.values() for p in track if p not in (None, "david"))
    kinds = Counter(e.kind.value for e in run.events)
    print(
        f"\nOTB David identity ({models.embedder.model_id}): tracks={sorted(run.named)} main={main_track} "
        f"confirmed_frames={len(timeline)} named_david={rate:.1%} first_named_after={first_named} frames "
        f"embeddings={run.embeddings} offered={run.offered} best_rival_cos={run.best_rival:.3f} "
        f"events={dict(kinds)}"
    )
    assert not others, f"tracks named someone else: {dict(others)}"
    assert kinds[EventKind.IDENTITY_CHANGED.value] == 0
    assert rate >= 0.9, f"main track named david on {rate:.1%} of its {len(timeline)} confirmed frames"
    assert run.embeddings <= 60, f"{run.embeddings} embeddings: best-shot should keep it to tens"
