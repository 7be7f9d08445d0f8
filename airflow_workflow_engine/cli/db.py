"""``airflow workflow-engine db migrate`` and ``db current``: the engine's own Alembic history.

The tables go where ``airflow db migrate`` puts them: the engine's configured database
(``--conn-id``, else ``[workflow_engine] sql_alchemy_conn``); when neither is set, Airflow's
metadata database, through the provider's DB manager (``WorkflowEngineDBManager``).
"""

from __future__ import annotations

from argparse import Namespace

from airflow_workflow_engine.cli._common import cli_command, engine_url

__all__ = ["db_current", "db_migrate"]


def _configured_url(conn_id: str) -> str | None:
    """The engine's database URL; ``None`` (Airflow's metadata database) when nothing is
    configured and the default connection is asked for."""
    from airflow_workflow_engine.hooks.engine import DEFAULT_CONN_ID, EngineNotConfiguredError

    try:
        return engine_url(conn_id)
    except EngineNotConfiguredError:
        if conn_id != DEFAULT_CONN_ID:
            raise
        return None


def _describe(url: str | None) -> str:
    if url is None:
        return "Airflow's metadata database (no engine database is configured)"
    from airflow_workflow_engine.persistence.sql.engine import describe_url, normalize_url

    return describe_url(normalize_url(url))


def _revision(url: str | None) -> str | None:
    from airflow_workflow_engine.persistence.sql.migrate import current_revision

    if url is not None:
        return current_revision(url)
    from airflow.utils.session import create_session

    from airflow_workflow_engine.hooks.db_manager import WorkflowEngineDBManager

    with create_session() as session:
        return WorkflowEngineDBManager(session).get_current_revision()  # type: ignore[no-untyped-call]


@cli_command(audit=True)
def db_migrate(args: Namespace) -> None:
    """Create or upgrade the engine's tables (a no-op when they are up to date)."""
    from airflow_workflow_engine.persistence.sql.migrate import HEAD_REVISION, migrate

    url = _configured_url(args.conn_id)
    before = _revision(url)
    print(f"Migrating the workflow engine's tables in the {_describe(url)}...", flush=True)
    if url is not None:
        migrate(url)
    else:
        from airflow.utils.session import create_session

        from airflow_workflow_engine.hooks.db_manager import WorkflowEngineDBManager

        with create_session() as session:
            WorkflowEngineDBManager(session).upgradedb()  # type: ignore[no-untyped-call]
    after = _revision(url)
    change = "already up to date" if before == after else f"was {before or 'not created'}"
    print(
        f"The workflow engine's tables are at revision {after} ({change}; newest {HEAD_REVISION})."
    )
    if url is None:
        print(
            "Tasks, triggers and `airflow workflow-engine` need the engine's database URL: set "
            "[workflow_engine] sql_alchemy_conn (or the connection) to this database."
        )


@cli_command()
def db_current(args: Namespace) -> None:
    """The revision of the engine's tables, and whether it is the newest."""
    from airflow_workflow_engine.persistence.sql.migrate import HEAD_REVISION

    url = _configured_url(args.conn_id)
    current = _revision(url)
    if current == HEAD_REVISION:
        state = "up to date"
    elif current is None:
        state = "the tables are missing: run `airflow workflow-engine db migrate`"
    else:
        state = "out of date: run `airflow workflow-engine db migrate`"
    print(f"Database:         {_describe(url)}")
    print(f"Current revision: {current or '-'}")
    print(f"Newest revision:  {HEAD_REVISION} ({state})")
