"""``WorkflowEngineHook``: where the engine's state lives under Airflow, and the kernel over it.

Airflow 3 hides its metadata database from task and trigger code, so the engine reaches its
``wfe_`` tables through a database URL of its own, taken from (first match wins):

1. the Airflow connection ``conn_id`` (default ``workflow_engine_default``, type
   ``workflow_engine``; a ``postgres`` or ``sqlite`` connection, or any PostgreSQL/SQLite
   URL form, works too), wherever Airflow keeps it (see :func:`_get_connection`);
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

One kernel (and so one connection pool) is built per process and per settings, and shared
by every operator and trigger of that process.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_workflow_engine.errors import WorkflowEngineError

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from sqlalchemy.engine import URL

    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.ports import BlobStore, WorkflowRegistry

__all__ = [
    "CONFIG_SECTION",
    "CONN_TYPE",
    "DEFAULT_CONN_ID",
    "DEFAULT_OUTPUT_BLOB_THRESHOLD",
    "EngineNotConfiguredError",
    "EngineSettings",
    "WorkflowEngineHook",
    "build_sql_url",
    "reset_kernel_cache",
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


def _conf_get(option: str, fallback: str = "") -> str:
    from airflow.sdk import conf

    value = conf.get(CONFIG_SECTION, option, fallback=fallback)
    return str(value).strip() if value is not None else fallback


def _airflow_home() -> Path:
    return Path(os.path.expandvars(os.environ.get("AIRFLOW_HOME", "~/airflow"))).expanduser()


def default_blob_store() -> str:
    """The blob store used when nothing is configured: ``$AIRFLOW_HOME/workflow_engine/blobs``."""
    return str(_airflow_home() / "workflow_engine" / "blobs")


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
    return str(resolved if resolved.is_absolute() else _airflow_home() / resolved)


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
    blob = str(extras.get("blob_store") or _conf_get("blob_store") or default_blob_store())
    threshold_raw = extras.get("output_blob_threshold")
    if threshold_raw in (None, ""):
        threshold_raw = _conf_get("output_blob_threshold", str(DEFAULT_OUTPUT_BLOB_THRESHOLD))
    aws = str(extras.get("blob_aws_conn_id") or _conf_get("blob_aws_conn_id") or "") or None
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
    url = _conf_get("sql_alchemy_conn")
    if not url:
        return None
    where = f"[{CONFIG_SECTION}] sql_alchemy_conn"
    return EngineSettings(
        sql_url=normalize_config_url(url, where),
        blob_store=_conf_get("blob_store") or default_blob_store(),
        output_blob_threshold=_parse_threshold(
            _conf_get("output_blob_threshold", str(DEFAULT_OUTPUT_BLOB_THRESHOLD)), where
        ),
        blob_aws_conn_id=_conf_get("blob_aws_conn_id") or None,
        source=where,
    )


def _in_task_runtime() -> bool:
    """Whether this process reaches connections through Airflow's execution API (a task,
    a triggerer's trigger runner, a DAG-file parser) rather than Airflow's database."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    if getattr(runner, "SUPERVISOR_COMMS", None) is not None:
        return True
    return os.environ.get("_AIRFLOW_PROCESS_CONTEXT") == "client"


def _get_connection(conn_id: str) -> Connection:
    """The connection ``conn_id`` wherever Airflow keeps it, in every kind of process.

    Task code asks the Task SDK (environment variables, the secrets backend, then Airflow's
    database through the execution API). Elsewhere (``airflow workflow-engine ...``,
    ``airflow db migrate``, the api-server) the Task SDK looks only at environment
    variables and the secrets backend, so a connection created in the UI, through the REST
    API or with ``airflow connections add`` would be missing: there the lookup is
    ``airflow connections get``'s (environment, secrets backend, then Airflow's database).
    """
    if not _in_task_runtime():
        try:
            from airflow.models.connection import Connection as StoredConnection
        except ImportError:  # a worker with the Task SDK only
            pass
        else:
            found: Connection = StoredConnection.get_connection_from_secrets(conn_id)
            return found
    return BaseHook.get_connection(conn_id)


def _is_not_found(exc: BaseException) -> bool:
    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, AirflowNotFoundException)


def _resolve(
    conn_id: str | None, conn: Connection | None, lookup_error: BaseException | None
) -> EngineSettings:
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


# -- the kernel, once per process ----------------------------------------------------------


