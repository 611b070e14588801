"""SORT-style multi-object tracker with a ByteTrack second pass, timed in seconds.

Call ``Tracker.update(boxes, scores, t)`` once per frame, in time order. ``boxes=None`` means the
detector did not run on this frame (tracks are only predicted); an empty (0, 4) array means it ran
and found nothing (tracks miss).

Life of a track (``t`` is the update's time, ``last_match`` the time of the track's last match):

* An unmatched high-score detection (``score >= low_score_threshold``) starts a TENTATIVE track
  (hits = 1). Low-score detections never start tracks.
* TENTATIVE -> CONFIRMED in the first update where ``hits >= min_hits`` and
  ``t - born >= min_confirm_s`` (with 1 µs tolerance for float times). The track gets its public
  ID then: 1, 2, 3, ... per ``Tracker`` instance, so tentative tracks that die never use an ID.
  Until then its snapshots carry ``track_id = -1``. With ``min_hits=1, min_confirm_s=0`` a track is
  confirmed in the update that creates it.
* A TENTATIVE track that is not matched in a detection update is dropped at once (not reported).
* CONFIRMED -> LOST when a detection update does not match it; LOST -> CONFIRMED when one does.
  A skipped frame (``boxes=None``) changes no state. With ``hold_size_when_lost`` a track that
  becomes LOST stops growing or shrinking (its size rate is zeroed) but keeps moving, so a face
  that passes behind another comes out with a box of its own size where its motion leads.
* Any track with ``t - last_match > max_age_s`` is removed at the start of the update, before
  association, so it can never be revived. A removed track that had a public ID is reported once,
  in that update, with state REMOVED; then never again.

Association per detection update: (1) detections with ``score >= low_score_threshold`` against all
live tracks, by IoU and the Hungarian algorithm, keeping pairs with ``IoU >= iou_gate``; (2) if
``low_score_pass``, the remaining detections against the still-unmatched CONFIRMED and LOST tracks
with ``IoU >= low_score_iou_gate`` (tentative tracks need high-score evidence); (3) if
``centre_gate > 0``, the high-score detections still unmatched against every still-unmatched track
by centre distance in units of the track box's size (``sqrt(w h)``), keeping pairs within
``centre_gate`` whose sizes differ by at most ``max_scale_change``. IoU alone loses small or fast
faces whose box moved by more than about a third of its width between two detections (a 20 px
face, or any face when detection runs only every few frames); the third pass catches them, after
IoU has had its say, so overlapping faces are still told apart by IoU first. A low-score match
extends a track exactly like a high-score one. Detections with a NaN/inf coordinate or score, or
zero or negative width or height, are ignored: they never match and never start a track.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trackers.association import associate, associate_by_cost, centre_distance_matrix, iou_matrix, valid_boxes
from trackers.kalman import BoxKalmanFilter
from trackers.types import TrackSnapshot, TrackState

_TIME_EPS_S = 1e-6
_NO_ID = -1


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """Tracker thresholds; every time is in seconds. Invalid values raise ValueError naming the field.

    Attributes:
        max_age_s: a track not matched for longer than this is removed. Longer rides out longer
            occlusions but keeps ghosts around and risks giving a returning face an old ID.
        min_confirm_s: a new track must exist this long before it is confirmed (and shown).
        min_hits: ...and be matched at least this many times. Raising either suppresses flicker
            from false detections but delays the first appearance of a real face.
        iou_gate: least IoU for a high-score detection to join a track, in (0, 1].
        low_score_pass: run the second (ByteTrack) pass for low-score detections.
        low_score_threshold: detections scoring below this are "low": second pass only, never a
            new track.
        low_score_iou_gate: least IoU for a low-score detection to join a track (stricter than
            ``iou_gate`` because low-score boxes are less reliable), in (0, 1].
        process_noise: Kalman acceleration noise in box sizes per second² (see ``trackers.kalman``).
        measurement_noise: detector jitter as a fraction of the box size.
    """

    max_age_s: float = 1.5
    min_confirm_s: float = 0.2
    min_hits: int = 3
    iou_gate: float = 0.3
    low_score_pass: bool = True
    low_score_threshold: float = 0.8
    low_score_iou_gate: float = 0.5
    process_noise: float = 2.0
    measurement_noise: float = 0.05
    centre_gate: float = 1.0
    max_scale_change: float = 1.5
    hold_size_when_lost: bool = True

    def __post_init__(self) -> None:
        _check_number("max_age_s", self.max_age_s, low=0.0, low_open=True)
        _check_number("min_confirm_s", self.min_confirm_s, low=0.0)
        if isinstance(self.min_hits, bool) or not isinstance(self.min_hits, int) or self.min_hits < 1:
            raise ValueError(f"TrackerSettings.min_hits: must be an int >= 1, got {self.min_hits!r}")
        _check_number("iou_gate", self.iou_gate, low=0.0, low_open=True, high=1.0)
        if not isinstance(self.low_score_pass, bool):
            raise ValueError(f"TrackerSettings.low_score_pass: must be a bool, got {self.low_score_pass!r}")
        _check_number("low_score_threshold", self.low_score_threshold, low=0.0, high=1.0)
        _check_number("low_score_iou_gate", self.low_score_iou_gate, low=0.0, low_open=True, high=1.0)
        _check_number("process_noise", self.process_noise, low=0.0, low_open=True)
        _check_number("measurement_noise", self.measurement_noise, low=0.0, low_open=True)
        if not isinstance(self.hold_size_when_lost, bool):
            raise ValueError(f"TrackerSettings.hold_size_when_lost: must be a bool, got {self.hold_size_when_lost!r}")
        _check_number("centre_gate", self.centre_gate, low=0.0, high=10.0)
        _check_number("max_scale_change", self.max_scale_change, low=1.0, high=10.0)


def _check_number(name: str, value: object, *, low: float, low_open: bool = False, high: float | None = None) -> None:
    prefix = f"TrackerSettings.{name}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{prefix}: must be a finite number, got {value!r}")
    if value < low or (low_open and value == low):
        raise ValueError(f"{prefix}: must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{prefix}: must be <= {high}, got {value!r}")


@dataclass(slots=True, eq=False)
class _Track:
    """Mutable per-track state, owned by one ``Tracker``."""

    serial: int
    filter: BoxKalmanFilter
    born_s: float
    last_match_s: float
    score: float
    state: TrackState = TrackState.TENTATIVE
    track_id: int = _NO_ID
    hits: int = 1
    age: int = 1
    det_index: int = -1
    landmarks: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _Detections:
    """One update's detections, parsed: float64 boxes/scores, per-detection landmarks, validity."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: list[np.ndarray | None] = field(repr=False)
    valid: np.ndarray


