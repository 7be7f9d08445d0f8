"""Creating and upgrading the engine's tables with its own Alembic history, from code.

No ``alembic.ini`` is needed: the Alembic config is built here, its script location points
into this package, and the version table is ``wfe_alembic_version``, never Airflow's
``alembic_version``. Each call runs in one transaction (PostgreSQL and SQLite both have
transactional DDL), so a failed upgrade leaves nothing half-created::

    from airflow_workflow_engine.persistence.sql import migrate

    migrate("postgresql://user:secret@db/airflow")  # idempotent: a no-op when at head
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, exc, text

from airflow_workflow_engine.persistence.sql.engine import (
    BEGIN_MODE_OPTION,
    EngineSource,
    make_engine,
)
from airflow_workflow_engine.persistence.sql.errors import translate_error
from airflow_workflow_engine.persistence.sql.tables import TABLE_PREFIX, VERSION_TABLE

__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "downgrade",
    "include_name",
    "include_object",
    "migrate",
    "use_schema",
]

#: The newest revision in ``migrations/versions`` (a test keeps this in step).
HEAD_REVISION = "0005"

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Alembic keeps the running environment in module globals (``alembic.context``), so one
# process runs one Alembic command at a time; other processes are kept out by the database
# (PostgreSQL: an advisory lock in env.py; SQLite: BEGIN IMMEDIATE).
_ALEMBIC_LOCK = threading.RLock()


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config for our history; pass an open ``connection`` or a ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Reflect only our tables (and never Airflow's)."""
    del parent_names
    if type_ == "table":
        return bool(name) and str(name).startswith(TABLE_PREFIX)
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare only objects that belong to ``wfe_`` tables."""
    del reflected, compare_to
    if type_ == "table":
        table_name = name or ""
    else:
        table = getattr(obj, "table", None)
        table_name = getattr(table, "name", "") or ""
    return table_name.startswith(TABLE_PREFIX)


@contextmanager
def _connection(source: EngineSource, *, write: bool) -> Iterator[Connection]:
    engine: Engine = make_engine(source)
    try:
        try:
            conn = engine.connect()
        except (exc.DBAPIError, exc.TimeoutError) as err:
            raise translate_error(err, engine.url, connecting=True) from err
        try:
            with conn:
                if write:
                    conn.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
                with conn.begin():
                    yield conn
        except (exc.DBAPIError, exc.TimeoutError) as err:
            raise translate_error(err, engine.url) from err
    finally:
        if engine is not source:
            engine.dispose()


def use_schema(conn: Connection, schema: str | None) -> None:
    """On PostgreSQL, creates the engine's own ``schema`` when missing and makes it this
    transaction's ``search_path``, so the migrations create and find the tables there."""
    if not schema or conn.dialect.name != "postgresql":
        return
    from airflow_workflow_engine.persistence.sql.grants import quote

    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"))
    conn.execute(text(f"SET LOCAL search_path TO {quote(schema)}"))


def migrate(url_or_engine: EngineSource, revision: str = "head") -> None:
    """Upgrades the engine's tables to ``revision`` (default: the newest). Safe to repeat.

    A URL whose ``search_path`` names a schema (``?options=-csearch_path%3Dwfe``) puts them
    in that schema, created when missing."""
    from airflow_workflow_engine.persistence.sql.grants import search_path_schema

    with _ALEMBIC_LOCK, _connection(url_or_engine, write=True) as conn:
        use_schema(conn, search_path_schema(conn.engine.url))
        command.upgrade(alembic_config(conn), revision)


def downgrade(url_or_engine: EngineSource, revision: str) -> None:
    """Downgrades to ``revision``; ``"base"`` drops every ``wfe_`` table (in the URL's
    ``search_path`` schema, as :func:`migrate`)."""
    from airflow_workflow_engine.persistence.sql.grants import search_path_schema

    with _ALEMBIC_LOCK, _connection(url_or_engine, write=True) as conn:
        use_schema(conn, search_path_schema(conn.engine.url))
        command.downgrade(alembic_config(conn), revision)


def current_revision(url_or_engine: EngineSource) -> str | None:
    """The applied revision, or ``None`` when the engine's tables were never created."""
    with _connection(url_or_engine, write=False) as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


class _CallableModule(types.ModuleType):
    """Lets ``airflow_workflow_engine.persistence.sql.migrate(url)`` work either way.

    Importing this submodule makes Python set the package attribute ``migrate`` to the
    *module*, shadowing the function the package exports lazily under the same name;
    calling the module calls the function, so both spellings keep working.
    """

    def __call__(self, url_or_engine: EngineSource, revision: str = "head") -> None:
        migrate(url_or_engine, revision)


sys.modules[__name__].__class__ = _CallableModule