class _SharedRegistry:
    """The workflows a process has seen; the newest definition of an id wins."""

    def __init__(self) -> None:
        self._workflows: dict[str, Workflow] = {}
        self._fallbacks: list[WorkflowRegistry] = []
        self._lock = threading.Lock()

    def add(self, item: Workflow | WorkflowRegistry) -> None:
        from airflow_workflow_engine.definitions.workflow import Workflow

        with self._lock:
            if isinstance(item, Workflow):
                self._workflows[item.id] = item
            elif item not in self._fallbacks:
                self._fallbacks.append(item)

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        found = self._workflows.get(workflow_id)
        if found is not None:
            return found
        for registry in list(self._fallbacks):
            found = registry.get_workflow(workflow_id)
            if found is not None:
                return found
        return None


@dataclass
class _Built:
    kernel: Kernel
    registry: _SharedRegistry


_cache_lock = threading.Lock()
_kernels: dict[tuple[int, EngineSettings], _Built] = {}


def reset_kernel_cache() -> None:
    """Forgets the cached kernels and closes their connection pools (tests, forks)."""
    with _cache_lock:
        built = list(_kernels.values())
        _kernels.clear()
    for item in built:
        _close(item.kernel)


def _make_blob_store(settings: EngineSettings) -> BlobStore:
    target = settings.blob_store
    if target.startswith("s3://"):
        from airflow_workflow_engine.blob.s3 import S3BlobStore

        bucket, _, prefix = target[len("s3://") :].partition("/")
        if not bucket:
            raise EngineNotConfiguredError(
                f"blob_store {target!r} ({settings.source}) names no bucket: use "
                "'s3://bucket/optional/prefix'."
            )
        client = _s3_client(settings.blob_aws_conn_id) if settings.blob_aws_conn_id else None
        return S3BlobStore(bucket, prefix, client=client)
    if "://" in target:
        raise EngineNotConfiguredError(
            f"blob_store {target!r} ({settings.source}) is neither a local path nor an "
            "'s3://bucket/prefix' URL."
        )
    from airflow_workflow_engine.blob.local import LocalBlobStore

    return LocalBlobStore(target)


def _s3_client(aws_conn_id: str) -> Any:
    try:
        s3_hooks = importlib.import_module("airflow.providers.amazon.aws.hooks.s3")
    except ImportError:
        raise EngineNotConfiguredError(
            f"blob_aws_conn_id is '{aws_conn_id}', which needs the Amazon provider: install "
            "apache-airflow-providers-amazon, or unset blob_aws_conn_id to use boto3's default "
            "credentials (environment, profile or instance role)."
        ) from None
    return s3_hooks.S3Hook(aws_conn_id=aws_conn_id).get_conn()


def _build(settings: EngineSettings) -> _Built:
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.hooks.events import event_sink_from_config
    from airflow_workflow_engine.hooks.llm import AirflowAIFactory
    from airflow_workflow_engine.host.ports import AirflowJobTransport, AirflowScheduler
    from airflow_workflow_engine.kernel.kernel import KernelSettings, create_kernel
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    try:
        persistence = SqlPersistence(settings.sql_url)
    except Exception as exc:  # a malformed URL or a missing driver
        raise EngineNotConfiguredError(
            f"Cannot use the workflow engine database from {settings.source}: {exc}"
        ) from exc
    # No schema check here (it costs an Alembic import per task process): a missing or
    # outdated wfe_ table surfaces as MigrationsNotAppliedError naming `airflow db migrate`
    # on first use; test_connection() checks the revision explicitly.
    registry = _SharedRegistry()
    # ctx.ai: credentials from Airflow connections (hooks/llm.py), one ledger row per model
    # call in wfe_ai_calls of the same database (sharing the pool), labelled with the DAG id,
    # task id, workflow run id and try number; stage metrics and run totals roll up from it.
    ledger = SqlLedger(persistence.engine)
    kernel = create_kernel(
        persistence=persistence,
        blob_store=_make_blob_store(settings),
        job_transport=AirflowJobTransport(),
        event_sink=event_sink_from_config(),  # [workflow_engine] event_plugins
        scheduler=AirflowScheduler(),
        registry=registry,
        settings=KernelSettings(output_blob_threshold=settings.output_blob_threshold),
        ledger=ledger,
        ai_factory=AirflowAIFactory(ledger, persistence),
    )
    return _Built(kernel, registry)


def kernel_for(
    settings: EngineSettings,
    workflows: Workflow | WorkflowRegistry | Iterable[Workflow | WorkflowRegistry] = (),
) -> Kernel:
    """The process's kernel for ``settings`` (built on first use), knowing ``workflows``."""
    key = (os.getpid(), settings)
    with _cache_lock:
        built = _kernels.get(key)
    if built is None:
        fresh = _build(settings)
        with _cache_lock:
            built = _kernels.setdefault(key, fresh)
        if built is not fresh:
            _close(fresh.kernel)
    for item in _as_items(workflows):
        built.registry.add(item)
    return built.kernel


