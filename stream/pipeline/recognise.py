"""Track faces and name them: the single owner of trackers, best-shot mailboxes and votes.

``Recogniser.process(batch)`` takes detected frames (from any streams, each stream in order) and
returns annotated frames. It runs in the recognition thread.

Embedding, two ways:
- without a worker (files only): the best-shot crops of the whole batch are embedded in one call,
  synchronously, so a file gives the same events on every run;
- with an ``EmbedWorker`` (any live stream): the crops go to the embed thread and the frames go on at
  once; each batch collects the embeddings that finished since the last one, votes, and the identity
  events ride on the next frame of their stream. Embeddings of tracks that ended (or of an epoch that
  ended) meanwhile are dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stream.faces.align import warp_to_template
from stream.faces.embedder import Embedder, crop_for
from stream.identity.bestshot import BestShotSelector, BestShotSettings, crop_quality
from stream.identity.slot import GallerySlot
from stream.identity.voting import TrackVoter
from stream.integrations.zones import TrackPlace, ZoneTagger
from stream.pipeline.embedding import Embedded, EmbedWorker, LatencyObserver, embed_crops
from stream.pipeline.messages import Annotated, Detected, TrackFace, TrackLabel
from stream.types import Embedding, Event, EventKind, FaceCrop, Frame, TrackKey
from trackers import Tracker, TrackerSettings, TrackSnapshot, TrackState

_SNAPSHOT_KINDS = (EventKind.IDENTITY_ASSIGNED, EventKind.STRANGER_ASSIGNED)


@dataclass(frozen=True, slots=True)
class _Best:
    """A track's best crop so far: its quality score, the aligned crop (BGR), the face's short side
    in full-frame pixels."""

    quality: float
    crop: np.ndarray
    face_px: float


@dataclass
class _StreamState:
    """Per-stream tracking state (owned by the Recogniser)."""

    epoch: int
    tracker: Tracker
    selector: BestShotSelector
    started: set[int] = field(default_factory=set)
    best: dict[int, _Best] = field(default_factory=dict)  # track id -> its best crop so far
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
        *,
        worker: EmbedWorker | None = None,
        observer: LatencyObserver | None = None,
        stop: threading.Event | None = None,
        gallery: GallerySlot | None = None,
        zones: ZoneTagger | None = None,
    ) -> None:
        """``worker``: embed off the frame path (live streams); ``stop``: the pipeline's stop event
        (to hand batches to the worker); ``observer``: where the ``track`` and ``embed`` stage timings go;
        ``gallery``: where a changed gallery's matcher is published (read at the start of each batch);
        ``zones``: tags track events with the streams' zones and adds zone_entered/zone_left."""
        self._gallery = gallery
        self._embedder = embedder
        self._zones = zones or ZoneTagger()
        self._worker = worker
        self._observer = observer
        self._stop = stop or threading.Event()
        self._voter = voter
        self._tracker_settings = tracker_settings
        self._bestshot_settings = bestshot_settings
        self._min_face_px = min_face_px
        self._embed_limit = embed_limit
        self._streams: dict[str, _StreamState] = {}
        self._last: dict[str, Frame] = {}  # each stream's latest frame (its times stamp late events)
        self._pending: dict[str, list[Event]] = {}  # identity events waiting for their stream's next frame
        self._ended: dict[str, list[TrackFace]] = {}  # faces of tracks that ended, for the next output
        self.embeddings = 0

    # ------------------------------------------------------------ public

    def process(self, batch: Sequence[Detected]) -> list[Annotated]:
        """Track every frame, embed (or hand out) the batch's best shots, then label the frames.

        Identity events go with each stream's last frame in the batch (or its next frame in a later
        batch, when the stream has none in this one).
        """
        if self._gallery is not None:
            self._voter.set_matcher(self._gallery.matcher)  # a no-op unless the library published a new one
        tracked = [(item, *self._timed_track(item), self._ended_faces(item.frame.stream_id)) for item in batch]
        self._embed_ready({item.frame.stream_id: item.frame.pts_s for item in batch})
        last = {item.frame.stream_id: i for i, item in enumerate(batch)}
        return [
            self._annotate(
                item.frame,
                snaps,
                events + (self._pending.pop(item.frame.stream_id, []) if last[item.frame.stream_id] == i else []),
                faces,
            )
            for i, (item, snaps, events, faces) in enumerate(tracked)
        ]

    def _ended_faces(self, stream_id: str) -> tuple[TrackFace, ...]:
        """The faces of the tracks that ended in the frame just tracked: they go out with that frame,
        after its ``track_ended`` events (a later frame of the batch must not carry them)."""
        return tuple(self._ended.pop(stream_id, ()))

    def pending(self, stream_id: str) -> tuple[Event, ...]:
        """Identity events waiting for the stream's next frame."""
        return tuple(self._pending.get(stream_id, ()))

    def end_stream(self, stream_id: str) -> tuple[list[Event], list[TrackFace]]:
        """End every live track of a stream (its source finished), at its last frame's time: the
        stream's last events and the faces of its tracks."""
        state = self._streams.pop(stream_id, None)
        last = self._last.pop(stream_id, None)
        events = self._pending.pop(stream_id, [])
        if state is not None and last is not None:
            events += self._end_all(stream_id, state, last.pts_s)
        faces = self._ended.pop(stream_id, [])
        events = self._zones.tag(stream_id, events)
        return ([e.at(last.wall_time) for e in events] if last and last.wall_time is not None else events), faces

    # ------------------------------------------------------------ tracking

    def _state(self, frame: Frame) -> tuple[_StreamState, list[Event]]:
        state = self._streams.get(frame.stream_id)
        events: list[Event] = []
        if state is not None and state.epoch != frame.epoch:  # a reconnect: the old epoch's tracks end
            last = self._last.get(frame.stream_id, frame)  # at the old epoch's last frame
            events = self._end_all(frame.stream_id, state, last.pts_s)
            if last.wall_time is not None:
                events = [e.at(last.wall_time) for e in events]
            state = None
        if state is None:
            state = _StreamState(
                frame.epoch, Tracker(self._tracker_settings), BestShotSelector(self._bestshot_settings)
            )
            self._streams[frame.stream_id] = state
        return state, events

    def _timed_track(self, item: Detected) -> tuple[list[TrackSnapshot], list[Event]]:
        started = time.perf_counter()
        out = self._track(item)
        if self._observer is not None:
            self._observer.observe_latency("track", time.perf_counter() - started)
        return out

    def _track(self, item: Detected) -> tuple[list[TrackSnapshot], list[Event]]:
        frame = item.frame
        state, events = self._state(frame)
        self._last[frame.stream_id] = frame
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
        template = self._voter.template(key)
        identity = self._voter.end(key)
        state.selector.end(key)
        state.started.discard(key.track_id)
        best = state.best.pop(key.track_id, None)
        state.quality.pop(key.track_id, None)
        if template is not None:
            crop, side = (None, None) if best is None else (best.crop, best.face_px)
            face = TrackFace(key, *template, self._embedder.model_id, crop, identity.person, identity.stranger, side)
            self._ended.setdefault(key.stream_id, []).append(face)
        score = identity.confidence if identity.person else None
        return Event.of_track(ts, EventKind.TRACK_ENDED, key, identity.person, score, stranger=identity.stranger)

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
        if best is None or quality.score > best.quality:
            side = float(min(box[2] - box[0], box[3] - box[1]))
            state.best[snap.track_id] = _Best(quality.score, aligned, side)

    def _embed_ready(self, now: dict[str, float]) -> None:
        """Embed the due best shots (synchronously, or through the worker) and vote on the results.

        ``now``: the stream time of each stream's last frame in this batch."""
        if self._worker is None:
            crops = self._ready_crops(now)
            if crops:
                self._vote(embed_crops(self._embedder, crops, self._observer))
            return
        done = self._worker.collect()
        if done is not None:
            self._vote(done)
        if self._worker.idle:
            self._worker.submit(self._ready_crops(now), self._stop)

    def _ready_crops(self, now: dict[str, float]) -> list[FaceCrop]:
        crops: list[FaceCrop] = []
        for stream_id, t in now.items():
            state = self._streams.get(stream_id)
            if state is not None:
                crops += state.selector.ready(t, self._embed_limit - len(crops))
        return crops

    def _vote(self, done: Embedded) -> None:
        """Each embedding to its track's votes (if the track still runs); events to ``_pending``."""
        self.embeddings += len(done.crops)
        for crop, vector, norm in zip(done.crops, done.vectors, done.norms, strict=True):
            if not self._alive(crop.track):
                continue
            embedding = Embedding(vector, float(norm), self._embedder.model_id)
            t = self._last[crop.track.stream_id].pts_s
            self._pending.setdefault(crop.track.stream_id, []).extend(self._voter.add(crop.track, embedding, t))

    def _alive(self, key: TrackKey) -> bool:
        state = self._streams.get(key.stream_id)
        return state is not None and state.epoch == key.epoch and key.track_id in state.started

    def _annotate(
        self, frame: Frame, snaps: list[TrackSnapshot], events: list[Event], faces: tuple[TrackFace, ...]
    ) -> Annotated:
        state = self._streams[frame.stream_id]
        labels, places = [], []
        for snap in snaps:
            if snap.state is TrackState.TENTATIVE:
                continue
            identity = self._voter.identity(TrackKey(frame.stream_id, state.epoch, snap.track_id))
            score = identity.confidence if identity.person else None
            labels.append(
                TrackLabel(snap, identity.person, score, state.quality.get(snap.track_id), identity.stranger)
            )
            places.append(TrackPlace(snap, identity))
        if self._zones:
            size = (frame.width, frame.height)
            events = self._zones.tag(frame.stream_id, events, places, epoch=state.epoch, size=size, pts_s=frame.pts_s)
        named = tuple(  # snapshots: a newly named track, and an unknown face's first label
            (e.track, state.best[e.track.track_id].crop)
            for e in events
            if e.kind in _SNAPSHOT_KINDS and e.track is not None and e.track.track_id in state.best
        )
        if frame.wall_time is not None:
            events = [e.at(frame.wall_time) for e in events]
        tentative = tuple(s for s in snaps if s.state is TrackState.TENTATIVE)
        return Annotated(frame, tuple(labels), tuple(events), named, faces, tentative)
