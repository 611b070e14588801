"""The recogniser with zones (fake detections and embedder): track events carry the zones of the box
centre, a face crossing into a zone gives zone_entered/zone_left, and an unknown face's first label
comes with its snapshot."""

from __future__ import annotations

import numpy as np

from stream.identity.bestshot import BestShotSettings
from stream.identity.matcher import Matcher
from stream.identity.strangers import StrangerBook, StrangerSettings
from stream.identity.voting import TrackVoter
from stream.integrations.zones import ZoneSet, ZoneTagger
from stream.pipeline.messages import Detected
from stream.pipeline.recognise import Recogniser
from stream.types import EventKind, FaceDetections, Frame, TrackKey
from trackers import TrackerSettings

H, W = 360, 640
RIGHT = ZoneSet.from_config({"right": ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))})


class _ConstantEmbedder:
    """Every crop gives the same unit vector: never the gallery's person, always the same stranger."""

    crop_size, crop_kind, model_id = 112, "template", "facenet:test"

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((len(crops), 8), np.float32)
        vectors[:, 0] = 1.0
        return vectors, np.full(len(crops), 20.0, np.float32)


def _detection(x: float) -> FaceDetections:
    x1, y1, x2, y2 = x - 40, 100.0, x + 40, 200.0
    points = [
        (x1 + fx * 80, y1 + fy * 100) for fx, fy in [(0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8)]
    ]
    return FaceDetections(
        np.array([[x1, y1, x2, y2]], np.float32), np.array([0.99], np.float32), np.array([points], np.float32)
    )


def _recogniser(zones: dict[str, ZoneSet]) -> Recogniser:
    template = np.zeros((1, 8), np.float32)
    template[0, 1] = 1.0
    matcher = Matcher(["alice"], template, threshold=0.3, min_margin=0.0)
    voter = TrackVoter(matcher, strangers=StrangerBook(StrangerSettings(0.3, min_embeddings=2)))
    return Recogniser(
        _ConstantEmbedder(), voter, TrackerSettings(), BestShotSettings(), min_face_px=20, zones=ZoneTagger(zones)
    )


def test_a_face_walking_into_a_zone() -> None:
    recogniser = _recogniser({"cam": RIGHT})
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = []
    for i in range(40):  # 25 fps; the face moves from x=200 to x=512 (the zone starts at 320)
        frame = Frame("cam", i, 0, i / 25, 0.0, image, wall_time=1000.0 + i / 25)
        out += recogniser.process([Detected(frame, _detection(200 + 8 * i))])
    events, _ = recogniser.end_stream("cam")
    everything = [e for item in out for e in item.events] + events
    kinds = [(e.kind, e.zones) for e in everything]
    assert kinds[0] == (EventKind.TRACK_STARTED, ())
    entered = [e for e in everything if e.kind is EventKind.ZONE_ENTERED]
    assert len(entered) == 1 and dict(entered[0].extra) == {"zone": "right"} and entered[0].zones == ("right",)
    assert 320 <= 200 + 8 * round(entered[0].pts_s * 25) <= 336  # the frame its centre crossed x=320
    assert entered[0].time == 1000.0 + entered[0].pts_s
    stranger = [e for e in everything if e.kind is EventKind.STRANGER_ASSIGNED]
    assert stranger and stranger[0].stranger == "unknown-1"
    assert all(e.zones == (("right",) if e.pts_s >= entered[0].pts_s else ()) for e in stranger)
    assert [e.kind for e in events] == [EventKind.ZONE_LEFT, EventKind.TRACK_ENDED]  # the stream ended
    assert events[1].zones == ("right",) and events[0].stranger == "unknown-1"
    snapshots = [key for item in out for key, _ in item.snapshots]
    assert snapshots == [TrackKey("cam", 0, 1)]  # the unknown face's first label brings its snapshot


def test_streams_without_zones_give_the_same_events_as_before() -> None:
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    runs = []
    for zones in ({}, {"other": RIGHT}):
        recogniser = _recogniser(zones)
        out = []
        for i in range(20):
            out += recogniser.process([Detected(Frame("cam", i, 0, i / 25, 0.0, image), _detection(200 + 8 * i))])
        runs.append([(e.kind, e.pts_s, e.zones) for item in out for e in item.events])
    assert runs[0] == runs[1] and all(zones == () for _, _, zones in runs[0])
