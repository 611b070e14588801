"""PostgreSQL backend through psycopg 3: the only module that imports psycopg.

Connecting: ``postgresql://user:password@host:port/db`` (libpq URL; the password may come from
``${PG_PASSWORD}`` in the config), autocommit, ``connect_timeout`` (libpq's minimum, 2 s, per host
address), TCP keepalives and ``tcp_user_timeout`` so a dead peer is noticed, and the session's
``lock_timeout`` and ``idle_in_transaction_session_timeout`` set so a stuck client never holds locks.

Nothing waits forever: psycopg waits on the socket without a deadline, so ``_BoundedConnection``
passes ``op_timeout_s`` to every wait of an open connection; a server that accepts a query and then
never answers (frozen, or a network partition) makes the operation fail after that time, the
connection is dropped and the store buffers and reconnects later.

Schema: prepared once per connection inside one transaction holding an advisory lock, so several
processes opening a new database at once create it exactly once. A database that holds our table
names without a ``schema_version`` table, or a newer schema, is refused. There is no schema 1 here
(it only ever existed in SQLite).

Errors: psycopg's ``OperationalError``/``InterfaceError`` (connection refused, lost, timed out, server
shutting down, disk full, lock timeout) become ``StoreUnavailableError``; any other psycopg error
``StoreError``. Their text is cut to its first line, with URL passwords and the store's own password
masked, and raised ``from None`` so no traceback carries the original.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.abc import RV, PQGen

from stream.logs import mask_secrets
from stream.store.base import StoreError, StoreUnavailableError
from stream.store.schema import (
    POSTGRES,
    SCHEMA_VERSION,
    TABLE,
    Statement,
    completion_statements,
    create_statements,
    version_row,
)

__all__ = ["PostgresConnection"]

# pg_advisory_xact_lock key for schema changes: "AdaF" "ace1" as two int32 halves of one bigint.
_SCHEMA_LOCK = 0x41646146_61636531
_OUR_TABLES = frozenset(TABLE)


class _BoundedConnection(psycopg.Connection[tuple[Any, ...]]):
    """A psycopg connection whose every wait on the socket ends after ``op_timeout_s``."""

    op_timeout_s: float = 5.0

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        try:
            return super().wait(gen, interval, self.op_timeout_s if timeout is None else timeout)
        except psycopg.OperationalError:
            if not self.closed and self.pgconn.transaction_status == psycopg.pq.TransactionStatus.ACTIVE:
                self.close()  # timed out (or failed) mid-query: the state is unknown, and waiting again could hang
            raise


class PostgresConnection:
    """A connection to a PostgreSQL event store (see the module notes)."""

    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        label: str,
        secret: str | None = None,
        create: bool = True,
        connect_timeout_s: float = 2.0,
        op_timeout_s: float = 5.0,
    ) -> None:
        self.label = label
        self.migrated_at: float | None = None
        self._secret = secret
        op_ms = max(1, int(op_timeout_s * 1000))
        try:
            conn = _BoundedConnection.connect(
                url,
                autocommit=True,
                connect_timeout=max(2, math.ceil(connect_timeout_s)),
                application_name="adaface-stream",
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                tcp_user_timeout=op_ms,
                options=f"-c lock_timeout={op_ms} -c idle_in_transaction_session_timeout=60000",
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"event store {label} unreachable: {self._text(exc)}") from None
        conn.op_timeout_s = op_timeout_s
        self._conn = conn
        try:
            self._prepare(create)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- Connection

    @property
    def broken(self) -> bool:
        return self._conn.closed or self._conn.broken

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def scan(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        try:
            with self._conn.transaction(), self._conn.cursor(name="adaface_scan") as cursor:
                cursor.execute(sql, tuple(params))
                while chunk := cursor.fetchmany(size):
                    yield chunk
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def run(self, statements: Sequence[Statement]) -> list[int]:
        counts: list[int] = []
        try:
            with self._conn.transaction(), self._conn.cursor() as cursor:
                for sql, rows in statements:
                    if len(rows) == 1:
                        cursor.execute(sql, rows[0])
                    else:
                        cursor.executemany(sql, rows)
                    counts.append(max(cursor.rowcount, 0))
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return counts

    def schema_version(self) -> int:
        return int(self.query("SELECT max(version) FROM schema_version")[0][0])

    def close(self) -> None:
        try:
            self._conn.close()
        except psycopg.Error as exc:
            raise self._error(exc) from None

    # ---------------------------------------------------------------- schema

    def _prepare(self, create: bool) -> None:
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                rows = self._conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                ).fetchall()
                tables = {r[0] for r in rows} & _OUR_TABLES
                if "schema_version" in tables:
                    version = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
                    if version is None or version[0] is None or version[0] > SCHEMA_VERSION:
                        raise StoreError(
                            f"event store {self.label} has schema {version and version[0]}; this version of the"
                            f" app reads up to {SCHEMA_VERSION}"
                        )
                    if create:
                        for statement in completion_statements(POSTGRES, self._columns()):
                            self._conn.execute(statement)
                elif tables:
                    raise StoreError(
                        f"{self.label} is not an event store: it has tables {', '.join(sorted(tables))}"
                        " but no schema_version"
                    )
                elif not create:
                    raise StoreError(f"no event store in {self.label} (no tables yet)")
                else:
                    for statement in create_statements(POSTGRES):
                        self._conn.execute(statement)
                    sql, params = version_row(POSTGRES, time.time(), "created")
                    self._conn.execute(sql, params[0])
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _columns(self) -> dict[str, set[str]]:
        rows = self._conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        ).fetchall()
        out: dict[str, set[str]] = {}
        for table, column in rows:
            if table in _OUR_TABLES:
                out.setdefault(table, set()).add(column)
        return out

    # ---------------------------------------------------------------- errors

    def _text(self, exc: BaseException) -> str:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = mask_secrets(lines[0] if lines else type(exc).__name__)
        return text.replace(self._secret, "***") if self._secret else text

    def _error(self, exc: psycopg.Error) -> StoreError:
        transient = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        cls = StoreUnavailableError if transient else StoreError
        return cls(f"event store {self.label}: {self._text(exc)}")
