"""The store's schema (version 2), one description rendered for SQLite and for PostgreSQL, and the SQL
both backends run.

Tables (columns in order; ``time`` types are TEXT ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in SQLite, ``timestamptz``
in PostgreSQL; ``real`` is REAL / double precision; ``blob`` BLOB / bytea; ``json`` TEXT / jsonb):

  schema_version(version int PK, applied time, note text)   one row per schema version applied
  runs(run_id text PK, started time, ended time?, host text?, config_summary text?)
  events(id PK, time time?, pts_s real?, run_id text?, stream text, kind text, epoch int?, track_id int?,
         person text?, score real?, stranger text?, snapshot text?, extra_json json)
  tracks(id PK, run_id text?, stream, epoch, track_id, first_time?, last_time?, first_pts?, last_pts?,
         person?, score?, stranger?, snapshot?)   unique (run_id, stream, epoch, track_id)
  faces(id PK, run_id, stream, epoch, track_id, first_time, last_time, person?, stranger?, score?,
        model_id, dim, norm, embedding blob (dim little-endian float32), crop_jpeg blob,
        face_px real?, blur real?, ignored int?, pin int?, detached int (0/1), label_source text?)
  negatives(id PK, kind text, person text?, model_id, dim, norm, embedding blob, created time,
            face_id int?, group_id int?, note text?)

``?`` marks a nullable column. ``events.time``/``run_id`` and ``tracks`` times/``run_id`` are NULL only
on rows migrated from schema 1 (today's ``stream/outputs/events.py`` database, which has no
``schema_version`` table). ``run_id`` is not a foreign key: rows are written in order after their
run, and retention removes a run only once nothing refers to it.

``faces``: ``face_px`` is the face's short side in frame pixels where its crop was cut and ``blur`` the
variance of the Laplacian of that crop (what the enrolment gates look at); both NULL when unknown. The
rest is what people decided in review (``stream.identity.unknowns``): ``ignored`` the id of the ignored
group the face is in, ``pin`` the same number on faces merged into one group, ``detached`` 1 for a face
taken out of its group, ``label_source`` who set ``person`` after the run (``user``, ``rematch``; NULL:
the run itself). ``negatives``: negative examples for matching (``kind`` ``impostor``: a template that is
not ``person``; ``ignored``: a template of an ignored group, ``group_id``), their own copy of the
template, so retention never removes them.

A schema-2 store made before the ``faces`` review columns and the ``negatives`` table existed is
completed by the first writer that opens it (``completion_statements``: additive, no version change);
readers leave it as it is.

Indexes: events (time, id), (stream, time), (person, time), (run_id, stream, epoch, track_id); tracks (last_time); faces
(model_id, last_time), (last_time), (run_id), (run_id, stream, epoch, track_id); negatives (model_id, kind). In PostgreSQL the time indexes sort NULLs first, so both
orders of ``EventQuery`` (NULL time = oldest) read an index.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from stream.store.records import (
    UNKNOWN,
    EventQuery,
    EventRecord,
    EventRow,
    FaceHit,
    FaceRecord,
    FaceRow,
    NegativeRecord,
    NegativeRow,
    Record,
    RunEnd,
    RunRecord,
    RunRow,
    TrackRecord,
    TrackRow,
    iso_utc,
    parse_iso_utc,
)

__all__ = [
    "POSTGRES",
    "SCHEMA_VERSION",
    "SQLITE",
    "TABLES",
    "Dialect",
    "Statement",
    "completion_statements",
    "create_statements",
    "decode_vector",
    "encode_vector",
    "write_statements",
]

SCHEMA_VERSION = 2
"""Version 1: the database of ``stream/outputs/events.py`` (no ``schema_version`` table); 2: this one."""

ColumnType = Literal["id", "time", "real", "int", "text", "json", "blob"]
Statement = tuple[str, list[tuple[Any, ...]]]
"""An SQL text and the parameter rows it runs with (``executemany``)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    null: bool = True
    default: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    constraints: tuple[str, ...] = ()
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, columns); "time" columns sort NULLs first

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _c(name: str, type_: ColumnType, null: bool = True, default: str | None = None) -> Column:
    return Column(name, type_, null, default)


