"""Best-shot selection: crop quality, per-track mailboxes, fair bounded hand-out to the embedder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream.identity.bestshot import (
    BestShotSelector,
    BestShotSettings,
    Mailbox,
    QualitySettings,
    crop_quality,
    pose_score,
)
from stream.types import FaceCrop, TrackKey
from tests.fakes import FakeRecognition

FRAME_HW = (720, 1280)


def sharp_crop(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)


def blurred_crop(seed: int = 0) -> np.ndarray:
    return cv2.GaussianBlur(sharp_crop(seed), (0, 0), 3.0)


def face_landmarks(box: np.ndarray, nose_shift: float = 0.0) -> np.ndarray:
    """Frontal 5-point landmarks inside ``box``; ``nose_shift`` moves the nose along x (share of width)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5 + nose_shift, 0.6], [0.35, 0.8], [0.65, 0.8]])
    return (rel * [w, h] + [x1, y1]).astype(np.float32)


def quality(box, *, score=0.99, nose_shift=0.0, crop=None, min_face_px=20.0):
    box = np.asarray(box, np.float32)
    return crop_quality(
        box, score, face_landmarks(box, nose_shift), FRAME_HW, sharp_crop() if crop is None else crop, min_face_px
    )


BIG = (500, 200, 650, 380)


def test_a_good_face_scores_high_without_flags() -> None:
    q = quality(BIG)
    assert q.score > 0.9
    assert q.flags == frozenset()
    assert 0.0 <= q.score <= 1.0


def test_bigger_faces_score_higher_and_small_is_flagged() -> None:
    small = quality((500, 200, 515, 218))
    medium = quality((500, 200, 560, 270))
    assert small.score < medium.score < quality(BIG).score
    assert "small" in small.flags and "small" not in medium.flags


def test_size_saturates_at_the_crop_size() -> None:
    assert quality((500, 200, 620, 340)).size == quality((300, 100, 700, 600)).size == 1.0


def test_sharper_faces_score_higher_and_blurry_is_flagged() -> None:
    blurry = quality(BIG, crop=blurred_crop())
    assert blurry.score < quality(BIG).score
    assert "blurry" in blurry.flags


def test_frontal_faces_score_higher_than_turned_ones() -> None:
    frontal, turned, profile = (quality(BIG, nose_shift=s) for s in (0.0, 0.1, 0.22))
    assert frontal.pose > 0.99
    assert frontal.score > turned.score > profile.score
    assert "profile" in profile.flags and "profile" not in turned.flags


def test_pose_ignores_roll() -> None:
    points = face_landmarks(np.array(BIG, np.float32), 0.1).astype(np.float64)
    centre = points.mean(axis=0)
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rolled = (points - centre) @ rot.T + centre
    assert pose_score(rolled) == pytest.approx(pose_score(points), abs=1e-9)


def test_clipped_faces_score_lower_and_are_flagged() -> None:
    clipped = quality((-60, 200, 90, 380))
    assert "clipped" in clipped.flags
    assert clipped.score < quality((0, 200, 150, 380)).score
    assert "clipped" not in quality((0, 200, 150, 380)).flags


def test_low_detection_score_lowers_quality() -> None:
    low = quality(BIG, score=0.6)
    assert low.score < quality(BIG).score
    assert "low_score" in low.flags


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="box"):
        crop_quality(np.zeros(3), 0.9, np.zeros((5, 2)), FRAME_HW, sharp_crop(), 20)
    with pytest.raises(ValueError, match="landmarks"):
        crop_quality(np.array(BIG), 0.9, np.zeros((4, 2)), FRAME_HW, sharp_crop(), 20)
    with pytest.raises(ValueError, match="sharp_blur"):
        QualitySettings(sharp_blur=0)


# -- Mailbox ------------------------------------------------------------------------------------


def test_mailbox_keeps_the_best_k() -> None:
    box: Mailbox[str] = Mailbox(capacity=2, min_gain=0.05)
    for name, q in [("a", 0.3), ("b", 0.5), ("c", 0.9), ("d", 0.1), ("e", 0.7)]:
        box.offer(name, q)
    assert len(box) == 2
    assert box.take() == ["c", "e"]
    assert len(box) == 0 and box.take() == []


def test_mailbox_replaces_only_when_clearly_better() -> None:
    box: Mailbox[str] = Mailbox(capacity=2, min_gain=0.05)
    assert box.offer("a", 0.5) and box.offer("b", 0.6)
    assert not box.offer("c", 0.54)  # better than the worst, but not by min_gain
    assert not box.offer("d", 0.55)
    assert box.offer("e", 0.56)
    assert box.take() == ["b", "e"]


def test_mailbox_pop_best_and_validation() -> None:
    box: Mailbox[str] = Mailbox(capacity=3)
    box.offer("a", 0.2)
    box.offer("b", 0.8)
    assert box.pop_best() == ("b", 0.8)
    assert box.pop_best() == ("a", 0.2)
    assert box.pop_best() is None
    with pytest.raises(ValueError, match="capacity"):
        Mailbox(capacity=0)


# -- Selector -----------------------------------------------------------------------------------


def key(track_id: int, stream: str = "cam") -> TrackKey:
    return TrackKey(stream, 0, track_id)


def crop(track: TrackKey, frame: int, q: float) -> FaceCrop:
    return FaceCrop(track, frame, np.zeros((112, 112, 3), np.uint8), q)


