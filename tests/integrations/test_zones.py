"""Zones: point in polygon on normalised coordinates, box centres, and the recogniser's ZoneTagger."""

from __future__ import annotations

import numpy as np
import pytest

from stream.integrations.zones import TrackPlace, Zone, ZoneSet, ZoneTagger
from stream.types import Event, EventKind, Identity, TrackKey
from trackers import TrackSnapshot, TrackState

SQUARE = ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))  # the right half
L_SHAPE = ((0.0, 0.0), (0.4, 0.0), (0.4, 0.2), (0.2, 0.2), (0.2, 0.6), (0.0, 0.6))  # concave


def test_point_in_polygon_convex_and_concave_edges_count_as_inside() -> None:
    right, ell = Zone("right", SQUARE), Zone("ell", L_SHAPE)
    assert right.contains(0.75, 0.5) and not right.contains(0.25, 0.5)
    assert right.contains(0.5, 0.3) and right.contains(1.0, 1.0)  # an edge, a corner
    assert ell.contains(0.1, 0.5) and ell.contains(0.3, 0.1)
    assert not ell.contains(0.3, 0.4)  # in the notch of the L
    assert not ell.contains(0.45, 0.1) and not ell.contains(0.1, 0.65)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (((0, 0), (1, 0)), "at least 3 points"),
        (((0, 0), (0, 0), (1, 1)), "3 distinct points"),
        (((0, 0), (0.5, 0.5), (1, 1)), "degenerate"),
        (((0, 0), (1, 1), (1, 0), (0, 1)), "cross"),
    ],
)
def test_bad_polygons_are_refused_naming_the_zone(points: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=f"Zone 'door': .*{message}"):
        Zone("door", points)


def test_zone_set_of_box_uses_the_box_centre_in_frame_pixels() -> None:
    zones = ZoneSet.from_config({"right": SQUARE, "ell": L_SHAPE})
    assert zones.names == ("right", "ell")
    assert zones.of_box(np.array([700, 100, 900, 300], np.float32), 1000, 500) == ("right",)
    assert zones.of_box([0, 0, 200, 200], 1000, 500) == ("ell",)  # centre (0.1, 0.2)
    assert zones.of_box([300, 300, 340, 340], 1000, 500) == ()
    with pytest.raises(ValueError, match="frame size"):
        zones.of_box([0, 0, 1, 1], 0, 10)


def _snap(
    track_id: int, box: tuple[float, float, float, float], state: TrackState = TrackState.CONFIRMED
) -> TrackSnapshot:
    return TrackSnapshot(track_id, state, np.array(box, np.float32), 0.99, 0, 5, 5, 0.0)


def _place(track_id: int, x: float, person: str | None = None, stranger: str | None = None, **kw: object) -> TrackPlace:
    """A 100x100 box centred at x (pixels) in a 1000x500 frame."""
    return TrackPlace(_snap(track_id, (x - 50, 200, x + 50, 300), **kw), Identity(person, 0.8, 2, stranger))  # type: ignore[arg-type]


def _tag(tagger: ZoneTagger, events: list[Event], places: list[TrackPlace], pts: float, epoch: int = 0) -> list[Event]:
    return tagger.tag("cam", events, places, epoch=epoch, size=(1000, 500), pts_s=pts)


def _kinds(events: list[Event]) -> list[tuple[str, int | None, str | None, tuple[str, ...]]]:
    return [(e.kind.value, e.track_id, dict(e.extra).get("zone"), e.zones) for e in events]


def test_tagger_tags_track_events_and_emits_entries_and_exits() -> None:
    tagger = ZoneTagger({"cam": ZoneSet.from_config({"right": SQUARE})})
    key = TrackKey("cam", 0, 1)
    started = Event.of_track(1.0, EventKind.TRACK_STARTED, key, None, 0.99)
    out = _tag(tagger, [started], [_place(1, 800)], 1.0)
    assert _kinds(out) == [("track_started", 1, None, ("right",)), ("zone_entered", 1, "right", ("right",))]
    named = Event.of_track(1.5, EventKind.IDENTITY_ASSIGNED, key, "alice", 0.7)
    out = _tag(tagger, [named], [_place(1, 780, "alice")], 1.5)
    assert _kinds(out) == [("identity_assigned", 1, None, ("right",))]
    out = _tag(tagger, [], [_place(1, 300, "alice")], 2.0)  # walks out
    assert _kinds(out) == [("zone_left", 1, "right", ())]
    assert out[0].person == "alice" and out[0].score == pytest.approx(0.8) and out[0].pts_s == 2.0
    out = _tag(tagger, [], [_place(1, 900, "alice")], 2.5)  # and back in
    assert _kinds(out) == [("zone_entered", 1, "right", ("right",))]
    ended = Event.of_track(3.0, EventKind.TRACK_ENDED, key, "alice", 0.7)
    out = _tag(tagger, [ended], [], 3.0)
    assert _kinds(out) == [("zone_left", 1, "right", ()), ("track_ended", 1, None, ("right",))]


