"""Building the SQLAlchemy engine: URL normalisation and SQLite's locking set-up.

SQLite allows one writer at a time. With WAL and a busy timeout, writers wait for each other
instead of failing, and write transactions start with ``BEGIN IMMEDIATE`` so two of them never
both read first and then dead-lock upgrading to a write lock. This uses the pysqlite recipe
from SQLAlchemy's documentation: the driver's own BEGIN handling is switched off
(``isolation_level = None``) and we emit BEGIN ourselves.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, Connection, make_url

__all__ = [
    "BEGIN_MODE_OPTION",
    "PING_AFTER_IDLE_SECONDS",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "EngineSource",
    "current_connection",
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

#: A pooled server connection is pinged on checkout only when it sat idle in the pool longer
#: than this. SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip
#: for each of a stage's transactions, while a connection just used is alive.
PING_AFTER_IDLE_SECONDS = 10.0
_CHECKIN_AT = "wfe_checkin_at"

#: The transaction ``SqlPersistence.transaction()`` holds open on this thread, per engine:
#: readers of the same database (the ledger's totals) join it instead of opening their own.
_open = threading.local()


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
        return prepare_engine(create_engine(url, **kwargs))
    engine = create_engine(url, **kwargs)
    event.listen(engine, "checkin", _stamp_checkin)
    event.listen(engine, "checkout", _ping_if_idle(engine))
    return engine


def _stamp_checkin(dbapi_connection: Any, connection_record: Any) -> None:
    del dbapi_connection
    connection_record.info[_CHECKIN_AT] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Any:
    """A checkout hook that pings connections idle for longer than ``PING_AFTER_IDLE_SECONDS``.

    A dead one raises ``DisconnectionError``: the pool then discards it and connects anew
    (SQLAlchemy's pessimistic disconnect handling, only less often).
    """

    def ping(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        del connection_proxy
        last = connection_record.info.get(_CHECKIN_AT)
        if last is None or time.monotonic() - last < PING_AFTER_IDLE_SECONDS:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as err:
            raise exc.DisconnectionError(f"stale pooled connection: {err}") from err

    return ping


def current_connection(engine: Engine) -> Connection | None:
    """The connection of the transaction ``SqlPersistence`` holds open on this thread for
    ``engine``, or ``None``."""
    conns: dict[int, Connection] | None = getattr(_open, "conns", None)
    return None if conns is None else conns.get(id(engine))


def set_current_connection(engine: Engine, conn: Connection | None) -> None:
    conns: dict[int, Connection] | None = getattr(_open, "conns", None)
    if conns is None:
        conns = _open.conns = {}
    if conn is None:
        conns.pop(id(engine), None)
    else:
        conns[id(engine)] = conn


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
