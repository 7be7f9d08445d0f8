"""Building the SQLAlchemy engine: URL normalisation and SQLite's locking set-up.

SQLite allows one writer at a time. With WAL and a busy timeout, writers wait for each other
instead of failing, and write transactions start with ``BEGIN IMMEDIATE`` so two of them never
both read first and then dead-lock upgrading to a write lock. This uses the pysqlite recipe
from SQLAlchemy's documentation: the driver's own BEGIN handling is switched off
(``isolation_level = None``) and we emit BEGIN ourselves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

__all__ = [
    "BEGIN_MODE_OPTION",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "EngineSource",
    "describe_url",
    "make_engine",
    "normalize_url",
    "prepare_engine",
]

#: A URL string, a SQLAlchemy ``URL`` or a ready ``Engine``.
EngineSource = str | URL | Engine

SQLITE_BUSY_TIMEOUT_SECONDS = 30

#: Connection execution option naming SQLite's BEGIN mode: ``"IMMEDIATE"`` or ``"DEFERRED"``.
BEGIN_MODE_OPTION = "wfe_sqlite_begin"

_POSTGRES_ALIASES = ("postgres://", "postgresql://")


def normalize_url(url: str | URL) -> URL:
    """Parses ``url``; plain ``postgres://`` and ``postgresql://`` URLs get the psycopg 3 driver."""
    if isinstance(url, str):
        for alias in _POSTGRES_ALIASES:
            if url.startswith(alias):
                url = "postgresql+psycopg://" + url[len(alias) :]
                break
        return make_url(url)
    if url.drivername == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    return url


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and database in ("", ":memory:")


def make_engine(source: EngineSource) -> Engine:
    """Returns ``source`` if it is an engine (prepared for SQLite), else a new engine for it."""
    if isinstance(source, Engine):
        return prepare_engine(source)
    url = normalize_url(source)
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if _is_memory_sqlite(url):
            raise ValueError(
                "An in-memory SQLite database is private to one connection, so the engine's "
                "threads would each see a different, empty database. Use a file "
                "('sqlite:////path/to/engine.db'), or InMemoryPersistence for tests."
            )
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    else:
        kwargs["pool_pre_ping"] = True
    return prepare_engine(create_engine(url, **kwargs))


def prepare_engine(engine: Engine) -> Engine:
    """Installs the SQLite connect/begin hooks (once); other databases are left as they are."""
    if engine.dialect.name == "sqlite" and not event.contains(
        engine, "connect", _sqlite_on_connect
    ):
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    del connection_record
    # Let us emit BEGIN (see _sqlite_on_begin); sqlite3 still emits COMMIT and ROLLBACK.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(BEGIN_MODE_OPTION, "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def describe_url(url: URL) -> str:
    """Names the database without its password: ``PostgreSQL database 'x' on host:port``."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"SQLite database {url.database!r}"
    where = url.host or "localhost"
    if url.port:
        where = f"{where}:{url.port}"
    user = f" as user {url.username!r}" if url.username else ""
    name = {"postgresql": "PostgreSQL"}.get(backend, backend)
    return f"{name} database {url.database!r} on {where}{user}"
