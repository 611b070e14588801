"""The store's records: validation names the field, times keep milliseconds, the JSONL form."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

from stream.store import EventQuery, EventRecord, FaceRecord, RunRecord, TrackRecord, iso_utc, parse_iso_utc
from stream.store.records import EVENT_FIELDS
from stream.types import Event, EventKind, TrackKey
from tests.store.conftest import T0, event, jpeg, unit

RUN = str(uuid.uuid4())


def test_iso_utc_is_fixed_width_millisecond_text_and_parses_back() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(T0) == "2026-12-01T02:38:30.440Z"
    assert iso_utc(1.0015) in ("1970-01-01T00:00:01.001Z", "1970-01-01T00:00:01.002Z")
    assert iso_utc(59.9996) == "1970-01-01T00:01:00.000Z"  # rounding carries into the seconds
    for t in (0.0, 1.25, T0, T0 + 0.001, 4102444800.999):
        assert parse_iso_utc(iso_utc(t)) == round(t * 1000) / 1000
    texts = [iso_utc(t) for t in (5.0, 50.0, 500.0, T0)]
    assert texts == sorted(texts) and len({len(t) for t in texts}) == 1


def test_event_record_keeps_milliseconds_masks_urls_and_freezes_extra() -> None:
    e = EventRecord(
        RUN.upper(),
        T0 + 0.0004,
        1.5,
        "rtsp://cam:secret@10.0.0.2/live",
        EventKind.IDENTITY_ASSIGNED,
        0,
        3,
        "Alice",
        0.8,
        None,
        "snap/a.jpg",
        {"votes": np.int64(4), "note": "x://u:pw@h"},
    )
    assert e.time == round(T0 * 1000) / 1000 and e.run_id == RUN and e.kind == "identity_assigned"
    assert e.stream == "rtsp://cam:***@10.0.0.2/live" and e.extra == {"votes": 4, "note": "x://u:***@h"}
    with pytest.raises(TypeError):
        e.extra["votes"] = 5  # type: ignore[index]
    line = e.to_dict()
    assert list(line)[: len(EVENT_FIELDS)] == list(EVENT_FIELDS)
    assert line["time"] == iso_utc(T0) and line["votes"] == 4 and line["snapshot"] == "snap/a.jpg"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"run_id": "run-1"}, "EventRecord.run_id"),
        ({"time": math.nan}, "EventRecord.time"),
        ({"time": -1.0}, "EventRecord.time"),
        ({"pts_s": math.inf}, "EventRecord.pts_s"),
        ({"stream": ""}, "EventRecord.stream"),
        ({"kind": "Track Started"}, "EventRecord.kind"),
        ({"track_id": -1}, "EventRecord.track_id"),
        ({"extra": {"person": "x"}}, "EventRecord.extra"),
        ({"extra": {"id": 1}}, "EventRecord.extra"),
    ],
)
def test_event_record_names_the_bad_field(change: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"run_id": RUN, "time": T0, "pts_s": 0.0, "stream": "s", "kind": "track_started"}
    values.update(change)
    with pytest.raises((ValueError, TypeError), match=field):
        EventRecord(**values)  # type: ignore[arg-type]


def test_non_finite_score_is_stored_as_none() -> None:
    assert event(RUN, T0, score=math.nan).score is None


def test_from_event_takes_the_epoch_from_the_track_or_the_stream_event() -> None:
    track = Event.of_track(1.2, EventKind.TRACK_ENDED, TrackKey("cam", 2, 7), None, 0.3, (("votes", 2),), "unknown-1")
    r = EventRecord.from_event(track, run_id=RUN, time=T0, pts_s=1.2)
    assert (r.epoch, r.track_id, r.stranger, r.kind, dict(r.extra)) == (2, 7, "unknown-1", "track_ended", {"votes": 2})
    up = Event(T0, "cam", EventKind.STREAM_UP, extra=(("epoch", 3), ("reason", "reconnected")))
    r = EventRecord.from_event(up, run_id=RUN, time=T0, pts_s=None, snapshot=None)
    assert (r.epoch, r.track_id, r.pts_s, dict(r.extra)) == (3, None, None, {"reason": "reconnected"})


def test_track_and_face_records_check_spans_vectors_and_jpeg() -> None:
    with pytest.raises(ValueError, match="TrackRecord.last_time"):
        TrackRecord(RUN, "s", 0, 1, T0, T0 - 1)
    v = unit(np.arange(1, 9))
    f = FaceRecord(RUN, "s", 0, 1, T0, T0 + 1, "m", 20.0, v.astype(np.float64), jpeg(1))
    assert f.embedding.dtype == np.float32 and not f.embedding.flags.writeable
    with pytest.raises(ValueError, match="FaceRecord.embedding: must be a unit vector"):
        FaceRecord(RUN, "s", 0, 1, T0, T0 + 1, "m", 20.0, v * 2, jpeg(1))
    with pytest.raises(ValueError, match="FaceRecord.embedding"):
        FaceRecord(RUN, "s", 0, 1, T0, T0 + 1, "m", 20.0, np.zeros((2, 4), np.float32), jpeg(1))
    with pytest.raises(ValueError, match="FaceRecord.crop_jpeg"):
        FaceRecord(RUN, "s", 0, 1, T0, T0 + 1, "m", 20.0, v, b"\x89PNG")
    with pytest.raises(ValueError, match="FaceRecord.norm"):
        FaceRecord(RUN, "s", 0, 1, T0, T0 + 1, "m", -1.0, v, jpeg(1))


def test_run_record_new_and_query_checks() -> None:
    run = RunRecord.new(config_summary="db: postgresql://app:pw@h/db")
    assert uuid.UUID(run.run_id) and run.host and run.config_summary == "db: postgresql://app:***@h/db"
    with pytest.raises(ValueError, match="EventQuery.limit"):
        EventQuery(limit=0)
    with pytest.raises(TypeError, match="EventQuery.kinds"):
        EventQuery(kinds="track_started")  # type: ignore[arg-type]
    assert EventQuery(kinds=(EventKind.STREAM_UP,)).kinds == ("stream_up",)