TABLES: tuple[Table, ...] = (
    Table(
        "schema_version",
        (_c("version", "int", False), _c("applied", "time", False), _c("note", "text", False)),
        ("PRIMARY KEY (version)",),
    ),
    Table(
        "runs",
        (
            _c("run_id", "text", False),
            _c("started", "time", False),
            _c("ended", "time"),
            _c("host", "text"),
            _c("config_summary", "text"),
        ),
        ("PRIMARY KEY (run_id)",),
    ),
    Table(
        "events",
        (
            _c("id", "id", False),
            _c("time", "time"),
            _c("pts_s", "real"),
            _c("run_id", "text"),
            _c("stream", "text", False),
            _c("kind", "text", False),
            _c("epoch", "int"),
            _c("track_id", "int"),
            _c("person", "text"),
            _c("score", "real"),
            _c("stranger", "text"),
            _c("snapshot", "text"),
            _c("extra_json", "json", False, "'{}'"),
        ),
        (),
        (
            ("events_time", ("time", "id")),
            ("events_stream_time", ("stream", "time")),
            ("events_person_time", ("person", "time")),
            ("events_run_track", ("run_id", "stream", "epoch", "track_id")),
        ),
    ),
    Table(
        "tracks",
        (
            _c("id", "id", False),
            _c("run_id", "text"),
            _c("stream", "text", False),
            _c("epoch", "int", False),
            _c("track_id", "int", False),
            _c("first_time", "time"),
            _c("last_time", "time"),
            _c("first_pts", "real"),
            _c("last_pts", "real"),
            _c("person", "text"),
            _c("score", "real"),
            _c("stranger", "text"),
            _c("snapshot", "text"),
        ),
        ("UNIQUE (run_id, stream, epoch, track_id)",),
        (("tracks_last_time", ("last_time",)),),
    ),
    Table(
        "faces",
        (
            _c("id", "id", False),
            _c("run_id", "text", False),
            _c("stream", "text", False),
            _c("epoch", "int", False),
            _c("track_id", "int", False),
            _c("first_time", "time", False),
            _c("last_time", "time", False),
            _c("person", "text"),
            _c("stranger", "text"),
            _c("score", "real"),
            _c("model_id", "text", False),
            _c("dim", "int", False),
            _c("norm", "real", False),
            _c("embedding", "blob", False),
            _c("crop_jpeg", "blob", False),
            _c("face_px", "real"),
            _c("blur", "real"),
            _c("ignored", "int"),
            _c("pin", "int"),
            _c("detached", "int", False, "0"),
            _c("label_source", "text"),
        ),
        (),
        (
            ("faces_model_time", ("model_id", "last_time")),
            ("faces_last_time", ("last_time",)),
            ("faces_run", ("run_id",)),
            ("faces_track", ("run_id", "stream", "epoch", "track_id")),
        ),
    ),
    Table(
        "negatives",
        (
            _c("id", "id", False),
            _c("kind", "text", False),
            _c("person", "text"),
            _c("model_id", "text", False),
            _c("dim", "int", False),
            _c("norm", "real", False),
            _c("embedding", "blob", False),
            _c("created", "time", False),
            _c("face_id", "int"),
            _c("group_id", "int"),
            _c("note", "text"),
        ),
        (),
        (("negatives_model", ("model_id", "kind")),),
    ),
)
TABLE = {t.name: t for t in TABLES}
_TIME_COLUMNS = frozenset(c.name for t in TABLES for c in t.columns if c.type == "time")


# ---------------------------------------------------------------- dialects

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _pg_time(t: float) -> datetime:
    return _EPOCH + timedelta(milliseconds=round(t * 1000))


def _pg_time_back(value: Any) -> float | None:
    if value is None:
        return None
    return round((value - _EPOCH) / timedelta(milliseconds=1)) / 1000


def _sqlite_time_back(value: Any) -> float | None:
    return None if value is None else parse_iso_utc(value)


