"""Faults: a store that goes away mid-run buffers (bounded, counted), retries with back-off and writes
the buffer in order when it returns; no call blocks longer than a bound; an unreachable store at open
is one masked line. The first tests use a switchable connection over real SQLite and a fake clock;
the PostgreSQL ones stop, restart and freeze a real server."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from scripts.pg_server import PgServer, free_port
from stream.store import (
    EventQuery,
    Store,
    StoreError,
    StoreSettings,
    StoreUnavailableError,
    open_store,
)
from stream.store.base import Connection
from stream.store.sqlite import SqliteConnection
from tests.store.conftest import T0, event, run_record


class Switch:
    """A backend that can be taken down: connections and operations fail while ``down``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.down = False
        self.connects = 0
        self.runs = 0

    def connect(self) -> Connection:
        self.connects += 1
        if self.down:
            raise StoreUnavailableError("event store test: connection refused")
        return _Flaky(self, SqliteConnection(self.path))


class _Flaky:
    def __init__(self, switch: Switch, inner: SqliteConnection) -> None:
        self.switch, self.inner = switch, inner
        self.dialect = inner.dialect
        self.migrated_at = inner.migrated_at
        self.lost = False

    @property
    def broken(self) -> bool:
        return self.lost

    def _check(self) -> None:
        if self.switch.down or self.lost:
            self.lost = True
            raise StoreUnavailableError("event store test: server closed the connection")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._check()
        return self.inner.query(sql, params)

    def scan(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        self._check()
        return self.inner.scan(sql, params, size)

    def run(self, statements: Sequence[tuple[str, list[tuple[Any, ...]]]]) -> list[int]:
        self.switch.runs += 1
        self._check()
        return self.inner.run(statements)

    def schema_version(self) -> int:
        return self.inner.schema_version()

    def close(self) -> None:
        self.inner.close()


def switched_store(tmp_path: Path, **settings: Any) -> tuple[Store, Switch, list[float]]:
    now = [0.0]
    switch = Switch(tmp_path / "events.db")
    base = {"commit_every": 1, "retry_initial_s": 1.0, "retry_max_s": 8.0}
    store = Store(switch.connect, "test", settings=StoreSettings(**{**base, **settings}), clock=lambda: now[0])
    return store, switch, now


def all_events(path: Path) -> list[int]:
    with open_store(path) as s:
        return [int(r.extra["i"]) for r in s.events(EventQuery(newest_first=False, limit=100_000))]


def test_an_outage_buffers_retries_with_backoff_and_writes_in_order(tmp_path: Path) -> None:
    store, switch, now = switched_store(tmp_path)
    run = run_record()
    store.begin_run(run)
    store.add_events([event(run, T0, extra={"i": 0})])
    switch.down = True
    attempts = []
    for i in range(1, 41):  # 40 calls, 0.5 s apart: 20 s of outage
        now[0] += 0.5
        before = switch.connects + switch.runs
        store.add_events([event(run, T0 + i, extra={"i": i})])
        attempts.append(switch.connects + switch.runs - before)
    c = store.counters()
    assert (c.up, c.pending, c.buffered, c.dropped, c.reconnects) == (False, 40, 40, 0, 0)
    # not a retry per call: back-off 1, 2, 4, 8, 8 s (the first failure is the write itself)
    tried_at = [0.5 * (k + 1) for k, n in enumerate(attempts) if n]
    assert tried_at == [0.5, 1.5, 3.5, 7.5, 15.5]
    assert c.failures == 5
    switch.down = False
    now[0] += 0.5  # not due yet (next retry at 23.5 s)
    assert store.flush() is False and store.counters().pending == 40
    now[0] = 23.5
    assert store.flush() is True
    c = store.counters()
    assert (c.up, c.pending, c.reconnects, c.written) == (True, 0, 1, 42)
    store.close()
    assert all_events(switch.path) == list(range(41))


def test_a_full_buffer_drops_the_oldest_rows_and_counts_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, switch, now = switched_store(tmp_path, max_buffer_rows=10)
    switch.down = True
    run = run_record()
    store.begin_run(run)  # fails: kept apart from the buffer, never dropped
    with caplog.at_level(logging.WARNING):
        store.add_events([event(run, T0 + i, extra={"i": i}) for i in range(25)])
    assert store.counters().dropped == 15 and store.counters().pending == 11  # 10 rows + the run
    assert sum("buffer full" in r.getMessage() for r in caplog.records) == 1
    switch.down = False
    now[0] = 100.0
    assert store.flush()
    store.close()
    assert all_events(switch.path) == list(range(15, 25))
    with open_store(switch.path) as s:
        assert [r.run_id for r in s.runs()] == [run.run_id]


def test_a_long_backlog_is_written_a_budget_at_a_time(tmp_path: Path) -> None:
    store, switch, _ = switched_store(tmp_path, commit_every=10_000, max_batch_rows=100)
    run = run_record()
    store.begin_run(run)
    store.add_events([event(run, T0 + i, extra={"i": i}) for i in range(1000)])
    runs_before = switch.runs
    assert store.flush(budget_s=0.0) is False  # one batch per call with no time budget
    assert switch.runs - runs_before == 1 and store.counters().pending == 900
    assert store.flush(budget_s=60.0) is True and switch.runs - runs_before == 10
    store.close()


def test_close_while_down_counts_the_lost_rows_and_reads_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, switch, _ = switched_store(tmp_path, commit_every=100)
    run = run_record()
    store.begin_run(run)
    store.add_events([event(run, T0 + i, extra={"i": i}) for i in range(5)])
    switch.down = True
    with pytest.raises(StoreUnavailableError):
        store.events()
    with caplog.at_level(logging.WARNING):
        store.close()
    assert store.counters().dropped == 5
    assert any("5 rows could not be written before closing" in r.getMessage() for r in caplog.records)
    with pytest.raises(StoreError, match="is closed"):
        store.add_events([event(run, T0)])


# ---------------------------------------------------------------- unreachable at open

SECRET = "s3cr3t-Pa55word"


@pytest.mark.serial
def test_unreachable_postgresql_at_open_is_one_masked_line(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("psycopg")
    port = free_port()  # nothing listens there
    url = f"postgresql://app:{SECRET}@127.0.0.1:{port}/events"
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreUnavailableError) as info:
        open_store(url)
    assert time.monotonic() - started < 5.0
    text = str(info.value)
    assert text.startswith(f"event store postgresql://app:***@127.0.0.1:{port}/events unreachable: ")
    assert "\n" not in text and "refused" in text.lower()
    everything = "".join(traceback.format_exception(info.value)) + repr(info.value) + caplog.text
    assert SECRET not in everything
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:pw@h/db", r"unsupported event store URL mysql://u:\*\*\*@h/db"),
        ("sqlite://host/x.db", "bad SQLite URL"),
        ("postgresql:///db?password=pw", r"bad PostgreSQL URL postgresql:///db\?password=\*\*\*: no host"),
    ],
)
def test_bad_urls_are_refused_with_the_password_masked(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        open_store(url)
    assert ":pw@" not in str(info.value) and "=pw" not in str(info.value)


# ---------------------------------------------------------------- real PostgreSQL


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    pg_server.thaw()
    pg_server.start()
    yield pg_server.create_database("outage")
    pg_server.thaw()
    pg_server.start()


def timed(calls: list[float], fn: Callable[[], Any]) -> Any:
    started = time.monotonic()
    try:
        return fn()
    finally:
        calls.append(time.monotonic() - started)


@pytest.mark.slow
@pytest.mark.serial
def test_postgresql_stopped_and_restarted_mid_run_loses_nothing(pg_server: PgServer, pg_url: str) -> None:
    """A writer adds rows every 10 ms; the server stops for ~2 s and comes back; every row is stored."""
    settings = StoreSettings(commit_every=5, retry_initial_s=0.2, retry_max_s=1.0)
    calls: list[float] = []
    store = open_store(pg_url, settings=settings)
    run = run_record(time.time())
    store.begin_run(run)
    i = 0

    def write_for(seconds: float) -> None:
        nonlocal i
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            timed(calls, lambda k=i: store.add_events([event(run, T0 + k, extra={"i": k})]))
            i += 1
            time.sleep(0.01)

    write_for(1.0)
    pg_server.stop()
    write_for(2.0)
    assert not store.counters().up and store.counters().pending > 0
    pg_server.start()
    write_for(3.0)
    timed(calls, store.flush)
    c = store.counters()
    store.close()
    assert (c.up, c.pending, c.dropped) == (True, 0, 0) and c.reconnects == 1 and c.buffered > 0 and c.failures >= 2
    assert max(calls) < 2.5, f"a call blocked for {max(calls):.2f} s"
    with open_store(pg_url, create=False) as s:
        rows = s.events(EventQuery(run_id=run.run_id, newest_first=False, limit=100_000))
        assert [int(r.extra["i"]) for r in rows] == list(range(i))


@pytest.mark.slow
@pytest.mark.serial
def test_a_frozen_postgresql_never_blocks_a_call_longer_than_the_bound(pg_server: PgServer, pg_url: str) -> None:
    """SIGSTOP: the server keeps the connection open and answers nothing; the write gives up after
    op_timeout_s, and the reconnect attempts after connect_timeout_s (libpq's minimum, 2 s)."""
    settings = StoreSettings(commit_every=1, op_timeout_s=1.0, retry_initial_s=0.5, retry_max_s=1.0)
    calls: list[float] = []
    store = open_store(pg_url, settings=settings)
    run = run_record(time.time())
    store.begin_run(run)
    store.add_events([event(run, T0, extra={"i": 0})])
    pg_server.freeze()
    try:
        for i in range(1, 6):
            timed(calls, lambda i=i: store.add_events([event(run, T0 + i, extra={"i": i})]))
            time.sleep(0.3)
        assert not store.counters().up
    finally:
        pg_server.thaw()
    assert max(calls) < 3.0, f"a call blocked for {max(calls):.2f} s"
    deadline = time.monotonic() + 15
    while not store.flush() and time.monotonic() < deadline:
        time.sleep(0.2)
    c = store.counters()
    store.close()
    assert c.up and c.pending == 0 and c.reconnects == 1
    with open_store(pg_url, create=False) as s:
        rows = s.events(EventQuery(run_id=run.run_id, newest_first=False))
        assert [int(r.extra["i"]) for r in rows] == list(range(6))


@pytest.mark.slow
def test_a_wrong_password_is_one_masked_line(pg_server: PgServer, pg_url: str) -> None:
    wrong = pg_url.replace(pg_server.password, SECRET)
    with pytest.raises(StoreUnavailableError) as info:
        open_store(wrong)
    text = str(info.value)
    assert "password authentication failed" in text and "postgresql://app:***@127.0.0.1" in text
    assert SECRET not in "".join(traceback.format_exception(info.value)) and "\n" not in text
