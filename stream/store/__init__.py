"""The event store: every event, track and remembered face of every run, in SQLite or PostgreSQL.

Modules:

- ``records``: the typed records written (``RunRecord``, ``EventRecord``, ``TrackRecord``,
  ``FaceRecord``, ``NegativeRecord``) and read (``EventRow``, ``TrackRow``, ``FaceRow``, ``FaceHit``,
  ``RunRow``, ``NegativeRow``), and ``EventQuery``.
- ``base``: ``Store`` (batching, outage buffer, reads, purge), ``StoreSettings``, the errors.
- ``schema``: the schema (version 2) for both backends and their SQL.
- ``sqlite``, ``postgres``: the backends (``postgres`` is the only module importing psycopg, and only
  ``open_store`` of a ``postgresql://`` URL imports it).
- ``urls``: ``open_store(url)``, URL parsing and masking, ``configured_store_url(config)``.
- ``retention``: ``Retention`` (purge at start, then hourly) and ``purge_files``.

Typical use (the pipeline's output thread owns the store)::

    store = open_store("recordings/events.db")          # or postgresql://app:${PG_PASSWORD}@host/db
    run = RunRecord.new(config_summary=...)
    store.begin_run(run)
    store.add_events([EventRecord.from_event(e, run_id=run.run_id, time=t, pts_s=pts) ...])
    store.add_track(TrackRecord(...)); store.add_face(FaceRecord(...))
    store.flush()                                         # when idle; never blocks long
    store.end_run(run.run_id, time.time()); store.close()
"""

from __future__ import annotations

from stream.store.base import Store, StoreError, StoreSettings, StoreUnavailableError
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
    PurgeCounts,
    RelabelCounts,
    RunRecord,
    RunRow,
    StoreCounters,
    TrackRecord,
    TrackRow,
    iso_utc,
    parse_iso_utc,
)
from stream.store.retention import Retention, purge_files
from stream.store.schema import SCHEMA_VERSION
from stream.store.urls import configured_store_url, masked_url, open_store, parse_store_url

__all__ = [
    "SCHEMA_VERSION",
    "UNKNOWN",
    "EventQuery",
    "EventRecord",
    "EventRow",
    "FaceHit",
    "FaceRecord",
    "FaceRow",
    "NegativeRecord",
    "NegativeRow",
    "PurgeCounts",
    "RelabelCounts",
    "Retention",
    "RunRecord",
    "RunRow",
    "Store",
    "StoreCounters",
    "StoreError",
    "StoreSettings",
    "StoreUnavailableError",
    "TrackRecord",
    "TrackRow",
    "configured_store_url",
    "iso_utc",
    "masked_url",
    "open_store",
    "parse_iso_utc",
    "parse_store_url",
    "purge_files",
]
