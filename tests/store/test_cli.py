"""`run.py events` and `run.py search`: tables and JSON lines from a store, filters, times on the command
line, errors as one masked line with exit 2; search with the real models on real photos (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from scripts.pg_server import free_port
from stream.cli import EXIT_OK, EXIT_USAGE, main
from stream.commands.events import parse_time
from stream.commands.search import SearchHit, format_hits
from stream.errors import UserError
from stream.store import FaceHit, FaceRecord, RunRecord, open_store
from tests.conftest import REPO, app_config_text, shared_file
from tests.store.conftest import T0, event, run_record

DEEPFACE = "deepface/tests/unit/dataset"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store with one run: Alice named, a stranger, a stream going down, on two streams."""
    path = tmp_path / "rec" / "events.db"
    with open_store(path) as store:
        run = run_record(T0)
        store.begin_run(run)
        store.add_events(
            [
                event(run, T0, "track_started", track_id=3),
                event(
                    run,
                    T0 + 0.08,
                    "identity_assigned",
                    track_id=3,
                    person="Alice",
                    score=0.712,
                    snapshot="rec/snapshots/front_e0_t3.jpg",
                    extra={"votes": 3},
                ),
                event(run, T0 + 4, "track_ended", epoch=1, track_id=1, stranger="unknown-2", score=0.2),
                event(
                    run, T0 + 5, "stream_down", stream="door", pts_s=None, track_id=None, extra={"reason": "timeout"}
                ),
            ]
        )
    return path


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_events_prints_a_table_newest_first(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--db", str(db)]) == EXIT_OK
    out = lines(capsys)
    assert out[0].split() == ["id", "time", "(UTC)", "pts_s", "stream", "kind", "track", "person", "score", "run"]
    assert [row.split()[4] for row in out[1:]] == ["stream_down", "track_ended", "identity_assigned", "track_started"]
    assert out[3].split() == [
        "2",
        "2026-12-01T02:38:30.520Z",
        "0.08",
        "front",
        "identity_assigned",
        "0:3",
        "Alice",
        "0.712",
        out[3].split()[-1],
    ]
    assert "(unknown-2)" in out[2]
    column = out[0].index("kind")  # fixed width: every row's kind starts under the header
    assert [row[column:].split()[0] for row in out[1:]] == [
        "stream_down",
        "track_ended",
        "identity_assigned",
        "track_started",
    ]


def test_events_json_lines_carry_the_journal_fields(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--db", str(db), "--json", "--oldest-first", "--limit", "2"]) == EXIT_OK
    rows = [json.loads(line) for line in lines(capsys)]
    assert [r["kind"] for r in rows] == ["track_started", "identity_assigned"]
    assert list(rows[1])[:13] == [
        "id",
        "time",
        "pts_s",
        "run_id",
        "stream",
        "kind",
        "epoch",
        "track_id",
        "person",
        "score",
        "stranger",
        "snapshot",
        "votes",
    ]
    assert rows[1]["time"] == "2026-12-01T02:38:30.520Z" and rows[1]["snapshot"] == "rec/snapshots/front_e0_t3.jpg"


@pytest.mark.parametrize(
    ("options", "kinds"),
    [
        (["--person", "Alice"], ["identity_assigned"]),
        (["--person", "unknown", "--stream", "front"], ["track_ended", "track_started"]),
        (["--stream", "door"], ["stream_down"]),
        (["--kind", "track_started", "--kind", "track_ended"], ["track_ended", "track_started"]),
        (["--since", "2026-12-01T02:38:31Z"], ["stream_down", "track_ended"]),
        (
            ["--since", "2026-12-01T03:38:30.5+01:00", "--until", "2026-12-01T02:38:35Z"],
            ["track_ended", "identity_assigned"],
        ),
        (["--limit", "1", "--offset", "1"], ["track_ended"]),
        (["--person", "Bob"], []),
    ],
)
def test_events_filters(db: Path, capsys: pytest.CaptureFixture[str], options: list[str], kinds: list[str]) -> None:
    assert main(["events", "--db", str(db), "--json", *options]) == EXIT_OK
    assert [json.loads(line)["kind"] for line in lines(capsys)] == kinds


def test_events_reads_the_configured_store_by_default(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"outputs:\n  dir: {db.parent}\n")
    assert main(["events", "--config", str(config), "--person", "Alice"]) == EXIT_OK
    assert "identity_assigned" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    config.write_text(f"outputs:\n  dir: {tmp_path / 'empty'}\n")
    assert main(["events", "--config", str(config)]) == EXIT_USAGE
    assert capsys.readouterr().err == f"error: no event database at {tmp_path / 'empty' / 'events.db'}\n"
    assert not (tmp_path / "empty" / "events.db").exists()  # a reader creates nothing


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--since", "last tuesday"], "error: --since: cannot read 'last tuesday' as a time"),
        (["--limit", "0"], "error: --limit: must be >= 1, got 0"),
        (["--run", "abc"], "error: --run: must be a UUID, got 'abc'"),
    ],
)
def test_events_bad_options_are_one_line(
    db: Path, capsys: pytest.CaptureFixture[str], options: list[str], error: str
) -> None:
    assert main(["events", "--db", str(db), *options]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(error) and err.count("\n") == 1


def test_events_with_an_unreachable_postgresql_is_one_masked_line(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg")
    port = free_port()
    assert main(["events", "--db", f"postgresql://app:Sup3rSecret@127.0.0.1:{port}/events"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: event store postgresql://app:***@127.0.0.1:{port}/events unreachable: ")
    assert "Sup3rSecret" not in captured.err


def test_parse_time_reads_iso_dates_ages_and_words() -> None:
    plus1 = timezone(timedelta(hours=1))
    now = T0  # 2026-12-01T02:38:30.44Z = 03:38:30.44 at +01:00
    assert parse_time("2026-12-01T02:38:30.440Z", now) == pytest.approx(T0)
    assert parse_time("2026-12-01T03:38:30.44", now, tz=plus1) == pytest.approx(T0)  # naive: local time
    assert parse_time("2026-12-01", now, tz=UTC) == pytest.approx(T0 - (2 * 3600 + 38 * 60 + 30.44))
    assert parse_time("2h", now) == now - 7200 and parse_time("7d", now) == now - 7 * 86400
    assert parse_time("90 s", now) == now - 90 and parse_time("now", now) == now
    assert parse_time("today", now, tz=plus1) == pytest.approx(T0 - (3 * 3600 + 38 * 60 + 30.44))
    assert parse_time("yesterday", now, tz=plus1) == pytest.approx(parse_time("today", now, tz=plus1) - 86400)
    with pytest.raises(UserError, match="--until: cannot read 'soon'"):
        parse_time("soon", now, option="--until")


def test_the_cli_imports_neither_torch_nor_psycopg() -> None:
    code = "import sys, stream.cli; stream.cli.build_parser(); print(sorted({'torch', 'psycopg'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_search_table_format() -> None:
    hit = FaceHit(7, 0.8123, run_record().run_id, "front", 0, 3, T0, T0 + 2.5, None, "unknown-4", "m")
    text = format_hits([SearchHit(1, hit, Path("rec/search/7.jpg"))], as_json=False)
    header, row = text.splitlines()
    assert header.split()[:3] == ["rank", "score", "first"]
    assert row.split() == [
        "1",
        "0.812",
        "2026-12-01T02:38:30.440Z",
        "2026-12-01T02:38:32.940Z",
        "front",
        "(unknown-4)",
        "rec/search/7.jpg",
    ]
    assert format_hits([], as_json=False) == "no stored faces match" and format_hits([], as_json=True) == ""


# ---------------------------------------------------------------- search with the real models

GALLERY = {
    "Angelina": "img1.jpg",
    "Jennifer": "img3.jpg",
    "Scarlett": "img8.jpg",
    "Mark": "img13.jpg",
    "Jack": "img16.jpg",
}


@pytest.mark.slow
def test_search_finds_the_same_person_among_stored_faces(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Faces of five people are stored (real embeddings and crops of deepface photos); another photo of
    Angelina finds hers first, and the crop of each hit is written."""
    from stream.cli import read_config
    from stream.faces.models import ModelOverrides, build_models, largest_face_crop
    from stream.faces.still import embed_stack

    config_path = tmp_path / "config.yaml"
    config_path.write_text(app_config_text(tmp_path))
    models = build_models(read_config(config_path), ModelOverrides(model="facenet", device="cpu"))
    db = tmp_path / "rec" / "events.db"
    run = RunRecord.new(started=T0)
    with open_store(db) as store:
        store.begin_run(run)
        for k, (person, name) in enumerate(GALLERY.items()):
            crop = largest_face_crop(models, shared_file(shared_data, f"{DEEPFACE}/{name}"))
            assert crop is not None
            vectors, norms = embed_stack(models.embedder, [crop])
            ok, jpeg = cv2.imencode(".jpg", crop)
            assert ok
            store.add_face(
                FaceRecord(
                    run.run_id,
                    "front",
                    0,
                    k,
                    T0 + 60 * k,
                    T0 + 60 * k + 5,
                    models.embedder.model_id,
                    float(norms[0]),
                    vectors[0],
                    jpeg.tobytes(),
                    person=person,
                )
            )
    query = shared_file(shared_data, f"{DEEPFACE}/img2.jpg")  # Angelina again, another photo
    argv = [
        "search",
        str(query),
        "--config",
        str(config_path),
        "--model",
        "facenet",
        "--device",
        "cpu",
        "--top",
        "3",
        "--json",
    ]
    assert main(argv) == EXIT_OK
    hits = [json.loads(line) for line in lines(capsys)]
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["person"] == "Angelina"
    assert hits[0]["score"] > hits[1]["score"] and hits[0]["model_id"] == models.embedder.model_id
    crop_path = Path(hits[0]["crop"])
    assert crop_path == tmp_path / "rec" / "search" / f"{hits[0]['face_id']}.jpg"
    assert cv2.imread(str(crop_path)) is not None

    # --since leaves out faces seen before it (Angelina was stored first)
    assert main([*argv, "--since", "2026-12-01T02:39:00Z", "--top", "10"]) == EXIT_OK
    assert "Angelina" not in {json.loads(line)["person"] for line in lines(capsys)}

    blank = tmp_path / "blank.jpg"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    assert main(["search", str(blank), "--config", str(config_path), "--model", "facenet"]) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()  # the log lines of the profile come first
    assert err[-1] == f"error: {blank}: no face found" and "Traceback" not in "\n".join(err)
