"""The engine's settings under Airflow: where its database and blob store are, and how to read them.

Airflow 3 hides its metadata database from task and trigger code, so the engine reaches its
``wfe_`` tables through a database URL of its own, taken from (first match wins):

1. the Airflow connection ``conn_id`` (default ``workflow_engine_default``, type
   ``workflow_engine``; a ``postgres`` or ``sqlite`` connection, or any PostgreSQL/SQLite
   URL form, works too), wherever Airflow keeps it (see :func:`get_connection`);
2. the ``[workflow_engine] sql_alchemy_conn`` option
   (``AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN``), read with the same URL rules.

Nothing else: with neither, every process (tasks, triggerer, CLI, UI, ``airflow db
migrate``) says what to set; none falls back to Airflow's own database, which tasks cannot
reach. It normally names the same database as Airflow's metadata (the engine's tables live beside
Airflow's); it may name another. The URL is built from the connection's parts, never from
``Connection.get_uri()`` (which writes ``postgres://`` and percent-encodes SQLite paths).

The blob store (large outputs, artifacts) is a local directory (default
``$AIRFLOW_HOME/workflow_engine/blobs``) or ``s3://bucket/prefix``; set it with the
connection's ``blob_store`` extra or ``[workflow_engine] blob_store``.

Airflow is imported inside the functions that need it: importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.errors import WorkflowEngineError

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from sqlalchemy.engine import URL

__all__ = [
    "CONFIG_SECTION",
    "CONN_TYPE",
    "DEFAULT_CONN_ID",
    "DEFAULT_OUTPUT_BLOB_THRESHOLD",
    "EngineNotConfiguredError",
    "EngineSettings",
    "airflow_home",
    "build_sql_url",
    "conf_get",
    "default_blob_store",
    "find_connection",
    "get_connection",
    "in_task_runtime",
    "is_not_found",
    "normalize_config_url",
    "resolve_settings",
    "settings_from_config",
]

CONN_TYPE = "workflow_engine"
DEFAULT_CONN_ID = "workflow_engine_default"
CONFIG_SECTION = "workflow_engine"
DEFAULT_OUTPUT_BLOB_THRESHOLD = 256 * 1024

#: Connection extras that configure the engine rather than the database driver.
_ENGINE_EXTRAS = frozenset({"driver", "blob_store", "blob_aws_conn_id", "output_blob_threshold"})

#: Database backend per Airflow connection type (or URL scheme without its ``+dbapi``).
_BACKENDS = {
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    CONN_TYPE: "postgresql",
}

_WHAT_TO_SET = (
    "Set [workflow_engine] sql_alchemy_conn (environment variable "
    "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN, e.g. "
    "'postgresql://user:password@host:5432/airflow' or 'sqlite:////abs/path/engine.db'), "
    f"or create the Airflow connection '{DEFAULT_CONN_ID}' (type '{CONN_TYPE}' or 'postgres'; "
    "e.g. AIRFLOW_CONN_WORKFLOW_ENGINE_DEFAULT='postgresql://user:password@host:5432/airflow'). "
    "It normally names Airflow's metadata database: the engine's wfe_ tables live beside "
    "Airflow's and are created by `airflow db migrate`. Tasks and triggers cannot use "
    "Airflow's own database setting: Airflow 3 hides it from them."
)


class EngineNotConfiguredError(WorkflowEngineError):
    """The engine's database or blob store is not configured (or configured wrongly)."""

    retryable = False


@dataclass(frozen=True)
class EngineSettings:
    """Resolved engine settings. ``sql_url`` holds the password: never log it (``repr`` hides
    it)."""

    sql_url: str = field(repr=False)
    blob_store: str
    output_blob_threshold: int = DEFAULT_OUTPUT_BLOB_THRESHOLD
    blob_aws_conn_id: str | None = None
    #: Where the database setting came from, for messages.
    source: str = ""
    #: The Airflow connection the settings came from; ``None`` for the config section.
    conn_id: str | None = None

    def describe_database(self) -> str:
        from airflow_workflow_engine.persistence.sql.engine import describe_url, normalize_url

        return describe_url(normalize_url(self.sql_url))


