"""The run's record: events, tracks and faces to the JSONL journal and the event store.

``EventRecorder`` is part of the output stage and runs in the output thread only. For each event it
stamps a wall-clock time when the event has none (a test or tool made it without a frame: the run's
start plus pts), builds the ``EventRecord`` (with the run id, and the snapshot path for identity,
stranger_assigned and alert events), appends it to the journal and queues it in the store. It follows each track from
``track_started`` to ``track_ended`` and writes its ``TrackRecord`` (one row per TrackKey, from the
start time to the end time), then the ``FaceRecord`` of its ``TrackFace`` (template, best crop as
JPEG, the face's size in the frame and the crop's blur score, measured before JPEG encoding). It
saves the snapshots, keeps what the run summary says of tracks (identities, strangers), and runs
retention. The store absorbs outages itself (bounded buffer, back-off): a slow or absent
database never stops the journal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.identity.quality import blur_score
from stream.outputs.events import EventJournal
from stream.outputs.snapshots import JPEG_QUALITY, save_snapshot
from stream.pipeline.messages import TrackFace
from stream.store import Store
from stream.store.records import EventRecord, FaceRecord, RunRecord, StoreCounters, TrackRecord
from stream.store.retention import Retention
from stream.types import Event, EventKind, TrackKey

__all__ = ["EventRecorder", "Recorded"]

log = logging.getLogger(__name__)

_NAMING = (EventKind.IDENTITY_ASSIGNED, EventKind.IDENTITY_CHANGED)
_WITH_SNAPSHOT = (*_NAMING, EventKind.STRANGER_ASSIGNED, EventKind.ALERT)  # events that name the track's snapshot


@dataclass(frozen=True, slots=True)
class Recorded:
    """One event as recorded: with its wall-clock time set, its record, its snapshot file (identity events)."""

    event: Event
    record: EventRecord
    snapshot: Path | None


@dataclass(frozen=True, slots=True)
class _Span:
    first_time: float
    first_pts: float | None


@dataclass(frozen=True, slots=True)
class _Ended:
    """A track that ended, waiting for its face (they come in the same output item)."""

    first_time: float
    last_time: float
    score: float | None


class EventRecorder:
    """Records of one run (see the module notes). ``store``/``journal``/``retention``: None = off."""

    def __init__(
        self,
        run: RunRecord,
        *,
        journal: EventJournal | None = None,
        store: Store | None = None,
        snapshots: Path | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.run = run
        self._journal = journal
        self._store = store
        self._snapshots = snapshots
        self._retention = retention
        self.identities: dict[TrackKey, str | None] = {}  # every track of the run → its last name
        self.tracks: set[TrackKey] = set()
        self.strangers: dict[str, set[str]] = {}  # per stream: the unknown-N labels given
        self._open: dict[TrackKey, _Span] = {}
        self._ended: dict[TrackKey, _Ended] = {}
        self._snapshot_paths: dict[TrackKey, Path] = {}
        if store is not None:
            store.begin_run(run)

    # ---- the output thread's calls ---------------------------------------------------------------

    def snapshot(self, key: TrackKey, crop: np.ndarray) -> None:
        """Save the best crop of a track newly named or labelled unknown-N (before its event is recorded)."""
        if self._snapshots is not None:
            self._snapshot_paths[key] = save_snapshot(self._snapshots, key, crop)

    def events(self, events: Sequence[Event]) -> list[Recorded]:
        """Record events in order; the journal and the store see each batch at once. Returns, in order,
        each event with its wall-clock time set, its record and its snapshot path (identity events)."""
        recorded: list[Recorded] = []
        for event in events:
            event = event.at(self.run.started + (event.pts_s or 0.0))  # keeps a time it has
            assert event.time is not None
            snapshot = self._snapshot_of(event)
            record = EventRecord.from_event(
                event, run_id=self.run.run_id, time=event.time, pts_s=event.pts_s, snapshot=snapshot
            )
            if self._journal is not None:
                self._journal.write(record)
            if self._store is not None:
                self._store.add_events([record])
            if event.track is not None:
                self._follow(event.track, event, event.time)
            recorded.append(Recorded(event, record, snapshot))
        if events:
            self.flush()
        return recorded

    def faces(self, faces: Sequence[TrackFace]) -> None:
        """Store the faces of tracks that ended (their ``track_ended`` came first)."""
        for face in faces:
            ended = self._ended.pop(face.track, None)
            if self._store is None or face.crop is None:
                continue
            if ended is None:  # never started (cannot happen in the pipeline): its span is unknown
                log.debug("face of %s without a recorded span: not stored", face.track)
                continue
            self._store.add_face(_face_record(self.run.run_id, face, ended))
        if faces:
            self.flush()

    def flush(self) -> None:
        if self._journal is not None:
            self._journal.flush()
        if self._store is not None:
            self._store.flush()

    def tick(self) -> None:
        """Cheap; once per frame: retention when it is due."""
        if self._retention is not None:
            self._retention.tick()

    def store_counters(self) -> StoreCounters | None:
        return None if self._store is None else self._store.counters()

    def close(self, ended: float) -> None:
        """Flush, end the run in the store and close both; the journal is closed even if the store fails."""
        try:
            if self._journal is not None:
                self._journal.close()
        finally:
            if self._store is not None:
                self._store.end_run(self.run.run_id, ended)
                counters = self._store.counters()
                self._store.close()
                if counters.dropped:
                    log.warning(
                        "event store: %d rows dropped during an outage longer than its buffer "
                        "(they are in the journal)",
                        counters.dropped,
                    )

    # ---- steps ---------------------------------------------------------------------------------------

    def _snapshot_of(self, event: Event) -> Path | None:
        if event.kind not in _WITH_SNAPSHOT or event.track is None:
            return None
        return self._snapshot_paths.get(event.track)

    def _follow(self, key: TrackKey, event: Event, time: float) -> None:
        """A track from its start to its end: the summary's identities, its TrackRecord."""
        if event.stranger is not None:
            self.strangers.setdefault(key.stream_id, set()).add(event.stranger)
        if event.kind is EventKind.TRACK_STARTED:
            self.tracks.add(key)
            self._open[key] = _Span(time, event.pts_s)
        elif event.kind in _NAMING:
            self.identities[key] = event.person
        elif event.kind is EventKind.TRACK_ENDED:
            self.tracks.add(key)
            self.identities.setdefault(key, event.person)
            span = self._open.pop(key, _Span(time, event.pts_s))
            self._ended[key] = _Ended(span.first_time, time, event.score)
            snapshot = self._snapshot_paths.pop(key, None)
            if self._store is not None:
                self._store.add_track(
                    TrackRecord(
                        run_id=self.run.run_id,
                        stream=key.stream_id,
                        epoch=key.epoch,
                        track_id=key.track_id,
                        first_time=span.first_time,
                        last_time=time,
                        first_pts=span.first_pts,
                        last_pts=event.pts_s,
                        person=event.person,
                        score=event.score,
                        stranger=event.stranger,
                        snapshot=None if snapshot is None else str(snapshot),
                    )
                )


def _face_record(run_id: str, face: TrackFace, ended: _Ended) -> FaceRecord:
    assert face.crop is not None
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(face.crop), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"cannot encode the crop of {face.track} as JPEG")
    return FaceRecord(
        run_id=run_id,
        stream=face.track.stream_id,
        epoch=face.track.epoch,
        track_id=face.track.track_id,
        first_time=ended.first_time,
        last_time=ended.last_time,
        model_id=face.model_id,
        norm=face.norm,
        embedding=face.template,
        crop_jpeg=jpeg.tobytes(),
        person=face.person,
        stranger=face.stranger,
        score=ended.score if face.person is not None else None,
        face_px=face.face_px,
        blur=blur_score(face.crop),
    )
