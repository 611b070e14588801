"""Track faces and name them: the single owner of trackers, best-shot mailboxes and votes.

``Recogniser.process(batch)`` takes detected frames (from any streams, each stream in order) and
returns annotated frames. It runs in one thread; it embeds the best-shot crops of the whole batch in
one call, synchronously, so a file gives the same events on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stream.faces.align import warp_to_template
from stream.faces.embedder import Embedder, crop_for
from stream.identity.bestshot import BestShotSelector, BestShotSettings, crop_quality
from stream.identity.voting import TrackVoter
from stream.pipeline.messages import Annotated, Detected, TrackLabel
from stream.types import Embedding, Event, EventKind, FaceCrop, Frame, TrackKey
from trackers import Tracker, TrackerSettings, TrackSnapshot, TrackState


@dataclass
class _StreamState:
    """Per-stream tracking state (owned by the Recogniser)."""

    epoch: int
    tracker: Tracker
    selector: BestShotSelector
    started: set[int] = field(default_factory=set)
    best: dict[int, tuple[float, np.ndarray]] = field(default_factory=dict)  # track id -> (quality, crop)
    quality: dict[int, float] = field(default_factory=dict)  # last crop quality per track


class Recogniser:
    def __init__(
        self,
        embedder: Embedder,
        voter: TrackVoter,
        tracker_settings: TrackerSettings,
        bestshot_settings: BestShotSettings,
        min_face_px: int,
        embed_limit: int = 32,
    ) -> None:
        self._embedder = embedder
        self._voter = voter
        self._tracker_settings = tracker_settings
        self._bestshot_settings = bestshot_settings
        self._min_face_px = min_face_px
        self._embed_limit = embed_limit
        self._streams: dict[str, _StreamState] = {}
        self._last_ts: dict[str, float] = {}
        self.embeddings = 0

    # ------------------------------------------------------------ public

    def process(self, batch: Sequence[Detected]) -> list[Annotated]:
        """Track every frame, embed the batch's best shots at once, then label the frames.

        Identity events from this batch's embeddings go with each stream's last frame in the batch.
        """
        tracked = [(item, *self._track(item)) for item in batch]
        named = self._embed_ready(batch)
        last = {item.frame.stream_id: i for i, item in enumerate(batch)}
        return [
            self._annotate(
                item.frame,
                snaps,
                events + (named.get(item.frame.stream_id, []) if last[item.frame.stream_id] == i else []),
            )
            for i, (item, snaps, events) in enumerate(tracked)
        ]

    def end_stream(self, stream_id: str) -> list[Event]:
        """End every live track of a stream (its source finished), at its last frame's time."""
        state = self._streams.pop(stream_id, None)
        ts = self._last_ts.pop(stream_id, 0.0)
        return [] if state is None else self._end_all(stream_id, state, ts)

    # ------------------------------------------------------------ tracking

    def _state(self, frame: Frame) -> tuple[_StreamState, list[Event]]:
        state = self._streams.get(frame.stream_id)
        events: list[Event] = []
        if state is not None and state.epoch != frame.epoch:
            events = self._end_all(frame.stream_id, state, frame.pts_s)  # a reconnect: old tracks end
            state = None
        if state is None:
            state = _StreamState(
                frame.epoch, Tracker(self._tracker_settings), BestShotSelector(self._bestshot_settings)
            )
            self._streams[frame.stream_id] = state
        return state, events

    def _track(self, item: Detected) -> tuple[list[TrackSnapshot], list[Event]]:
        frame = item.frame
        self._last_ts[frame.stream_id] = frame.pts_s
        state, events = self._state(frame)
        dets = item.detections
        if dets is None:
            snaps = state.tracker.update(None, None, frame.pts_s)
        else:
            snaps = state.tracker.update(dets.boxes, dets.scores, frame.pts_s, extras=list(dets.landmarks))
        for snap in snaps:
            events += self._lifecycle(frame, state, snap)
            if snap.state is TrackState.CONFIRMED and snap.matched and snap.landmarks is not None:
                self._offer(frame, state, snap, snap.landmarks)
        return [s for s in snaps if s.state is not TrackState.REMOVED], events

    def _lifecycle(self, frame: Frame, state: _StreamState, snap: TrackSnapshot) -> list[Event]:
        key = TrackKey(frame.stream_id, state.epoch, snap.track_id)
        if snap.state is TrackState.CONFIRMED and snap.track_id not in state.started:
            state.started.add(snap.track_id)
            return [Event.of_track(frame.pts_s, EventKind.TRACK_STARTED, key, None, float(snap.score))]
        if snap.state is TrackState.REMOVED and snap.track_id in state.started:
            return [self._end_track(state, key, frame.pts_s)]
        return []

    def _end_track(self, state: _StreamState, key: TrackKey, ts: float) -> Event:
        identity = self._voter.end(key)
        state.selector.end(key)
        state.started.discard(key.track_id)
        state.best.pop(key.track_id, None)
        state.quality.pop(key.track_id, None)
        score = identity.confidence if identity.person else None
        return Event.of_track(ts, EventKind.TRACK_ENDED, key, identity.person, score)

    def _end_all(self, stream_id: str, state: _StreamState, ts: float) -> list[Event]:
        keys = [TrackKey(stream_id, state.epoch, tid) for tid in sorted(state.started)]
        return [self._end_track(state, key, ts) for key in keys]

    # ------------------------------------------------------------ best shots and identity

    def _offer(self, frame: Frame, state: _StreamState, snap: TrackSnapshot, points: np.ndarray) -> None:
        image, box = frame.image, snap.box
        aligned = warp_to_template(image, points)
        quality = crop_quality(box, snap.score, points, image.shape[:2], aligned, self._min_face_px)
        state.quality[snap.track_id] = quality.score
        crop = (
            aligned
            if self._embedder.crop_kind == "template" and self._embedder.crop_size == 112
            else crop_for(self._embedder, image, box, points)
        )
        key = TrackKey(frame.stream_id, state.epoch, snap.track_id)
        state.selector.offer(FaceCrop(key, frame.index, crop, quality.score, quality.flags), frame.pts_s)
        best = state.best.get(snap.track_id)
        if best is None or quality.score > best[0]:
            state.best[snap.track_id] = (quality.score, aligned)

    def _embed_ready(self, batch: Sequence[Detected]) -> dict[str, list[Event]]:
        last_t = {item.frame.stream_id: item.frame.pts_s for item in batch}
        crops: list[FaceCrop] = []
        for stream_id, t in last_t.items():
            state = self._streams.get(stream_id)
            if state is not None:
                crops += state.selector.ready(t, self._embed_limit - len(crops))
        if not crops:
            return {}
        vectors, norms = self._embedder.embed(np.stack([c.crop for c in crops]))
        self.embeddings += len(crops)
        events: dict[str, list[Event]] = {}
        for crop, vector, norm in zip(crops, vectors, norms, strict=True):
            embedding = Embedding(vector, float(norm), self._embedder.model_id)
            events.setdefault(crop.track.stream_id, []).extend(
                self._voter.add(crop.track, embedding, last_t[crop.track.stream_id])
            )
        return events

    def _annotate(self, frame: Frame, snaps: list[TrackSnapshot], events: list[Event]) -> Annotated:
        state = self._streams[frame.stream_id]
        labels = []
        for snap in snaps:
            if snap.state is TrackState.TENTATIVE:
                continue
            identity = self._voter.identity(TrackKey(frame.stream_id, state.epoch, snap.track_id))
            score = identity.confidence if identity.person else None
            labels.append(TrackLabel(snap, identity.person, score, state.quality.get(snap.track_id)))
        named = tuple(
            (e.track, state.best[e.track.track_id][1])
            for e in events
            if e.kind is EventKind.IDENTITY_ASSIGNED and e.track is not None and e.track.track_id in state.best
        )
        tentative = tuple(s for s in snaps if s.state is TrackState.TENTATIVE)
        return Annotated(frame, tuple(labels), tuple(events), named, tentative)