# -- configuration ------------------------------------------------------------------------


def conf_get(option: str, fallback: str = "") -> str:
    """An option of the ``[workflow_engine]`` section, stripped; ``fallback`` when unset."""
    from airflow.sdk import conf

    value = conf.get(CONFIG_SECTION, option, fallback=fallback)
    return str(value).strip() if value is not None else fallback


def airflow_home() -> Path:
    """``$AIRFLOW_HOME`` (default ``~/airflow``): the one directory every Airflow process
    agrees on."""
    return Path(os.path.expandvars(os.environ.get("AIRFLOW_HOME", "~/airflow"))).expanduser()


def default_blob_store() -> str:
    """The blob store used when nothing is configured: ``$AIRFLOW_HOME/workflow_engine/blobs``."""
    return str(airflow_home() / "workflow_engine" / "blobs")


def _parse_threshold(raw: Any, where: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise EngineNotConfiguredError(
            f"{where}: output_blob_threshold must be a whole number of bytes, got {raw!r}."
        ) from None
    if value < 0:
        raise EngineNotConfiguredError(f"{where}: output_blob_threshold must be >= 0.")
    return value


#: Extras of Airflow's ``postgres`` connections that configure its hook, not the database:
#: left out of the URL (libpq refuses options it does not know).
_AIRFLOW_POSTGRES_EXTRAS = frozenset(
    {
        "cursor",
        "iam",
        "redshift",
        "redshift-serverless",
        "aws_conn_id",
        "cluster-identifier",
        "workgroup-name",
        "enable_log_db_messages",
        "sqlalchemy_scheme",
        "sqlalchemy_options",
        "__extra__",
    }
)

#: PostgreSQL DB-API packages the engine can use, best first: (SQLAlchemy driver, module).
_POSTGRES_DBAPIS = (("psycopg", "psycopg"), ("psycopg2", "psycopg2"))

_MISSING_POSTGRES_DRIVER = (
    "{where} names a PostgreSQL database, but no PostgreSQL driver is installed: install "
    "psycopg 3 (pip install 'airflow-workflow-engine[postgres]', or 'psycopg[binary]')."
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install counts as missing
        return False


def _postgres_driver(where: str) -> str:
    """``postgresql+psycopg`` (psycopg 3, the DB-API the engine is tested with) when it is
    installed, else ``postgresql+psycopg2``, whatever DB-API the URL names: so
    ``postgresql+psycopg2://`` works with the ``postgres`` extra alone, and an async DB-API
    (``asyncpg``) is swapped for a synchronous one."""
    for name, module in _POSTGRES_DBAPIS:
        if _installed(module):
            return f"postgresql+{name}"
    raise EngineNotConfiguredError(_MISSING_POSTGRES_DRIVER.format(where=where))


def _driver_for(scheme: str, where: str) -> str | None:
    """The SQLAlchemy driver for a URL scheme or connection type, ``None`` if it names no
    database the engine supports. Accepts what users type: ``postgres``, ``postgresql``,
    ``postgresql+psycopg``, ``postgresql+psycopg2``, ``sqlite``, ``sqlite+pysqlite``..."""
    backend, _, dbapi = scheme.strip().lower().replace("-", "_").partition("+")
    match _BACKENDS.get(backend):
        case "postgresql":
            return _postgres_driver(where)
        case "sqlite":
            return "sqlite"
        case "mysql":
            return f"mysql+{dbapi or 'mysqldb'}"
    return None


def _sqlite_path(path: str) -> str:
    """An absolute SQLite path: a relative one (``sqlite:///engine.db``) is taken from
    ``$AIRFLOW_HOME``, the one directory every Airflow process agrees on (their working
    directories differ)."""
    resolved = Path(os.path.expandvars(path)).expanduser()
    return str(resolved if resolved.is_absolute() else airflow_home() / resolved)


def build_sql_url(conn: Connection) -> URL:
    """A SQLAlchemy URL from an Airflow connection's parts.

    - the driver: the ``driver`` (or the postgres provider's ``sqlalchemy_scheme``) extra,
      else the connection type, which may be a URL scheme as Airflow parses
      ``AIRFLOW_CONN_...`` URIs (``postgres``, ``postgresql+psycopg``, ``postgresql+psycopg2``,
      ``sqlite``; type ``workflow_engine`` without the extra means PostgreSQL). PostgreSQL
      gets an installed DB-API (:func:`_postgres_driver`);
    - the database: ``schema`` (for SQLite the file path, relative ones under
      ``$AIRFLOW_HOME``; ``host`` is accepted too, the way Airflow's SQLite connections
      hold it);
    - every other extra (``sslmode``...) becomes a query parameter, except the postgres
      provider's own (``cursor``, ``iam``...).
    """
    from sqlalchemy.engine import URL

    extras = conn.extra_dejson
    where = f"Connection '{conn.conn_id}'"
    conn_type = (conn.conn_type or CONN_TYPE).replace("-", "_")
    wanted = str(extras.get("driver") or extras.get("sqlalchemy_scheme") or conn_type).strip()
    driver = _driver_for(wanted, where)
    if driver is None:
        raise EngineNotConfiguredError(
            f"{where} has type '{conn.conn_type}'"
            + (f" and driver '{wanted}'" if wanted != conn_type else "")
            + ", which names no database the engine supports: use a PostgreSQL or SQLite "
            "URL (postgresql://, postgresql+psycopg://, sqlite:////abs/path.db), a "
            f"'{CONN_TYPE}', 'postgres' or 'sqlite' connection, or set its 'driver' extra "
            "(e.g. 'postgresql' or 'sqlite')."
        )
    query = {
        k: v if isinstance(v, str) else json.dumps(v) if isinstance(v, dict | list) else str(v)
        for k, v in extras.items()
        if k not in _ENGINE_EXTRAS and k not in _AIRFLOW_POSTGRES_EXTRAS and v not in (None, "")
    }
    if driver == "sqlite":
        path = conn.schema or conn.host or ""
        if not path or path == ":memory:":
            raise EngineNotConfiguredError(
                f"{where} is a SQLite connection without a file: put the database file's "
                "path in its 'schema' (or 'host') field, e.g. '/opt/airflow/workflow_engine.db' "
                "(URI: 'sqlite:////opt/airflow/workflow_engine.db')."
            )
        return URL.create(driver, database=_sqlite_path(path), query=query)
    if not conn.host:
        raise EngineNotConfiguredError(f"{where} has no host: set the database server's host name.")
    return URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host,
        port=int(conn.port) if conn.port else None,
        database=conn.schema or None,
        query=query,
    )


def normalize_config_url(raw: str, where: str) -> str:
    """``[workflow_engine] sql_alchemy_conn`` read the way :func:`build_sql_url` reads a
    connection: the same scheme aliases and installed driver, relative SQLite paths under
    ``$AIRFLOW_HOME``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    scheme = raw.partition("://")[0]
    try:
        url = make_url(raw if "://" not in raw else "x://" + raw.partition("://")[2])
    except ArgumentError:
        raise EngineNotConfiguredError(
            f"{where} is not a database URL (expected e.g. "
            "'postgresql://user:password@host:5432/airflow' or 'sqlite:////abs/path/engine.db')."
        ) from None
    driver = _driver_for(scheme, where)
    if driver is None:
        raise EngineNotConfiguredError(
            f"{where} has the scheme '{scheme}', which names no database the engine supports: "
            "use postgresql://, postgresql+psycopg:// or sqlite:////abs/path.db."
        )
    url = url.set(drivername=driver)
    if driver == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=_sqlite_path(url.database))
    return url.render_as_string(hide_password=False)


def _settings_from_connection(conn: Connection) -> EngineSettings:
    extras = conn.extra_dejson
    url = build_sql_url(conn)
    where = f"connection '{conn.conn_id}'"
    blob = str(extras.get("blob_store") or conf_get("blob_store") or default_blob_store())
    threshold_raw = extras.get("output_blob_threshold")
    if threshold_raw in (None, ""):
        threshold_raw = conf_get("output_blob_threshold", str(DEFAULT_OUTPUT_BLOB_THRESHOLD))
    aws = str(extras.get("blob_aws_conn_id") or conf_get("blob_aws_conn_id") or "") or None
    return EngineSettings(
        sql_url=url.render_as_string(hide_password=False),
        blob_store=blob,
        output_blob_threshold=_parse_threshold(threshold_raw, where),
        blob_aws_conn_id=aws,
        source=where,
        conn_id=conn.conn_id,
    )


def settings_from_config() -> EngineSettings | None:
    """Settings from the ``[workflow_engine]`` section, or ``None`` when it names no database."""
    url = conf_get("sql_alchemy_conn")
    if not url:
        return None
    where = f"[{CONFIG_SECTION}] sql_alchemy_conn"
    return EngineSettings(
        sql_url=normalize_config_url(url, where),
        blob_store=conf_get("blob_store") or default_blob_store(),
        output_blob_threshold=_parse_threshold(
            conf_get("output_blob_threshold", str(DEFAULT_OUTPUT_BLOB_THRESHOLD)), where
        ),
        blob_aws_conn_id=conf_get("blob_aws_conn_id") or None,
        source=where,
    )


def in_task_runtime() -> bool:
    """Whether this process reaches connections through Airflow's execution API (a task,
    a triggerer's trigger runner, a DAG-file parser) rather than Airflow's database."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    if getattr(runner, "SUPERVISOR_COMMS", None) is not None:
        return True
    return os.environ.get("_AIRFLOW_PROCESS_CONTEXT") == "client"


def get_connection(conn_id: str) -> Connection:
    """The connection ``conn_id`` wherever Airflow keeps it, in every kind of process.

    Task code asks the Task SDK (environment variables, the secrets backend, then Airflow's
    database through the execution API). Elsewhere (``airflow workflow-engine ...``,
    ``airflow db migrate``, the api-server) the Task SDK looks only at environment
    variables and the secrets backend, so a connection created in the UI, through the REST
    API or with ``airflow connections add`` would be missing: there the lookup is
    ``airflow connections get``'s (environment, secrets backend, then Airflow's database).
    """
    if not in_task_runtime():
        try:
            from airflow.models.connection import Connection as StoredConnection
        except ImportError:  # a worker with the Task SDK only
            pass
        else:
            found: Connection = StoredConnection.get_connection_from_secrets(conn_id)
            return found
    from airflow.sdk import BaseHook

    conn: Connection = BaseHook.get_connection(conn_id)
    return conn


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is Airflow's "no such connection"."""
    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, AirflowNotFoundException)


def find_connection(conn_id: str) -> Connection | None:
    """:func:`get_connection`, or ``None`` when the connection does not exist."""
    try:
        return get_connection(conn_id)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def resolve_settings(
    conn_id: str | None, conn: Connection | None, lookup_error: BaseException | None
) -> EngineSettings:
    """The settings from ``conn`` (the connection ``conn_id`` as looked up), else from the
    config section; ``lookup_error``: why the lookup found nothing, chained to the error."""
    if conn is not None:
        return _settings_from_connection(conn)
    if conn_id is not None and conn_id != DEFAULT_CONN_ID:
        raise EngineNotConfiguredError(
            f"The Airflow connection '{conn_id}' (conn_id of the workflow-engine operator or "
            f"hook) does not exist: create it, or drop conn_id to use '{DEFAULT_CONN_ID}' / "
            f"[{CONFIG_SECTION}] sql_alchemy_conn."
        ) from lookup_error
    settings = settings_from_config()
    if settings is None:
        raise EngineNotConfiguredError(
            f"The workflow engine has no database configured. {_WHAT_TO_SET}"
        ) from lookup_error
    return settings
