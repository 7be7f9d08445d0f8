"""``airflow workflow-engine db migrate``, ``db current`` and ``db grant``: the engine's own
Alembic history, and a least-privilege PostgreSQL role for its processes.

The tables go where ``airflow db migrate`` puts them and every process looks for them: the
engine's database (``--conn-id``, else ``[workflow_engine] sql_alchemy_conn``). With neither
set, both commands fail saying what to set, as a stage task does.
"""

from __future__ import annotations

from argparse import Namespace
from typing import TYPE_CHECKING

from airflow_workflow_engine.cli._common import CommandError, cli_command, engine_url
from airflow_workflow_engine.errors import WorkflowEngineError

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.engine import URL

__all__ = ["db_current", "db_grant", "db_migrate"]


def _describe(url: str) -> str:
    from airflow_workflow_engine.persistence.sql.engine import describe_url, normalize_url

    return describe_url(normalize_url(url))


@cli_command(audit=True)
def db_migrate(args: Namespace) -> None:
    """Create or upgrade the engine's tables (a no-op when they are up to date)."""
    from airflow_workflow_engine.persistence.sql.migrate import (
        HEAD_REVISION,
        current_revision,
        migrate,
    )

    url = engine_url(args.conn_id)
    before = current_revision(url)
    print(f"Migrating the workflow engine's tables in the {_describe(url)}...", flush=True)
    migrate(url)
    after = current_revision(url)
    change = "already up to date" if before == after else f"was {before or 'not created'}"
    print(
        f"The workflow engine's tables are at revision {after} ({change}; newest {HEAD_REVISION})."
    )


@cli_command()
def db_current(args: Namespace) -> None:
    """The revision of the engine's tables, and whether it is the newest."""
    from airflow_workflow_engine.persistence.sql.migrate import HEAD_REVISION, current_revision

    url = engine_url(args.conn_id)
    current = current_revision(url)
    if current == HEAD_REVISION:
        state = "up to date"
    elif current is None:
        state = "the tables are missing: run `airflow workflow-engine db migrate`"
    else:
        state = "out of date: run `airflow workflow-engine db migrate`"
    print(f"Database:         {_describe(url)}")
    print(f"Current revision: {current or '-'}")
    print(f"Newest revision:  {HEAD_REVISION} ({state})")


# -- db grant ---------------------------------------------------------------------------------


def _owner_url(owner_conn_id: str | None) -> URL:
    """The tables' owner: ``--owner-conn-id``, else Airflow's own metadata database URL (the
    one ``airflow db migrate`` creates the tables with)."""
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.hooks.settings import normalize_config_url
    from airflow_workflow_engine.persistence.sql.engine import normalize_url

    if owner_conn_id:
        return normalize_url(WorkflowEngineHook(owner_conn_id).get_sql_url())
    from airflow.configuration import conf

    raw = str(conf.get("database", "sql_alchemy_conn", fallback="") or "")
    if not raw:
        raise CommandError(
            "Airflow's [database] sql_alchemy_conn is not set: pass --owner-conn-id, an Airflow "
            "connection that logs in as the owner of the engine's tables."
        )
    return normalize_url(normalize_config_url(raw, "[database] sql_alchemy_conn"))


def _check_grantable(conn: Connection, role: str, schema: str | None) -> None:
    from sqlalchemy import text

    from airflow_workflow_engine.persistence.sql.grants import privileges, quote

    if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is None:
        raise CommandError(
            f"The role {role!r} does not exist: create it first, e.g. "
            f"CREATE ROLE {quote(role)} LOGIN PASSWORD '...'."
        )
    prefix = f"{quote(schema)}." if schema else ""
    missing = [
        table
        for table in privileges()
        if conn.execute(text("SELECT to_regclass(:t)"), {"t": prefix + quote(table)}).scalar()
        is None
    ]
    if missing:
        where = f"schema {schema!r}" if schema else "the owner's search_path"
        raise CommandError(
            f"The engine's tables are missing in {where} ({', '.join(missing)}): run "
            "`airflow db migrate` first (it creates them as the owner), then grant."
        )


@cli_command(audit=True)
def db_grant(args: Namespace) -> None:
    """Give ``ROLE`` exactly the engine's rights on its tables (or print the SQL)."""
    from sqlalchemy import exc, text

    from airflow_workflow_engine.persistence.sql.engine import (
        describe_url,
        make_engine,
        normalize_url,
    )
    from airflow_workflow_engine.persistence.sql.errors import translate_error
    from airflow_workflow_engine.persistence.sql.grants import (
        grant_statements,
        privileges,
        search_path_schema,
    )

    try:
        engine: URL | None = normalize_url(engine_url(args.conn_id))
    except WorkflowEngineError:
        if not args.print_sql:
            raise
        engine = None  # printing needs no database
    if engine is not None and engine.get_backend_name() != "postgresql":
        raise CommandError(
            f"The engine's database is the {describe_url(engine)}: roles and grants are "
            "PostgreSQL's; there is nothing to grant."
        )
    schema = args.schema or (search_path_schema(engine) if engine is not None else None)
    database = engine.database if engine is not None else None
    statements = grant_statements(args.role, schema=schema, database=database)
    if args.print_sql:
        print(";\n".join(statements) + ";")
        return

    owner = _owner_url(args.owner_conn_id)
    if owner.get_backend_name() != "postgresql":
        raise CommandError(f"The owner's database is the {describe_url(owner)}, not PostgreSQL.")
    if engine is not None and (owner.host, owner.port, owner.database) != (
        engine.host,
        engine.port,
        engine.database,
    ):
        raise CommandError(
            f"The owner's URL names the {describe_url(owner)} but the engine uses the "
            f"{describe_url(engine)}: pass --owner-conn-id naming the owner of the engine's "
            "database."
        )
    db = make_engine(owner)
    try:
        with db.begin() as conn:
            _check_grantable(conn, args.role, schema)
            for statement in statements:
                conn.execute(text(statement))
    except (exc.DBAPIError, exc.TimeoutError) as err:
        raise translate_error(err, owner) from err
    finally:
        db.dispose()
    where = f"schema {schema!r} of the " if schema else ""
    print(f"Granted role {args.role!r} the engine's rights in the {where}{describe_url(owner)}:")
    for table, rights in privileges().items():
        print(f"  {table:<24} {', '.join(rights)}")
    print("  (and USAGE on the tables' sequences; nothing on any other table, no DDL)")
