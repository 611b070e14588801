"""Retention: forget events, tracks, faces and snapshot files older than N days.

``Retention.tick()`` is cheap enough to call on every frame of the output thread: it compares the
(injected) wall clock with the next due time and returns None. It purges on its first call (the run's
start) and then every ``interval_s`` (an hour): the store's ``purge`` (one transaction) and the
image files (``.jpg``, ``.jpeg``, ``.png``, at any depth) in the snapshot folders whose modification time
is older than the cutoff. A store that is unavailable is retried after ``retry_s``, the files are
purged anyway; the run goes on in both cases. If the clock goes backwards, the next tick purges.

Pure scheduling: no thread, no sleeping; tests pass a fake clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from stream.store.base import StoreError, StoreUnavailableError
from stream.store.records import PurgeCounts

__all__ = ["DAY_S", "Purger", "Retention", "purge_files"]

log = logging.getLogger(__name__)

DAY_S = 86400.0
SNAPSHOT_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


class Purger(Protocol):
    def purge(self, older_than: float) -> PurgeCounts: ...


def purge_files(folders: Iterable[Path], older_than: float) -> int:
    """Delete the image files under ``folders`` last modified before ``older_than`` (Unix s); missing
    folders are skipped, a file that cannot be deleted is logged and kept. Returns the count deleted."""
    deleted = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.suffix.lower() not in SNAPSHOT_SUFFIXES:
                continue
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime < older_than:
                    path.unlink()
                    deleted += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("retention: cannot delete %s: %s", path, exc.strerror or exc)
    return deleted


class Retention:
    """Purge data older than ``days`` at the first ``tick`` and then every ``interval_s``."""

    def __init__(
        self,
        store: Purger | None,
        days: float,
        *,
        snapshot_dirs: Sequence[Path] = (),
        clock: Callable[[], float] = time.time,
        interval_s: float = 3600.0,
        retry_s: float = 300.0,
    ) -> None:
        if not days > 0:
            raise ValueError(f"Retention.days: must be > 0, got {days}")
        if not interval_s > 0 or not retry_s > 0:
            raise ValueError(f"Retention: interval_s and retry_s must be > 0, got {interval_s}, {retry_s}")
        self.store = store
        self.days = float(days)
        self.snapshot_dirs = tuple(Path(d) for d in snapshot_dirs)
        self.interval_s = interval_s
        self.retry_s = retry_s
        self._clock = clock
        self._last: float | None = None
        self._next: float | None = None
        self.purges = 0
        self.totals = PurgeCounts()

    def due(self, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        return self._next is None or self._last is None or now >= self._next or now < self._last

    def tick(self) -> PurgeCounts | None:
        """Purge if due (see the module notes); the counts of this purge, or None when not due."""
        now = self._clock()
        if not self.due(now):
            return None
        return self.purge_now(now)

    def purge_now(self, now: float | None = None) -> PurgeCounts:
        now = self._clock() if now is None else now
        cutoff = now - self.days * DAY_S
        self._last, self._next = now, now + self.interval_s
        files = purge_files(self.snapshot_dirs, cutoff)
        counts = PurgeCounts(snapshot_files=files)
        if self.store is not None:
            try:
                rows = self.store.purge(cutoff)
            except StoreUnavailableError as exc:
                log.warning("retention: %s; retrying in %.0f s", exc, self.retry_s)
                self._next = now + self.retry_s
            except StoreError as exc:
                log.error("retention: %s", exc)
            else:
                counts = PurgeCounts(rows.events, rows.tracks, rows.faces, rows.runs, files)
        self.purges += 1
        self.totals = _add(self.totals, counts)
        if counts.total:
            log.info(
                "retention (%g days): deleted %d events, %d tracks, %d faces, %d runs, %d snapshot files",
                self.days,
                counts.events,
                counts.tracks,
                counts.faces,
                counts.runs,
                counts.snapshot_files,
            )
        return counts


def _add(a: PurgeCounts, b: PurgeCounts) -> PurgeCounts:
    return PurgeCounts(
        a.events + b.events,
        a.tracks + b.tracks,
        a.faces + b.faces,
        a.runs + b.runs,
        a.snapshot_files + b.snapshot_files,
    )
