"""Alembic environment for the engine's own migration history.

Driven from code (:mod:`airflow_workflow_engine.persistence.sql.migrate`): the caller passes an
open connection in ``config.attributes["connection"]``; without one, ``sqlalchemy.url`` from
the config is used (the way Airflow's DB managers call Alembic). Only ``wfe_`` tables are
looked at and the version table is ``wfe_alembic_version``, so a database that also holds
Airflow's tables (and Airflow's ``alembic_version``) is left alone.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from airflow_workflow_engine.persistence.sql.engine import (
    BEGIN_MODE_OPTION,
    make_engine,
    normalize_url,
)
from airflow_workflow_engine.persistence.sql.migrate import include_name, include_object
from airflow_workflow_engine.persistence.sql.tables import VERSION_TABLE, metadata

#: Key of the PostgreSQL advisory lock that serializes concurrent migrators.
ADVISORY_LOCK_KEY = 0x77666500  # "wfe\0"


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("No database: pass a connection or set sqlalchemy.url.")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("No database URL: set sqlalchemy.url to generate SQL offline.")
    context.configure(
        url=normalize_url(url),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