class Tracker:
    """Multi-object box tracker. One instance per video stream; IDs and state are per instance.

    Example:
        >>> tracker = Tracker(TrackerSettings(min_hits=1, min_confirm_s=0.0))
        >>> snaps = tracker.update(np.array([[10, 10, 50, 50]], np.float32), np.array([0.99]), t=0.0)
        >>> [(s.track_id, s.state.value) for s in snaps]
        [(1, 'confirmed')]
    """

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self._settings = settings if settings is not None else TrackerSettings()
        self._tracks: list[_Track] = []
        self._last_t: float | None = None
        self._next_id = 1
        self._serials = itertools.count()

    @property
    def settings(self) -> TrackerSettings:
        return self._settings

    def update(
        self,
        boxes: np.ndarray | None,
        scores: np.ndarray | None,
        t: float,
        extras: Sequence[np.ndarray | None] | np.ndarray | None = None,
    ) -> list[TrackSnapshot]:
        """Advance to time ``t`` and fold in this frame's detections.

        Args:
            boxes: (N, 4) ``x1, y1, x2, y2`` pixels (float32 preferred; any real dtype is read),
                or ``None`` when detection was skipped on this frame (predict only; ``scores`` and
                ``extras`` must then be ``None`` too). An empty array means "ran, found nothing".
            scores: (N,) detection scores, or ``None`` for "all 1.0".
            t: time of the frame in seconds (e.g. pts); finite and never below the previous ``t``
                (equal is allowed: dt = 0).
            extras: optional per-detection landmarks, length N, each (5, 2) or ``None``; a match
                copies its detection's landmarks (as float32) to ``TrackSnapshot.landmarks``.
                Landmarks containing NaN/inf are passed on as ``None``.

        Returns:
            Snapshots of every live track (tentative ones included, with ``track_id=-1``), plus a
            REMOVED snapshot for each confirmed-once track removed in this update; sorted by public
            ID, tentative tracks last in creation order. ``det_index`` is the detection index the
            track matched in this update, else -1.
        """
        dets = _parse_detections(boxes, scores, extras)  # validate everything before changing state
        dt = self._advance_clock(t)
        t = float(t)
        self._predict(dt)
        ended = self._remove_expired(t)
        if dets is not None:
            self._step_detections(dets, t)
        return self._snapshots(t, ended)

    # -- phases of update -------------------------------------------------------------------

    def _advance_clock(self, t: float) -> float:
        if isinstance(t, bool) or not isinstance(t, int | float | np.floating | np.integer) or not math.isfinite(t):
            raise ValueError(f"t: must be a finite number of seconds, got {t!r}")
        t = float(t)
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"t: must not decrease, got {t!r} after {self._last_t!r}")
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t
        return dt

    def _predict(self, dt: float) -> None:
        for track in self._tracks:
            track.filter.predict(dt)
            track.age += 1
            track.det_index, track.landmarks = -1, None

    def _remove_expired(self, t: float) -> list[_Track]:
        expired = [tr for tr in self._tracks if t - tr.last_match_s > self._settings.max_age_s + _TIME_EPS_S]
        self._tracks = [tr for tr in self._tracks if tr not in expired]
        for track in expired:
            track.state = TrackState.REMOVED
        return [tr for tr in expired if tr.track_id != _NO_ID]

    def _step_detections(self, dets: _Detections, t: float) -> None:
        s = self._settings
        high = np.flatnonzero(dets.valid & (dets.scores >= s.low_score_threshold))
        low = np.flatnonzero(dets.valid & (dets.scores < s.low_score_threshold)) if s.low_score_pass else high[:0]
        left_tracks, left_high = self._match(self._tracks, high, dets, s.iou_gate, t)
        established = [tr for tr in left_tracks if tr.state is not TrackState.TENTATIVE]
        left_established, _ = self._match(established, low, dets, s.low_score_iou_gate, t)
        left_tentative = [tr for tr in left_tracks if tr.state is TrackState.TENTATIVE]
        if s.centre_gate > 0:
            left = self._match_by_centre([*left_established, *left_tentative], left_high, dets, t)
            left_tracks, left_high = left
            left_established = [tr for tr in left_tracks if tr.state is not TrackState.TENTATIVE]
            left_tentative = [tr for tr in left_tracks if tr.state is TrackState.TENTATIVE]
        self._mark_missed(left_established, left_tentative)
        for index in left_high:
            self._start_track(dets, int(index), t)

    def _match(
        self, tracks: list[_Track], det_indices: np.ndarray, dets: _Detections, gate: float, t: float
    ) -> tuple[list[_Track], np.ndarray]:
        """Match ``tracks`` to the detections ``det_indices``; return the unmatched of each."""
        if not tracks or det_indices.size == 0:
            return list(tracks), det_indices
        track_boxes = np.stack([tr.filter.box for tr in tracks])
        pairs, left_rows, left_cols = associate(iou_matrix(track_boxes, dets.boxes[det_indices]), gate)
        for row, col in pairs:
            self._extend(tracks[row], dets, int(det_indices[col]), t)
        return [tracks[row] for row in left_rows], det_indices[left_cols]

    def _match_by_centre(
        self, tracks: list[_Track], det_indices: np.ndarray, dets: _Detections, t: float
    ) -> tuple[list[_Track], np.ndarray]:
        """Third pass: what the IoU gate left, by centre distance in track-box sizes (small, fast faces)."""
        if not tracks or det_indices.size == 0:
            return list(tracks), det_indices
        s = self._settings
        track_boxes = np.stack([tr.filter.box for tr in tracks])
        cost = centre_distance_matrix(track_boxes, dets.boxes[det_indices], s.max_scale_change)
        pairs, left_rows, left_cols = associate_by_cost(cost, s.centre_gate)
        for row, col in pairs:
            self._extend(tracks[row], dets, int(det_indices[col]), t)
        return [tracks[row] for row in left_rows], det_indices[left_cols]

    def _extend(self, track: _Track, dets: _Detections, index: int, t: float) -> None:
        track.filter.update(dets.boxes[index])
        track.hits += 1
        track.last_match_s = t
        track.score = float(dets.scores[index])
        track.det_index, track.landmarks = index, dets.landmarks[index]
        if track.state is TrackState.LOST:
            track.state = TrackState.CONFIRMED
        self._confirm_if_ready(track, t)

    def _mark_missed(self, established: list[_Track], tentative: list[_Track]) -> None:
        for track in established:
            if track.state is not TrackState.LOST and self._settings.hold_size_when_lost:
                track.filter.hold_size()
            track.state = TrackState.LOST
        self._tracks = [tr for tr in self._tracks if tr not in tentative]

    def _start_track(self, dets: _Detections, index: int, t: float) -> None:
        s = self._settings
        track = _Track(
            serial=next(self._serials),
            filter=BoxKalmanFilter(
                dets.boxes[index], process_noise=s.process_noise, measurement_noise=s.measurement_noise
            ),
            born_s=t,
            last_match_s=t,
            score=float(dets.scores[index]),
            det_index=index,
            landmarks=dets.landmarks[index],
        )
        self._tracks.append(track)
        self._confirm_if_ready(track, t)

    def _confirm_if_ready(self, track: _Track, t: float) -> None:
        s = self._settings
        if track.state is not TrackState.TENTATIVE:
            return
        if track.hits >= s.min_hits and t - track.born_s >= s.min_confirm_s - _TIME_EPS_S:
            track.state = TrackState.CONFIRMED
            track.track_id = self._next_id
            self._next_id += 1

    def _snapshots(self, t: float, ended: list[_Track]) -> list[TrackSnapshot]:
        tracks = sorted([*self._tracks, *ended], key=lambda tr: (tr.track_id == _NO_ID, tr.track_id, tr.serial))
        return [_snapshot(tr, t) for tr in tracks]


