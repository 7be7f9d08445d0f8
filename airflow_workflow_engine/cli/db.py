"""``airflow workflow-engine db migrate`` and ``db current``: the engine's own Alembic history.

The tables go where ``airflow db migrate`` puts them and every process looks for them: the
engine's database (``--conn-id``, else ``[workflow_engine] sql_alchemy_conn``). With neither
set, both commands fail saying what to set, as a stage task does.
"""

from __future__ import annotations

from argparse import Namespace

from airflow_workflow_engine.cli._common import cli_command, engine_url

__all__ = ["db_current", "db_migrate"]


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
