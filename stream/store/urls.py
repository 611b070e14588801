"""Store URLs: which backend a URL names, its masked form, and ``open_store``.

- a path (``Path`` or text without a scheme), or ``sqlite:///relative/path.db`` / ``sqlite:////abs/path.db``
  (SQLAlchemy's convention) → SQLite;
- ``postgresql://user:password@host:port/db`` (or ``postgres://``) → PostgreSQL (psycopg is imported only
  then).

``${ENV}`` references are expanded by the config loader before a URL gets here. The password is never
shown: ``masked_url`` replaces it (and a ``password=`` query parameter) with ``***``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from stream.config import AppConfig
from stream.logs import mask_secrets
from stream.store.base import Connection, Store, StoreError, StoreSettings

__all__ = ["StoreURL", "configured_store_url", "masked_url", "open_store", "parse_store_url"]

_PG_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StoreURL:
    backend: Literal["sqlite", "postgresql"]
    url: str  # as given (with its password)
    masked: str
    path: Path | None = None  # SQLite
    password: str | None = None  # PostgreSQL


def configured_store_url(config: AppConfig) -> str:
    """The store the app writes and ``run.py events``/``search`` read by default: ``outputs.events_db``
    (a path or URL; relative paths are already taken relative to config.yaml), else
    ``<outputs.dir>/events.db``."""
    return config.outputs.events_db or str(config.outputs.dir / "events.db")


def masked_url(url: str | Path) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) shown as ``***``."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return mask_secrets(text)
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return mask_secrets(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    if "://" not in text:
        return mask_secrets(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return mask_secrets(f"{parts.scheme}://{netloc}{parts.path}{tail}")


def parse_store_url(url: str | Path) -> StoreURL:
    """Which backend ``url`` names; ``StoreError`` (masked) for an unsupported scheme or a bad URL."""
    if isinstance(url, Path):
        return StoreURL("sqlite", str(url), mask_secrets(str(url)), path=url)
    text = url.strip()
    if not text:
        raise StoreError("event store URL is empty")
    masked = masked_url(text)
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise StoreError(f"bad event store URL {masked}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1 or "://" not in text:
        return StoreURL("sqlite", text, masked, path=Path(text).expanduser())
    if scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise StoreError(
                f"bad SQLite URL {masked}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return StoreURL("sqlite", text, masked, path=Path(unquote(parts.path[1:])).expanduser())
    if scheme in _PG_SCHEMES:
        if not parts.hostname and "host=" not in parts.query:
            raise StoreError(f"bad PostgreSQL URL {masked}: no host (postgresql://user:password@host:port/database)")
        password = unquote(parts.password) if parts.password else None
        for key, value in parse_qsl(parts.query):
            if key.lower() == "password":
                password = value
        return StoreURL("postgresql", text, masked, password=password)
    raise StoreError(
        f"unsupported event store URL {masked}: use a file path, sqlite:///path.db or postgresql://user:password@host/db"
    )


def open_store(
    url: str | Path,
    *,
    create: bool = True,
    settings: StoreSettings | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Store:
    """Open (and with ``create`` make, or migrate) the event store at ``url``.

    ``create=False`` (readers) refuses a missing SQLite file or an empty PostgreSQL database.
    Raises ``StoreUnavailableError`` when the backend cannot be reached and ``StoreError`` when it is
    not usable, each one line naming the masked URL.
    """
    target = parse_store_url(url)
    settings = settings or StoreSettings()
    connect: Callable[[], Connection]
    if target.backend == "sqlite":
        from stream.store.sqlite import SqliteConnection

        path = target.path
        assert path is not None

        def connect() -> Connection:
            return SqliteConnection(path, create=create, busy_timeout_s=settings.busy_timeout_s, label=target.masked)
    else:
        try:
            from stream.store.postgres import PostgresConnection
        except ImportError as exc:
            raise StoreError(f"event store {target.masked}: PostgreSQL needs psycopg 3 ({exc})") from None

        def connect() -> Connection:
            return PostgresConnection(
                target.url,
                label=target.masked,
                secret=target.password,
                create=create,
                connect_timeout_s=settings.connect_timeout_s,
                op_timeout_s=settings.op_timeout_s,
            )

    return Store(connect, target.masked, secret=target.password, settings=settings, clock=clock)
