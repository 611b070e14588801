"""Tracker library: frame-by-frame behaviour (norfair style), association maths, Kalman guards, MOT metrics."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from tests.mot_helpers import mot_summary
from trackers import (
    BoxKalmanFilter,
    Tracker,
    TrackerSettings,
    TrackSnapshot,
    TrackState,
    associate,
    iou_matrix,
)

FPS = 30.0
CONFIRMED_OR_LOST = (TrackState.CONFIRMED, TrackState.LOST)


def box(cx: float, cy: float, size: float = 60.0) -> np.ndarray:
    half = size / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)


def dets(*boxes: np.ndarray) -> np.ndarray:
    return np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)


def step(tracker: Tracker, t: float, *boxes: np.ndarray, score: float = 0.95) -> list[TrackSnapshot]:
    """One detection frame: the detector ran and found ``boxes`` (possibly none)."""
    return tracker.update(dets(*boxes), np.full(len(boxes), score, np.float32), t)


def shown(snaps: list[TrackSnapshot]) -> list[TrackSnapshot]:
    return [s for s in snaps if s.state in CONFIRMED_OR_LOST]


def only(snaps: list[TrackSnapshot]) -> TrackSnapshot:
    assert len(snaps) == 1, snaps
    return snaps[0]


def confirmed_static(tracker: Tracker, frames: int = 10, at: tuple[float, float] = (200, 200)) -> float:
    """Feed a static face for ``frames`` frames at 30 fps; return the last time used."""
    for k in range(frames):
        step(tracker, k / FPS, box(*at))
    return (frames - 1) / FPS


# -- life cycle ------------------------------------------------------------------------------------


def test_static_face_is_hidden_until_confirmed_then_keeps_its_id() -> None:
    tracker = Tracker()  # min_hits=3, min_confirm_s=0.2: confirmed at frame 6 (t = 0.2 s, 7 hits)
    for k in range(6):
        snap = only(step(tracker, k / FPS, box(200, 200)))
        assert (snap.state, snap.track_id, snap.hits, snap.det_index) == (TrackState.TENTATIVE, -1, k + 1, 0)
    for k in range(6, 107):
        snap = only(step(tracker, k / FPS, box(200, 200)))
        assert (snap.state, snap.track_id, snap.det_index, snap.time_since_update_s) == (TrackState.CONFIRMED, 1, 0, 0)
        assert snap.age == k + 1 and snap.hits == k + 1
        np.testing.assert_allclose(snap.box, box(200, 200), atol=1e-3)


@pytest.mark.parametrize(
    ("min_hits", "min_confirm_s", "first_confirmed_frame"),
    [(1, 0.0, 0), (3, 0.0, 2), (5, 0.0, 4), (1, 0.5, 15), (3, 0.2, 6), (10, 0.1, 9)],
)
def test_confirmation_needs_both_hits_and_time(min_hits: int, min_confirm_s: float, first_confirmed_frame: int) -> None:
    tracker = Tracker(TrackerSettings(min_hits=min_hits, min_confirm_s=min_confirm_s))
    states = [only(step(tracker, k / FPS, box(100, 100))).state for k in range(20)]
    assert states.index(TrackState.CONFIRMED) == first_confirmed_frame
    assert set(states[first_confirmed_frame:]) == {TrackState.CONFIRMED}


def test_tentative_track_that_misses_is_dropped_and_uses_no_id() -> None:
    tracker = Tracker()
    step(tracker, 0.0, box(100, 100))
    step(tracker, 1 / FPS, box(100, 100))
    assert step(tracker, 2 / FPS) == []  # missed once while tentative: gone, not reported
    t0 = 3 / FPS
    for k in range(10):
        snaps = step(tracker, t0 + k / FPS, box(300, 300))
    assert only(snaps).track_id == 1


@pytest.mark.parametrize(("speed", "dy"), [(4.0, 5.0), (12.0, 5.0), (8.0, 20.0)])
def test_crossing_faces_keep_their_ids(speed: float, dy: float) -> None:
    """Two faces move through each other at constant, opposite velocities; neither ID may swap.

    (``dy`` keeps the boxes from being identical at the crossing frame, where "which face is
    which" would be undefined.)
    """
    tracker = Tracker()
    ids_of: dict[str, set[int]] = {"a": set(), "b": set()}
    gt_frames, hyp_frames = [], []
    for k in range(int(400 / speed)):
        a, b = box(100 + speed * k, 200), box(500 - speed * k, 200 + dy)
        order = (a, b) if k % 2 else (b, a)  # detection order must not matter
        snaps = step(tracker, k / FPS, *order)
        for s in shown(snaps):
            assert s.state is TrackState.CONFIRMED and s.det_index >= 0
            name = "a" if order[s.det_index] is a else "b"
            ids_of[name].add(s.track_id)
        gt_frames.append({1: a, 2: b})
        hyp_frames.append({s.track_id: s.box for s in shown(snaps)})
    assert ids_of == {"a": {1}, "b": {2}} or ids_of == {"a": {2}, "b": {1}}
    summary = mot_summary(gt_frames, hyp_frames)
    assert summary["num_switches"] == 0
    # the only errors are the 6 frames per face before confirmation (0.2 s at 30 fps)
    assert (summary["num_misses"], summary["num_false_positives"]) == (12, 0)


def test_occlusion_shorter_than_max_age_keeps_the_id() -> None:
    tracker = Tracker()  # max_age_s = 1.0
    speed = 3.0  # px per frame
    for k in range(30):
        snap = only(step(tracker, k / FPS, box(100 + speed * k, 200)))
    assert snap.track_id == 1
    for k in range(30, 45):  # 0.5 s: detector runs, finds nothing
        snap = only(step(tracker, k / FPS))
        assert (snap.state, snap.track_id, snap.det_index) == (TrackState.LOST, 1, -1)
        assert snap.time_since_update_s == pytest.approx((k - 29) / FPS)
    snap = only(step(tracker, 45 / FPS, box(100 + speed * 45, 200)))  # back where the motion leads
    assert (snap.state, snap.track_id, snap.det_index, snap.time_since_update_s) == (TrackState.CONFIRMED, 1, 0, 0)


def test_face_gone_longer_than_max_age_gets_a_new_id() -> None:
    tracker = Tracker(TrackerSettings(max_age_s=1.0))
    t = confirmed_static(tracker)
    removed = []
    for k in range(1, 46):  # 1.5 s without the face
        snaps = step(tracker, t + k / FPS)
        removed += [s for s in snaps if s.state is TrackState.REMOVED]
        assert all(s.track_id == 1 for s in snaps)
    assert len(removed) == 1 and removed[0].track_id == 1  # reported once, as it ends
    assert step(tracker, t + 46 / FPS) == []
    t += 47 / FPS
    snaps = [only(step(tracker, t + k / FPS, box(200, 200))) for k in range(7)]
    assert [s.track_id for s in snaps] == [-1] * 6 + [2]


def test_max_age_boundary_is_inclusive() -> None:
    """A track unmatched for exactly ``max_age_s`` survives; one tick more and it is removed."""
    settings = TrackerSettings(min_hits=1, min_confirm_s=0.0, max_age_s=1.0)
    keeps, ends = Tracker(settings), Tracker(settings)
    for tracker in (keeps, ends):
        step(tracker, 0.0, box(100, 100))
    assert only(step(keeps, 1.0, box(100, 100))).track_id == 1
    assert only(step(ends, 1.25)).state is TrackState.REMOVED
    snap = only(step(ends, 1.5, box(100, 100)))
    assert snap.track_id == 2


def test_skipped_frames_predict_and_keep_the_track() -> None:
    """``update(None, None, t)``: no detection ran, so nothing is missed; the box follows the motion."""
    tracker = Tracker()
    speed = 4.0
    for k in range(30):
        step(tracker, k / FPS, box(100 + speed * k, 200))
    for k in range(30, 90):  # detect every 3rd frame
        if k % 3 == 0:
            snap = only(step(tracker, k / FPS, box(100 + speed * k, 200)))
            assert snap.det_index == 0
        else:
            snap = only(tracker.update(None, None, k / FPS))
            assert snap.det_index == -1 and snap.landmarks is None
            np.testing.assert_allclose(snap.box, box(100 + speed * k, 200), atol=2.0)
        assert (snap.state, snap.track_id) == (TrackState.CONFIRMED, 1)
    t = 89 / FPS
    for k in range(1, 28):  # 0.9 s of skipped frames: predicted, still confirmed, not aged out
        snap = only(tracker.update(None, None, t + k / FPS))
        assert (snap.state, snap.track_id) == (TrackState.CONFIRMED, 1)
    np.testing.assert_allclose(snap.box, box(100 + speed * (89 + 27), 200), atol=6.0)
    snap = only(step(tracker, t + 28 / FPS, box(100 + speed * (89 + 28), 200)))
    assert (snap.state, snap.track_id, snap.det_index) == (TrackState.CONFIRMED, 1, 0)


def test_skipped_frames_still_age_out_after_max_age() -> None:
    tracker = Tracker(TrackerSettings(max_age_s=1.0))
    t = confirmed_static(tracker)
    assert only(tracker.update(None, None, t + 1.0)).state is TrackState.CONFIRMED
    assert only(tracker.update(None, None, t + 1.01)).state is TrackState.REMOVED
    assert tracker.update(None, None, t + 1.02) == []


def test_skipped_frames_do_not_drop_a_tentative_track() -> None:
    tracker = Tracker()
    states = []
    for k in range(10):
        snaps = step(tracker, k / FPS, box(100, 100)) if k % 3 == 0 else tracker.update(None, None, k / FPS)
        states.append(only(snaps).state)
    # hits at frames 0, 3, 6: at frame 6, 3 hits and 0.2 s -> confirmed
    assert states == [TrackState.TENTATIVE] * 6 + [TrackState.CONFIRMED] * 4


def test_two_trackers_count_ids_independently() -> None:
    one, two = (
        Tracker(TrackerSettings(min_hits=1, min_confirm_s=0.0)),
        Tracker(TrackerSettings(min_hits=1, min_confirm_s=0.0)),
    )
    assert only(step(one, 0.0, box(100, 100))).track_id == 1
    assert [s.track_id for s in step(one, 0.1, box(100, 100), box(400, 400))] == [1, 2]
    assert only(step(two, 5.0, box(700, 700))).track_id == 1


def test_ids_are_dense_in_confirmation_order() -> None:
    tracker = Tracker(TrackerSettings(min_hits=2, min_confirm_s=0.0))
    step(tracker, 0.0, box(100, 100))  # tentative A
    step(tracker, 0.1, box(400, 400))  # A missed -> dropped; B tentative
    snaps = step(tracker, 0.2, box(400, 400), box(700, 100))  # B confirmed, C tentative
    assert [(s.track_id, s.state) for s in snaps] == [(1, TrackState.CONFIRMED), (-1, TrackState.TENTATIVE)]
    snaps = step(tracker, 0.3, box(400, 400), box(700, 100))
    assert [s.track_id for s in snaps] == [1, 2]


# -- low-score (ByteTrack) pass --------------------------------------------------------------------


def test_low_score_detections_never_start_tracks() -> None:
    tracker = Tracker()
    for k in range(60):
        assert step(tracker, k / FPS, box(100, 100), score=0.5) == []


def test_low_score_detections_extend_confirmed_and_lost_tracks() -> None:
    tracker = Tracker()
    t = confirmed_static(tracker)
    for k in range(1, 10):  # the face is partly occluded: the detector is unsure
        snap = only(step(tracker, t + k / FPS, box(200, 200), score=0.5))
        assert (snap.state, snap.track_id, snap.det_index, snap.score) == (TrackState.CONFIRMED, 1, 0, 0.5)
    t += 10 / FPS
    assert only(step(tracker, t)).state is TrackState.LOST
    snap = only(step(tracker, t + 1 / FPS, box(200, 200), score=0.5))
    assert (snap.state, snap.track_id, snap.det_index) == (TrackState.CONFIRMED, 1, 0)


def test_low_score_detection_next_to_a_track_starts_nothing_and_matches_nothing() -> None:
    tracker = Tracker()
    t = confirmed_static(tracker)
    snaps = step(tracker, t + 1 / FPS, box(500, 500), score=0.5)
    assert [(s.track_id, s.state, s.det_index) for s in snaps] == [(1, TrackState.LOST, -1)]


def test_low_score_pass_can_be_switched_off() -> None:
    tracker = Tracker(TrackerSettings(low_score_pass=False))
    t = confirmed_static(tracker)
    snap = only(step(tracker, t + 1 / FPS, box(200, 200), score=0.5))
    assert (snap.state, snap.det_index) == (TrackState.LOST, -1)


def test_low_score_detection_does_not_feed_a_tentative_track() -> None:
    tracker = Tracker()
    step(tracker, 0.0, box(100, 100))
    assert step(tracker, 1 / FPS, box(100, 100), score=0.5) == []


def test_high_score_detection_wins_over_low_score_one_for_the_same_track() -> None:
    tracker = Tracker()
    t = confirmed_static(tracker)
    boxes = dets(box(202, 200), box(200, 200))
    snap = only(tracker.update(boxes, np.array([0.5, 0.9], np.float32), t + 1 / FPS))
    assert snap.det_index == 1


# -- payloads, inputs, numerics --------------------------------------------------------------------


def test_landmarks_travel_with_the_matched_detection() -> None:
    tracker = Tracker(TrackerSettings(min_hits=1, min_confirm_s=0.0))
    marks = [np.full((5, 2), 1.0, np.float32), np.full((5, 2), 2.0, np.float32)]
    snaps = tracker.update(dets(box(100, 100), box(400, 400)), np.array([0.9, 0.9]), 0.0, extras=marks)
    assert [float(s.landmarks[0, 0]) for s in snaps] == [1.0, 2.0]
    snaps = tracker.update(dets(box(400, 400), box(100, 100)), np.array([0.9, 0.9]), 0.1, extras=marks)
    assert [(s.track_id, s.det_index, float(s.landmarks[0, 0])) for s in snaps] == [(1, 1, 2.0), (2, 0, 1.0)]
    assert all(s.landmarks.dtype == np.float32 and not s.landmarks.flags.writeable for s in snaps)
    bad = np.full((2, 5, 2), np.nan, np.float32)
    snaps = tracker.update(dets(box(100, 100), box(400, 400)), np.array([0.9, 0.9]), 0.2, extras=bad)
    assert [s.landmarks for s in snaps] == [None, None]
    assert all(s.landmarks is None for s in tracker.update(None, None, 0.3))


@pytest.mark.parametrize(
    "junk",
    [
        [0, 0, 0, 0],
        [50, 50, 50, 90],  # zero width
        [90, 50, 50, 90],  # inverted
        [np.nan, 0, 10, 10],
        [0, 0, np.inf, 10],
        [-np.inf, -np.inf, np.inf, np.inf],
    ],
)
def test_degenerate_detections_are_ignored(junk: list[float]) -> None:
    tracker = Tracker(TrackerSettings(min_hits=1, min_confirm_s=0.0))
    boxes = np.array([junk, box(300, 300)], np.float32)
    for k in range(5):
        snap = only(tracker.update(boxes, np.array([0.99, 0.99]), k / FPS))
        assert (snap.track_id, snap.det_index) == (1, 1)
        assert np.isfinite(snap.box).all()


def test_nan_score_is_ignored() -> None:
    tracker = Tracker(TrackerSettings(min_hits=1, min_confirm_s=0.0))
    assert tracker.update(dets(box(100, 100)), np.array([np.nan]), 0.0) == []


@pytest.mark.parametrize("centre", [(-100.0, -100.0), (5000.0, 20.0), (1e6, 1e6)])
def test_out_of_frame_boxes_are_tracked_without_nan(centre: tuple[float, float]) -> None:
    tracker = Tracker()
    for k in range(10):
        snaps = step(tracker, k / FPS, box(*centre))
    snap = only(snaps)
    assert snap.track_id == 1 and np.isfinite(snap.box).all()
    np.testing.assert_allclose(snap.box, box(*centre), rtol=1e-5)


def test_random_junk_never_produces_nan_or_skipped_ids() -> None:
    """Property test: random boxes mixed with NaN/inf/zero-area junk and random skips and gaps."""
    rng = np.random.default_rng(7)
    tracker = Tracker(TrackerSettings(min_hits=2, min_confirm_s=0.05))
    t, ids = 0.0, set()
    for _ in range(300):
        t += float(rng.choice([0.0, 1 / FPS, 0.1, 0.7]))
        if rng.random() < 0.2:
            snaps = tracker.update(None, None, t)
        else:
            n = int(rng.integers(0, 6))
            xy = rng.uniform(-100, 800, (n, 2))
            wh = rng.choice([0.0, 1e-3, 20.0, 80.0, 1e5], (n, 2))
            boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
            boxes[rng.random((n, 4)) < 0.05] = np.nan
            boxes[rng.random((n, 4)) < 0.02] = np.inf
            snaps = tracker.update(boxes, rng.uniform(0, 1, n).astype(np.float32), t)
        for s in snaps:
            assert np.isfinite(s.box).all() and s.time_since_update_s >= 0
            if s.track_id != -1:
                ids.add(s.track_id)
    assert ids == set(range(1, len(ids) + 1))


def test_time_must_not_decrease_but_may_repeat() -> None:
    tracker = Tracker(TrackerSettings(min_hits=1, min_confirm_s=0.0))
    step(tracker, 1.0, box(100, 100))
    before = only(tracker.update(None, None, 1.0)).box  # dt = 0 is allowed and changes nothing
    with pytest.raises(ValueError, match="t: must not decrease"):
        step(tracker, 0.5, box(100, 100))
    with pytest.raises(ValueError, match="t: must be a finite number"):
        step(tracker, float("nan"), box(100, 100))
    after = only(step(tracker, 1.0, box(100, 100)))  # the failed calls left no trace
    assert after.track_id == 1 and after.age == 3
    np.testing.assert_allclose(after.box, before, atol=1e-3)


@pytest.mark.parametrize(
    ("boxes", "scores", "extras", "text"),
    [
        (np.zeros((2, 3), np.float32), None, None, r"boxes: expected shape \(N, 4\)"),
        (np.zeros((2, 4), np.float32), np.zeros(3), None, r"scores: expected shape \(2,\)"),
        (np.zeros((2, 4), np.float32), None, [None], "extras: expected 2 items"),
        (np.zeros((1, 4), np.float32), None, [np.zeros((4, 2))], r"extras\[0\]: expected shape \(5, 2\)"),
        (None, np.zeros(0), None, "must be None when boxes is None"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(boxes: object, scores: object, extras: object, text: str) -> None:
    tracker = Tracker()
    with pytest.raises(ValueError, match=text):
        tracker.update(boxes, scores, 0.0, extras=extras)  # type: ignore[arg-type]


def test_empty_detections_in_any_zero_size_shape() -> None:
    tracker = Tracker()
    assert tracker.update(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.0) == []
    assert tracker.update(np.zeros(0, np.float32), None, 0.1) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_age_s", 0.0),
        ("max_age_s", float("inf")),
        ("min_confirm_s", -0.1),
        ("min_hits", 0),
        ("min_hits", 2.5),
        ("iou_gate", 0.0),
        ("iou_gate", 1.5),
        ("low_score_pass", "yes"),
        ("low_score_threshold", -0.1),
        ("low_score_iou_gate", float("nan")),
        ("process_noise", 0.0),
        ("measurement_noise", True),
    ],
)
def test_settings_reject_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"TrackerSettings.{field}:"):
        TrackerSettings(**{field: value})


def test_settings_are_frozen() -> None:
    settings = TrackerSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_age_s = 2.0  # type: ignore[misc]


# -- association -----------------------------------------------------------------------------------


def _iou_brute(a: np.ndarray, b: np.ndarray) -> float:
    if (
        not (np.isfinite(a).all() and np.isfinite(b).all())
        or a[2] <= a[0]
        or a[3] <= a[1]
        or b[2] <= b[0]
        or b[3] <= b[1]
    ):
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if inter > 0 else 0.0


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 100, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(-5, 60, (n, 2))], axis=1)
    boxes[rng.random(n) < 0.1] = np.nan
    return boxes


def test_iou_matrix_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = _random_boxes(rng, int(rng.integers(0, 8))), _random_boxes(rng, int(rng.integers(0, 8)))
        got = iou_matrix(a, b)
        want = np.array([[_iou_brute(x, y) for y in b] for x in a]).reshape(len(a), len(b))
        assert got.shape == (len(a), len(b)) and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_iou_matrix_known_values_and_degenerate_boxes() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0], [5, 5, 5, 15]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 0, 0], [1e38, 1e38, 3e38, 3e38]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1, 1 / 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert np.isfinite(iou_matrix(np.full((1, 4), 1e308), np.full((1, 4), -1e308))).all()
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def _best_matching(iou: np.ndarray, gate: float) -> tuple[int, float]:
    """Brute force: the most allowed pairs, then the largest total IoU."""
    n_t, n_d = iou.shape
    best = (0, 0.0)
    for size in range(1, min(n_t, n_d) + 1):
        for rows in itertools.combinations(range(n_t), size):
            for cols in itertools.permutations(range(n_d), size):
                values = [iou[r, c] for r, c in zip(rows, cols, strict=True)]
                if all(v >= gate and v > 0 for v in values):
                    best = max(best, (size, float(sum(values))))
    return best


def test_associate_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        shape = (int(rng.integers(0, 5)), int(rng.integers(0, 5)))
        iou = rng.random(shape) * (rng.random(shape) < 0.7)
        gate = float(rng.choice([0.1, 0.3, 0.5]))
        matches, left_t, left_d = associate(iou, gate)
        assert matches.shape[1] == 2 and matches.dtype == np.int64
        assert all(iou[r, c] >= gate for r, c in matches)
        assert sorted([*matches[:, 0], *left_t]) == list(range(shape[0]))
        assert sorted([*matches[:, 1], *left_d]) == list(range(shape[1]))
        size, total = _best_matching(iou, gate)
        assert len(matches) == size
        assert sum(iou[r, c] for r, c in matches) == pytest.approx(total)


def test_associate_survives_nan_and_rejects_pairs_below_the_gate() -> None:
    iou = np.array([[np.nan, 0.9], [0.2, np.inf], [0.0, 0.0]])
    matches, left_t, left_d = associate(iou, 0.3)
    assert matches.tolist() == [[1, 1]] and left_t.tolist() == [0, 2] and left_d.tolist() == [0]
    with pytest.raises(ValueError, match="gate"):
        associate(iou, 0.0)


# -- Kalman filter ---------------------------------------------------------------------------------


def test_kalman_learns_constant_velocity_with_variable_dt() -> None:
    rng = np.random.default_rng(3)
    velocity = np.array([60.0, -30.0])  # px/s
    kf = BoxKalmanFilter(box(100, 300))
    t = 0.0
    for _ in range(40):
        dt = float(rng.uniform(0.01, 0.1))
        t += dt
        kf.predict(dt)
        kf.update(box(*(np.array([100.0, 300.0]) + velocity * t)))
    np.testing.assert_allclose(kf.state[4:6], velocity, atol=3.0)
    kf.predict(0.5)
    np.testing.assert_allclose(kf.box, box(*(np.array([100.0, 300.0]) + velocity * (t + 0.5))), atol=3.0)
    assert kf.box.dtype == np.float32


def test_kalman_size_never_goes_negative_and_state_stays_finite() -> None:
    kf = BoxKalmanFilter(box(100, 100, size=60))
    for k in range(1, 10):  # shrinking fast
        kf.predict(0.1)
        kf.update(box(100, 100, size=60 - 6 * k))
    kf.predict(100.0)
    w, h = kf.state[2:4]
    assert w >= 0 and h >= 0 and np.isfinite(kf.state).all()
    kf.predict(1e200)  # absurd gap: the state would overflow, so the step is refused
    assert np.isfinite(kf.state).all() and np.isfinite(kf.box).all()
    kf.update(np.zeros(4, np.float32))  # a zero-area measurement is fine too
    assert np.isfinite(kf.box).all()


def test_kalman_dt_zero_is_a_no_op_and_bad_inputs_raise() -> None:
    kf = BoxKalmanFilter(box(100, 100))
    before = kf.state
    kf.predict(0.0)
    np.testing.assert_array_equal(kf.state, before)
    with pytest.raises(ValueError, match="dt_s"):
        kf.predict(-0.1)
    with pytest.raises(ValueError, match="box: contains NaN"):
        kf.update(np.array([0, 0, np.nan, 1], np.float32))
    with pytest.raises(ValueError, match="box: contains NaN"):
        BoxKalmanFilter(np.array([0, 0, np.inf, 1], np.float32))


# -- MOT metrics helper ----------------------------------------------------------------------------


def test_mot_summary_perfect_tracking() -> None:
    gt = [{1: box(100 + k, 100), 2: box(300, 300 - k)} for k in range(20)]
    hyp = [{7: b[1], 9: b[2]} for b in gt]
    summary = mot_summary(gt, hyp)
    assert summary["mota"] == 1.0 and summary["idf1"] == 1.0
    assert summary["num_switches"] == 0 and summary["num_frames"] == 20


def test_mot_summary_counts_an_id_switch() -> None:
    gt = [{1: box(100 + k, 100)} for k in range(20)]
    hyp = [{1 if k < 10 else 2: frame[1]} for k, frame in enumerate(gt)]
    summary = mot_summary(gt, hyp)
    assert summary["num_switches"] == 1
    assert summary["mota"] == pytest.approx(1 - 1 / 20)


def test_mot_summary_misses_and_false_positives() -> None:
    gt = [{1: box(100, 100)}, {1: box(100, 100)}, {}]
    hyp = [{5: box(100, 100)}, {}, {5: box(400, 400)}]
    summary = mot_summary(gt, hyp)
    assert (summary["num_misses"], summary["num_false_positives"]) == (1, 1)