def _snapshot(track: _Track, t: float) -> TrackSnapshot:
    return TrackSnapshot(
        track_id=track.track_id,
        state=track.state,
        box=track.filter.box,
        score=track.score,
        det_index=track.det_index,
        age=track.age,
        hits=track.hits,
        time_since_update_s=t - track.last_match_s,
        landmarks=track.landmarks,
    )


def _parse_detections(
    boxes: np.ndarray | None, scores: np.ndarray | None, extras: Sequence[np.ndarray | None] | np.ndarray | None
) -> _Detections | None:
    """Check and convert the inputs of one update; ``None`` for a skipped frame."""
    if boxes is None:
        if scores is not None or extras is not None:
            raise ValueError("scores/extras: must be None when boxes is None (a skipped frame)")
        return None
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4), got {boxes.shape}")
    n = len(boxes)
    scores = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"scores: expected shape ({n},) to match boxes, got {scores.shape}")
    landmarks = _parse_landmarks(extras, n)
    valid = valid_boxes(boxes) & np.isfinite(scores)
    return _Detections(boxes=boxes, scores=scores, landmarks=landmarks, valid=valid)


def _parse_landmarks(extras: Sequence[np.ndarray | None] | np.ndarray | None, n: int) -> list[np.ndarray | None]:
    if extras is None:
        return [None] * n
    if len(extras) != n:
        raise ValueError(f"extras: expected {n} items to match boxes, got {len(extras)}")
    parsed: list[np.ndarray | None] = []
    for i, item in enumerate(extras):
        if item is None:
            parsed.append(None)
            continue
        points = np.array(item, dtype=np.float32)
        if points.shape != (5, 2):
            raise ValueError(f"extras[{i}]: expected shape (5, 2), got {points.shape}")
        parsed.append(points if np.isfinite(points).all() else None)
    return parsed