def test_lost_tracks_keep_their_zones_and_other_streams_pass_through() -> None:
    tagger = ZoneTagger({"cam": ZoneSet.from_config({"right": SQUARE})})
    assert _tag(tagger, [], [_place(1, 800)], 1.0)[0].kind is EventKind.ZONE_ENTERED
    # lost: the prediction drifts out of the zone, nothing changes until it is seen again
    assert _tag(tagger, [], [_place(1, 100, state=TrackState.LOST)], 1.2) == []
    late = Event.of_track(1.3, EventKind.STRANGER_ASSIGNED, TrackKey("cam", 0, 1), None, 0.1, stranger="unknown-1")
    assert _tag(tagger, [late], [], 1.3)[0].zones == ("right",)
    other = Event.of_track(1.0, EventKind.TRACK_STARTED, TrackKey("door", 0, 1))
    assert tagger.tag("door", [other], [_place(1, 800)], size=(1000, 500), pts_s=1.0) == [other]
    assert not ZoneTagger() and not ZoneTagger({"cam": ZoneSet()})


def test_a_track_that_ends_in_the_frame_it_moved_gets_no_entry_after_its_end() -> None:
    tagger = ZoneTagger({"cam": ZoneSet.from_config({"right": SQUARE})})
    key = TrackKey("cam", 0, 4)
    _tag(tagger, [], [_place(4, 200)], 1.0)
    ended = Event.of_track(1.1, EventKind.TRACK_ENDED, key)
    out = _tag(tagger, [ended], [_place(4, 800)], 1.1)
    assert [e.kind for e in out] == [EventKind.ZONE_LEFT, EventKind.TRACK_ENDED]  # left the zone it was just put in


def test_epochs_are_separate_tracks() -> None:
    tagger = ZoneTagger({"cam": ZoneSet.from_config({"right": SQUARE})})
    _tag(tagger, [], [_place(1, 800)], 1.0, epoch=0)
    out = _tag(tagger, [], [_place(1, 800)], 0.0, epoch=1)
    assert _kinds(out) == [("zone_entered", 1, "right", ("right",))] and out[0].track == TrackKey("cam", 1, 1)


def test_event_zones_reach_the_journal_line_and_the_record() -> None:
    from stream.store.records import EventRecord

    event = Event.of_track(1.0, EventKind.TRACK_STARTED, TrackKey("cam", 0, 1))
    assert "zones" not in event.to_dict()
    zoned = Event(1.0, "cam", EventKind.TRACK_STARTED, TrackKey("cam", 0, 1), zones=("door", "drive"))
    assert zoned.to_dict()["zones"] == ["door", "drive"]
    record = EventRecord.from_event(zoned, run_id="0" * 32, time=1.0, pts_s=1.0)
    assert record.to_dict()["zones"] == ["door", "drive"]
    with pytest.raises(ValueError, match="zones must not be set in extra"):
        Event(1.0, "cam", EventKind.TRACK_STARTED, TrackKey("cam", 0, 1), extra=(("zones", []),))


def test_the_overlay_outlines_zones_with_their_names() -> None:
    from stream.outputs.overlay import COLOR_ZONE, draw_overlay

    image = np.zeros((200, 400, 3), np.uint8)
    image.flags.writeable = False
    drawn = draw_overlay(image, [], zones=[("right", SQUARE)])
    assert not image.any()  # the frame is only read
    near = np.abs(drawn.astype(int) - np.array(COLOR_ZONE)).max(axis=2) < 100  # anti-aliased yellow
    zone_pixels = near & (drawn.max(axis=2) > 100)
    column = round(0.5 * 399)
    assert zone_pixels[50:150, column - 1 : column + 2].any(axis=1).all()  # the left edge, top to bottom
    assert zone_pixels[:40, 200:260].any()  # the name, at the top-left corner
    assert not zone_pixels[60:140, 20:180].any()  # nothing outside the outline
    assert np.array_equal(draw_overlay(image, []), draw_overlay(image, [], zones=()))