def json_back(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    loaded = json.loads(value or "{}")
    return loaded if isinstance(loaded, dict) else {"value": loaded}


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL: parameter marker, types, and value conversions."""

    name: Literal["sqlite", "postgresql"]
    param: str
    types: dict[str, str]
    json_param: str  # how a JSON text parameter is written in SQL
    least: str
    greatest: str
    time_to_db: Callable[[float], Any]
    time_from_db: Callable[[Any], float | None]

    def sql(self, template: str) -> str:
        """``template`` with ``?`` parameters and ``{json}``/``{least}``/``{greatest}`` placeholders."""
        text = template.replace("{json}", self.json_param)
        text = text.replace("{least}", self.least).replace("{greatest}", self.greatest)
        return text.replace("?", self.param) if self.param != "?" else text

    def index_column(self, column: str) -> str:
        return f"{column} NULLS FIRST" if self.name == "postgresql" and column in _TIME_COLUMNS else column


SQLITE = Dialect(
    name="sqlite",
    param="?",
    types={
        "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "time": "TEXT",
        "real": "REAL",
        "int": "INTEGER",
        "text": "TEXT",
        "json": "TEXT",
        "blob": "BLOB",
    },
    json_param="?",
    least="min",
    greatest="max",
    time_to_db=iso_utc,
    time_from_db=_sqlite_time_back,
)
POSTGRES = Dialect(
    name="postgresql",
    param="%s",
    types={
        "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "time": "TIMESTAMPTZ",
        "real": "DOUBLE PRECISION",
        "int": "INTEGER",
        "text": "TEXT",
        "json": "JSONB",
        "blob": "BYTEA",
    },
    json_param="CAST(? AS JSONB)",
    least="LEAST",
    greatest="GREATEST",
    time_to_db=_pg_time,
    time_from_db=_pg_time_back,
)


def create_statements(dialect: Dialect) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements of the whole schema (no IF NOT EXISTS: the caller
    creates the schema once, inside its schema transaction)."""
    out = []
    for table in TABLES:
        parts = [_column_sql(dialect, column) for column in table.columns]
        parts += table.constraints
        out.append(f"CREATE TABLE {table.name} (\n    " + ",\n    ".join(parts) + "\n)")
        out += _index_statements(dialect, table)
    return out


def completion_statements(dialect: Dialect, have: dict[str, set[str]]) -> list[str]:
    """What a schema-2 database made before schema 2 was final lacks (``have``: its tables and their
    columns): the missing tables, the missing (nullable or defaulted) columns and every index; empty
    when it is complete. Additive only, so older writers of schema 2 keep working."""
    out: list[str] = []
    for table in TABLES:
        columns = have.get(table.name)
        if columns is None:
            parts = [_column_sql(dialect, column) for column in table.columns] + list(table.constraints)
            out.append(f"CREATE TABLE {table.name} (\n    " + ",\n    ".join(parts) + "\n)")
            continue
        out += [
            f"ALTER TABLE {table.name} ADD COLUMN {_column_sql(dialect, column)}"
            for column in table.columns
            if column.name not in columns
        ]
    if out:
        out += [s for table in TABLES for s in _index_statements(dialect, table, if_not_exists=True)]
    return out


def _column_sql(dialect: Dialect, column: Column) -> str:
    text = f"{column.name} {dialect.types[column.type]}"
    if column.type != "id" and not column.null:
        text += " NOT NULL"
    if column.default is not None:
        text += f" DEFAULT {column.default}"
    return text


def _index_statements(dialect: Dialect, table: Table, if_not_exists: bool = False) -> list[str]:
    maybe = "IF NOT EXISTS " if if_not_exists else ""
    return [
        f"CREATE INDEX {maybe}{name} ON {table.name} ({', '.join(dialect.index_column(c) for c in columns)})"
        for name, columns in table.indexes
    ]


# ---------------------------------------------------------------- vectors


def encode_vector(vector: np.ndarray) -> bytes:
    """(D,) float → little-endian float32 bytes."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_vector(blob: bytes | memoryview, dim: int) -> np.ndarray:
    vector = np.frombuffer(bytes(blob), dtype="<f4")
    if vector.shape != (dim,):
        raise ValueError(f"stored embedding has {vector.shape[0]} values, dim says {dim}")
    return vector.astype(np.float32)


# ---------------------------------------------------------------- writing

_INSERT_RUN = (
    "INSERT INTO runs (run_id, started, host, config_summary) VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING"
)
_END_RUN = "UPDATE runs SET ended = ? WHERE run_id = ?"
_EVENT_COLUMNS = "time, pts_s, run_id, stream, kind, epoch, track_id, person, score, stranger, snapshot, extra_json"
_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {{json}})"
# first/last only widen (NULLs ignored); person, score and stranger follow the latest write; a snapshot
# of None keeps the stored one.
_UPSERT_TRACK = """
INSERT INTO tracks (run_id, stream, epoch, track_id, first_time, last_time, first_pts, last_pts,
                    person, score, stranger, snapshot)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, stream, epoch, track_id) DO UPDATE SET
    first_time = {least}(coalesce(tracks.first_time, excluded.first_time), coalesce(excluded.first_time, tracks.first_time)),
    last_time = {greatest}(coalesce(tracks.last_time, excluded.last_time), coalesce(excluded.last_time, tracks.last_time)),
    first_pts = {least}(coalesce(tracks.first_pts, excluded.first_pts), coalesce(excluded.first_pts, tracks.first_pts)),
    last_pts = {greatest}(coalesce(tracks.last_pts, excluded.last_pts), coalesce(excluded.last_pts, tracks.last_pts)),
    person = excluded.person,
    score = excluded.score,
    stranger = excluded.stranger,
    snapshot = coalesce(excluded.snapshot, tracks.snapshot)