def _as_items(
    workflows: Workflow | WorkflowRegistry | Iterable[Workflow | WorkflowRegistry],
) -> list[Workflow | WorkflowRegistry]:
    from airflow_workflow_engine.definitions.workflow import Workflow

    if isinstance(workflows, Workflow) or hasattr(workflows, "get_workflow"):
        return [workflows]  # type: ignore[list-item]
    return list(workflows)


def _close(kernel: Kernel) -> None:
    close = getattr(kernel.persistence, "close", None)
    if callable(close):
        close()


# -- the hook -----------------------------------------------------------------------------


class WorkflowEngineHook(BaseHook):
    """Builds the workflow engine's kernel from an Airflow connection or the config section.

    :param conn_id: the ``workflow_engine`` connection. When the default one
        (``workflow_engine_default``) does not exist, ``[workflow_engine] sql_alchemy_conn``
        is used; a missing non-default connection is an error. ``None``: the config section
        only (no connection lookup).
    """

    conn_name_attr = "conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Workflow Engine"

    def __init__(self, conn_id: str | None = DEFAULT_CONN_ID) -> None:
        super().__init__()
        self.conn_id = conn_id
        self._settings: EngineSettings | None = None

    # -- settings -------------------------------------------------------------------------
    def _lookup(self) -> tuple[Connection | None, BaseException | None]:
        if self.conn_id is None:
            return None, None
        try:
            return _get_connection(self.conn_id), None
        except Exception as exc:
            if _is_not_found(exc):
                return None, exc
            raise

    def get_settings(self) -> EngineSettings:
        """The resolved settings (the connection first, then ``[workflow_engine]``)."""
        if self._settings is None:
            conn, error = self._lookup()
            self._settings = _resolve(self.conn_id, conn, error)
        return self._settings

    async def aget_settings(self) -> EngineSettings:
        """:meth:`get_settings` for async code (the triggerer's event loop)."""
        if self._settings is None:
            conn: Connection | None = None
            error: BaseException | None = None
            if self.conn_id is not None:
                try:
                    if _in_task_runtime():
                        conn = await self.aget_connection(self.conn_id)
                    else:
                        conn = _get_connection(self.conn_id)
                except Exception as exc:
                    if not _is_not_found(exc):
                        raise
                    error = exc
            self._settings = _resolve(self.conn_id, conn, error)
        return self._settings

    def get_sql_url(self) -> str:
        """The SQLAlchemy URL of the engine's tables (with the password: do not log it)."""
        return self.get_settings().sql_url

    # -- kernel ---------------------------------------------------------------------------
    def get_kernel(
        self,
        workflows: Workflow | WorkflowRegistry | Sequence[Workflow | WorkflowRegistry] = (),
    ) -> Kernel:
        """The kernel of this process for this hook's settings, with ``workflows`` (workflow
        objects or registries) registered. Built once per process; cheap afterwards."""
        return kernel_for(self.get_settings(), workflows)

    def get_conn(self) -> Kernel:
        return self.get_kernel()

    # -- Airflow UI -----------------------------------------------------------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {
                "host": "Database host (empty for SQLite)",
                "schema": "Database name, or SQLite file path",
                "login": "User",
            },
            "placeholders": {
                "host": "postgres.internal",
                "schema": "airflow   |   /opt/airflow/workflow_engine.db",
                "port": "5432",
                "extra": json.dumps(
                    {
                        "driver": "postgresql",
                        "blob_store": "s3://my-bucket/workflow-engine",
                        "blob_aws_conn_id": "aws_default",
                        "output_blob_threshold": DEFAULT_OUTPUT_BLOB_THRESHOLD,
                    },
                    indent=1,
                ),
            },
        }

    def test_connection(self) -> tuple[bool, str]:
        """Connects, checks the engine's tables are migrated and the blob store is usable."""
        try:
            settings = self.get_settings()
            from airflow_workflow_engine.persistence.sql import SqlPersistence

            with SqlPersistence(settings.sql_url) as store:
                store.check_schema()
            blobs = _make_blob_store(settings)
            blobs.has("__workflow_engine_connection_test__")
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, (
            f"Connected to the {settings.describe_database()} (from {settings.source}); the "
            f"engine's tables are up to date; blob store: {settings.blob_store}."
        )
