"""The event journal: one JSON line per event, the same fields as the event store's events table.

The journal is the local record of a run that never depends on a database: it is written even when
the store (``stream.store``) is PostgreSQL on another machine and that machine is down, so no event
is lost for an outage the store's buffer cannot cover. A line is ``EventRecord.to_dict()``: ``time``
(UTC ISO 8601, milliseconds), ``pts_s``, ``run_id``, ``stream``, ``kind``, ``epoch``, ``track_id``,
``person``, ``score``, ``stranger``, ``snapshot``, then the event's extra fields. URL passwords are
masked (records mask them when built).

``write`` appends to the file's buffer; ``flush`` hands the lines to the OS (the owning stage calls
it after each batch of events, so a ``kill -9`` loses nothing flushed); ``close`` flushes and closes,
twice is fine. One owner: the pipeline's output thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import IO

from stream.logs import mask_secrets
from stream.outputs import OutputError, make_parent
from stream.store.records import EventRecord

__all__ = ["EventJournal"]


class EventJournal:
    """Append ``EventRecord``s to a JSON-lines file (see the module notes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        make_parent(self.path, "event log")
        try:
            self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot open event log {self.path}: {exc.strerror or exc}") from exc

    def write(self, record: EventRecord) -> None:
        if self._file is None:
            raise OutputError(f"event log {self.path} is closed")
        line = json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False, default=_masked_text)
        try:
            self._file.write(line + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write event log {self.path}: {exc.strerror or exc}") from exc

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write event log {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except OSError as exc:
            raise OutputError(f"cannot write event log {self.path}: {exc.strerror or exc}") from exc

    def __enter__(self) -> EventJournal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _masked_text(value: object) -> str:
    return mask_secrets(str(value))