"""
_FACE_COLUMNS = (
    "run_id, stream, epoch, track_id, first_time, last_time, person, stranger, score, model_id, dim, norm, "
    "embedding, crop_jpeg, face_px, blur"
)
_INSERT_FACE = f"INSERT INTO faces ({_FACE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

Scrub = Callable[[str | None], str | None]


def _no_scrub(text: str | None) -> str | None:
    return text


def write_statements(dialect: Dialect, records: Sequence[Record], scrub: Scrub = _no_scrub) -> list[Statement]:
    """The statements that write ``records`` in order: runs of consecutive records of one type
    become one ``executemany``. ``scrub`` is applied to every text value (the store removes its own
    password with it)."""
    out: list[Statement] = []
    for record in records:
        sql, row = _statement(dialect, record, scrub)
        if out and out[-1][0] == sql:
            out[-1][1].append(row)
        else:
            out.append((sql, [row]))
    return out


def _statement(d: Dialect, r: Record, s: Scrub) -> tuple[str, tuple[Any, ...]]:
    t = d.time_to_db
    if isinstance(r, EventRecord):
        extra = s(json.dumps(dict(r.extra), ensure_ascii=False, allow_nan=False, sort_keys=True))
        row: tuple[Any, ...] = (
            t(r.time),
            r.pts_s,
            r.run_id,
            s(r.stream),
            r.kind,
            r.epoch,
            r.track_id,
            s(r.person),
            r.score,
            s(r.stranger),
            s(r.snapshot),
            extra,
        )
        return d.sql(_INSERT_EVENT), row
    if isinstance(r, TrackRecord):
        row = (
            r.run_id,
            s(r.stream),
            r.epoch,
            r.track_id,
            t(r.first_time),
            t(r.last_time),
            r.first_pts,
            r.last_pts,
            s(r.person),
            r.score,
            s(r.stranger),
            s(r.snapshot),
        )
        return d.sql(_UPSERT_TRACK), row
    if isinstance(r, FaceRecord):
        row = (
            r.run_id,
            s(r.stream),
            r.epoch,
            r.track_id,
            t(r.first_time),
            t(r.last_time),
            s(r.person),
            s(r.stranger),
            r.score,
            s(r.model_id),
            int(r.embedding.shape[0]),
            r.norm,
            encode_vector(r.embedding),
            r.crop_jpeg,
            r.face_px,
            r.blur,
        )
        return d.sql(_INSERT_FACE), row
    if isinstance(r, RunRecord):
        return d.sql(_INSERT_RUN), (r.run_id, t(r.started), s(r.host), s(r.config_summary))
    if isinstance(r, RunEnd):
        return d.sql(_END_RUN), (t(r.ended), r.run_id)
    raise TypeError(f"cannot store {type(r).__name__}")


def version_row(dialect: Dialect, now: float, note: str) -> Statement:
    return (
        dialect.sql("INSERT INTO schema_version (version, applied, note) VALUES (?, ?, ?)"),
        [(SCHEMA_VERSION, dialect.time_to_db(now), note)],
    )


# ---------------------------------------------------------------- reading

EVENT_SELECT = f"SELECT id, {_EVENT_COLUMNS} FROM events"
TRACK_SELECT = (
    "SELECT id, run_id, stream, epoch, track_id, first_time, last_time, first_pts, last_pts, person, score, "
    "stranger, snapshot FROM tracks"
)
FACE_META = "id, run_id, stream, epoch, track_id, first_time, last_time, person, stranger, score, model_id"
FACE_SELECT = f"SELECT {FACE_META}, norm, dim, embedding, face_px, blur, ignored, pin, detached, label_source FROM faces"
NEGATIVE_SELECT = (
    "SELECT id, kind, person, model_id, norm, dim, embedding, created, face_id, group_id, note FROM negatives"
)
_INSERT_NEGATIVE = (
    "INSERT INTO negatives (kind, person, model_id, dim, norm, embedding, created, face_id, group_id, note)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def events_sql(d: Dialect, q: EventQuery) -> tuple[str, tuple[Any, ...]]:
    where, params = [], []
    if q.stream is not None:
        where.append("stream = ?")
        params.append(q.stream)
    if q.person == UNKNOWN:
        where.append("person IS NULL")
    elif q.person is not None:
        where.append("person = ?")
        params.append(q.person)
    if q.kinds:
        where.append(f"kind IN ({', '.join('?' for _ in q.kinds)})")
        params += q.kinds
    if q.since is not None:
        where.append("time >= ?")
        params.append(d.time_to_db(q.since))
    if q.until is not None:
        where.append("time < ?")
        params.append(d.time_to_db(q.until))
    if q.run_id is not None:
        where.append("run_id = ?")
        params.append(q.run_id)
    order = "time DESC NULLS LAST, id DESC" if q.newest_first else "time ASC NULLS FIRST, id ASC"
    sql = EVENT_SELECT + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order} LIMIT ? OFFSET ?"
    return d.sql(sql), (*params, q.limit, q.offset)


def event_row(d: Dialect, r: Sequence[Any]) -> EventRow:
    return EventRow(
        id=int(r[0]),
        time=d.time_from_db(r[1]),
        pts_s=r[2],
        run_id=r[3],
        stream=r[4],
        kind=r[5],
        epoch=r[6],
        track_id=r[7],
        person=r[8],
        score=r[9],
        stranger=r[10],
        snapshot=r[11],
        extra=json_back(r[12]),
    )


def track_row(d: Dialect, r: Sequence[Any]) -> TrackRow:
    f = d.time_from_db
    return TrackRow(int(r[0]), r[1], r[2], r[3], r[4], f(r[5]), f(r[6]), r[7], r[8], r[9], r[10], r[11], r[12])


def run_row(d: Dialect, r: Sequence[Any]) -> RunRow:
    started = d.time_from_db(r[1])
    assert started is not None
    return RunRow(r[0], started, d.time_from_db(r[2]), r[3], r[4])


def face_hit(d: Dialect, r: Sequence[Any], score: float) -> FaceHit:
    first, last = d.time_from_db(r[5]), d.time_from_db(r[6])
    assert first is not None and last is not None
    return FaceHit(int(r[0]), score, r[1], r[2], r[3], r[4], first, last, r[7], r[8], r[10])


def face_row(d: Dialect, r: Sequence[Any]) -> FaceRow:
    first, last = d.time_from_db(r[5]), d.time_from_db(r[6])
    assert first is not None and last is not None
    embedding = decode_vector(r[13], int(r[12]))
    embedding.flags.writeable = False
    return FaceRow(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        first,
        last,
        r[7],
        r[8],
        r[9],
        r[10],
        float(r[11]),
        embedding,
        face_px=None if r[14] is None else float(r[14]),
        blur=None if r[15] is None else float(r[15]),
        ignored=None if r[16] is None else int(r[16]),
        pin=None if r[17] is None else int(r[17]),
        detached=bool(r[18]),
        label_source=r[19],
    )


def negative_row(d: Dialect, r: Sequence[Any]) -> NegativeRow:
    embedding = decode_vector(r[6], int(r[5]))
    embedding.flags.writeable = False
    created = d.time_from_db(r[7])
    assert created is not None
    return NegativeRow(int(r[0]), r[1], r[2], r[3], float(r[4]), embedding, created, r[8], r[9], r[10])


def negative_statement(d: Dialect, records: Sequence[NegativeRecord], scrub: Scrub = _no_scrub) -> Statement:
    rows = [
        (
            n.kind,
            scrub(n.person),
            scrub(n.model_id),
            int(n.embedding.shape[0]),
            n.norm,
            encode_vector(n.embedding),
            d.time_to_db(n.created),
            n.face_id,
            n.group_id,
            scrub(n.note),
        )
        for n in records
    ]
    return d.sql(_INSERT_NEGATIVE), rows


def purge_statements(d: Dialect, cutoff: float, legacy: bool) -> list[Statement]:
    """DELETE statements of everything older than ``cutoff``, runs last (only those nothing refers to).
    ``legacy``: also rows without a time (migrated from schema 1 before ``cutoff``)."""
    c = d.time_to_db(cutoff)
    out: list[Statement] = [
        (d.sql("DELETE FROM events WHERE time < ?"), [(c,)]),
        (d.sql("DELETE FROM tracks WHERE last_time < ?"), [(c,)]),
        (d.sql("DELETE FROM faces WHERE last_time < ?"), [(c,)]),
    ]
    if legacy:
        out += [("DELETE FROM events WHERE time IS NULL", [()]), ("DELETE FROM tracks WHERE last_time IS NULL", [()])]
    out.append(
        (
            d.sql(
                "DELETE FROM runs WHERE started < ?"
                " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.run_id)"
                " AND NOT EXISTS (SELECT 1 FROM tracks t WHERE t.run_id = runs.run_id)"
                " AND NOT EXISTS (SELECT 1 FROM faces f WHERE f.run_id = runs.run_id)"
            ),
            [(c,)],
        )
    )
    return out