def test_queue_is_bounded_by_tracks_times_capacity() -> None:
    sel = BestShotSelector(BestShotSettings(capacity=2, min_gain=0.0))
    rng = np.random.default_rng(1)
    for frame in range(200):
        for tid in range(3):
            sel.offer(crop(key(tid), frame, float(rng.uniform(0.2, 1.0))), t=frame / 25)
        assert len(sel) <= 3 * 2
    assert len(sel) == 6


def test_low_quality_crops_are_never_held() -> None:
    sel = BestShotSelector(BestShotSettings(min_quality=0.3))
    assert not sel.offer(crop(key(1), 0, 0.29), 0.0)
    assert sel.ready(0.0, 10) == []


def test_ready_hands_out_best_first_and_counts_attempts() -> None:
    sel = BestShotSelector(BestShotSettings(capacity=2, min_gain=0.0))
    for frame, q in enumerate([0.4, 0.9, 0.6]):
        sel.offer(crop(key(1), frame, q), 0.0)
    out = sel.ready(0.0, 10)
    assert [c.quality for c in out] == [0.9, 0.6]
    assert sel.attempts(key(1)) == 2
    assert len(sel) == 0


def test_ready_is_fair_across_tracks() -> None:
    sel = BestShotSelector(BestShotSettings(capacity=3, min_gain=0.0))
    for tid in (1, 2, 3):
        for frame in range(3):
            sel.offer(crop(key(tid), frame, 0.5 + 0.1 * frame), 0.0)
    first = sel.ready(0.0, 3)
    assert sorted(c.track.track_id for c in first) == [1, 2, 3]
    assert all(c.quality == pytest.approx(0.7) for c in first)
    second = sel.ready(0.0, 2)
    third = sel.ready(0.0, 4)
    ids = [c.track.track_id for c in second + third]
    assert sorted(ids[:3]) == [1, 2, 3]  # a full round before anyone gets a third crop
    assert len(ids) == 6


def test_new_tracks_are_served_before_tracks_with_many_attempts() -> None:
    sel = BestShotSelector(BestShotSettings(capacity=2, min_gain=0.0))
    for frame in range(4):
        sel.offer(crop(key(1), frame, 0.8), float(frame))
        sel.ready(float(frame), 1)
    sel.offer(crop(key(1), 9, 0.9), 9.0)
    sel.offer(crop(key(2), 9, 0.5), 9.0)
    assert [c.track.track_id for c in sel.ready(9.0, 1)] == [2]


def test_attempts_stop_at_the_cap_then_recheck_every_period() -> None:
    settings = BestShotSettings(capacity=2, min_gain=0.0, max_attempts=3, recheck_s=5.0)
    sel = BestShotSelector(settings)
    track = key(7)
    handed = []
    for frame in range(48):  # 12 s at 4 fps (exact binary times)
        t = frame * 0.25
        sel.offer(crop(track, frame, 0.8), t)
        handed += [(t, c) for c in sel.ready(t, 4)]
    times = [t for t, _ in handed]
    assert times == [0.0, 0.25, 0.5, 5.5, 10.5]  # 3 attempts, then one re-check per 5 s
    recheck_gaps = np.diff(times[2:])
    assert np.all(recheck_gaps >= 5.0 - 1e-9)
    assert sel.attempts(track) == 5


def test_recheck_uses_a_fresh_crop_not_one_held_from_before_the_cap() -> None:
    sel = BestShotSelector(BestShotSettings(capacity=2, min_gain=0.0, max_attempts=1, recheck_s=5.0))
    track = key(1)
    sel.offer(crop(track, 0, 0.9), 0.0)
    sel.offer(crop(track, 1, 0.8), 0.0)
    assert [c.frame_index for c in sel.ready(0.0, 5)] == [0]
    assert sel.ready(6.0, 5) == []  # the frame-1 crop was dropped when the cap was reached
    sel.offer(crop(track, 60, 0.5), 6.0)
    assert [c.frame_index for c in sel.ready(6.0, 5)] == [60]


def test_stale_crops_are_dropped_when_max_age_is_set() -> None:
    sel = BestShotSelector(BestShotSettings(max_age_s=1.0))
    sel.offer(crop(key(1), 0, 0.9), 0.0)
    assert sel.ready(2.0, 5) == []


def test_end_forgets_a_track() -> None:
    sel = BestShotSelector(BestShotSettings(max_attempts=1))
    sel.offer(crop(key(1), 0, 0.9), 0.0)
    sel.ready(0.0, 1)
    sel.offer(crop(key(1), 1, 0.9), 0.1)
    sel.end(key(1))
    assert len(sel) == 0 and sel.attempts(key(1)) == 0 and key(1) not in sel.tracks
    sel.offer(crop(key(1), 2, 0.9), 0.2)
    assert len(sel.ready(0.2, 5)) == 1  # a fresh start: attempts were forgotten


def test_settings_validation_and_from_recognition() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BestShotSettings(capacity=0)
    with pytest.raises(ValueError, match="recheck_s"):
        BestShotSettings(recheck_s=0.0)

    s = BestShotSettings.from_recognition(FakeRecognition(max_attempts_per_track=4, recheck_s=2.5), capacity=3)
    assert (s.max_attempts, s.recheck_s, s.capacity) == (4, 2.5, 3)
