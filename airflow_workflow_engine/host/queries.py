"""Read-only queries over the engine's rows, shared by the CLI, the UI pages, the sensors and
the listeners: finding the workflow run of a DAG run, and paging through runs newest first.

The paging queries are SQLAlchemy Core on the engine's own database, never Airflow's ORM
session; the others go through the ``Persistence`` port. Nothing here imports Airflow or
FastAPI, and SQLAlchemy is imported only when a query runs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.host.runs import run_key, run_key_candidates, split_run_key

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import ColumnElement, Select

    from airflow_workflow_engine.kernel.ports import Persistence
    from airflow_workflow_engine.kernel.records import RunRecord
    from airflow_workflow_engine.persistence.sql.store import SqlPersistence

__all__ = [
    "QueryError",
    "costliest_runs",
    "count_runs",
    "find_run_by_key",
    "newest_runs",
    "resolve_run",
    "runs_of_dag_run",
]


class QueryError(Exception):
    """A wrong argument, or a DAG run or workflow run that does not exist: one line (the CLI
    prints it as ``Error: ...``; the UI answers 400/404)."""


def find_run_by_key(persistence: Persistence, key: str) -> RunRecord | None:
    """The workflow run created with idempotency key ``key`` (newest first), or ``None``."""
    return persistence.get_run_by_idempotency_key(key)


def _filters(
    store: SqlPersistence,
    *,
    dag_id: str | None,
    workflow_id: str | None,
    status: str | None,
    dag_ids: Collection[str] | None,
) -> list[ColumnElement[bool]]:
    from sqlalchemy import false, func

    from airflow_workflow_engine.persistence.sql.tables import workflow_runs as t

    key = t.c.idempotency_key
    where: list[ColumnElement[bool]] = []
    if dag_id is not None:
        prefix = f"{dag_id}/"
        # Not LIKE: DAG ids may hold '_', a LIKE wildcard.
        where.append(func.substr(key, 1, len(prefix)) == prefix)
    if dag_ids is not None:
        if not dag_ids:
            return [false()]
        # The DAG id is the key's part before the first '/' (a DAG id holds no '/').
        if store.engine.dialect.name == "postgresql":
            dag_of_key = func.split_part(key, "/", 1)
        else:
            dag_of_key = func.substr(key, 1, func.instr(key, "/") - 1)
        where += [key.contains("/"), dag_of_key.in_(sorted(dag_ids))]
    if workflow_id is not None:
        where.append(t.c.workflow_id == workflow_id)
    if status is not None:
        where.append(t.c.status == status)
    return where


def _read(store: SqlPersistence, query: Select[Any]) -> list[Any]:
    from sqlalchemy import exc

    from airflow_workflow_engine.persistence.sql.errors import translate_error

    try:
        with store.engine.connect() as conn:
            return list(conn.execute(query).mappings().all())
    except (exc.DBAPIError, exc.TimeoutError) as err:
        raise translate_error(err, store.engine.url) from err


def newest_runs(
    store: SqlPersistence,
    *,
    dag_id: str | None = None,
    workflow_id: str | None = None,
    status: str | None = None,
    limit: int = 20,
    offset: int = 0,
    dag_ids: Collection[str] | None = None,
) -> list[RunRecord]:
    """Workflow runs, newest first.

    ``dag_id`` keeps the runs created by that DAG's runs; ``dag_ids`` (when not ``None``)
    keeps only runs of those DAGs, and so no run created outside Airflow. (``Persistence.
    list_runs`` returns the oldest first, for the kernel's claim order.)
    """
    from sqlalchemy import select

    from airflow_workflow_engine.kernel.records import RunRecord
    from airflow_workflow_engine.persistence.sql.tables import workflow_runs as t

    where = _filters(store, dag_id=dag_id, workflow_id=workflow_id, status=status, dag_ids=dag_ids)
    query = (
        select(t)
        .where(*where)
        .order_by(t.c.created_at.desc(), t.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [RunRecord.model_validate(dict(row)) for row in _read(store, query)]


def count_runs(
    store: SqlPersistence,
    *,
    dag_id: str | None = None,
    workflow_id: str | None = None,
    status: str | None = None,
    dag_ids: Collection[str] | None = None,
) -> int:
    """How many runs :func:`newest_runs` pages through with the same filters."""
    from sqlalchemy import func, select

    from airflow_workflow_engine.persistence.sql.tables import workflow_runs as t

    where = _filters(store, dag_id=dag_id, workflow_id=workflow_id, status=status, dag_ids=dag_ids)
    [row] = _read(store, select(func.count().label("n")).select_from(t).where(*where))
    return int(row["n"])


def costliest_runs(
    store: SqlPersistence,
    *,
    since: datetime | None = None,
    dag_ids: Collection[str] | None = None,
    limit: int = 10,
) -> list[RunRecord]:
    """The workflow runs with the highest AI cost (their ``total_cost``, which the kernel
    copies from the ledger), created at or after ``since``; ``dag_ids`` as for
    :func:`newest_runs`. Reads the runs table, not the ledger: a page shows it at once with
    millions of ledger rows."""
    from sqlalchemy import select

    from airflow_workflow_engine.kernel.records import RunRecord
    from airflow_workflow_engine.persistence.sql.tables import workflow_runs as t

    where = _filters(store, dag_id=None, workflow_id=None, status=None, dag_ids=dag_ids)
    where.append(t.c.total_cost > 0)
    if since is not None:
        where.append(t.c.created_at >= since)
    query = (
        select(t)
        .where(*where)
        .order_by(t.c.total_cost.desc(), t.c.created_at.desc(), t.c.id.desc())
        .limit(limit)
    )
    return [RunRecord.model_validate(dict(row)) for row in _read(store, query)]


# -- the workflow run(s) of a DAG run ---------------------------------------------------------


def resolve_run(
    store: SqlPersistence,
    dag_id: str | None,
    run_id: str | None,
    workflow_run_id: str | None,
) -> RunRecord:
    """The workflow run named by ``DAG_ID RUN_ID`` or by ``--workflow-run-id``."""
    if workflow_run_id:
        if dag_id or run_id:
            raise QueryError("Give either DAG_ID RUN_ID or --workflow-run-id, not both.")
        run = store.get_run(workflow_run_id)
        if run is None:
            raise QueryError(f"Workflow run '{workflow_run_id}' does not exist.")
        return run
    if not dag_id or not run_id:
        raise QueryError("Name the run: DAG_ID RUN_ID, or --workflow-run-id ID.")
    key = run_key(dag_id, run_id)
    found = find_run_by_key(store, key)
    if found is None:
        found = _the_group_run(store, key)
    if found is None:
        others = [split_run_key(r.idempotency_key)[1] for r in newest_runs(store, dag_id=dag_id)]
        hint = (
            f" DAG runs of '{dag_id}' that have one (newest first): {', '.join(map(str, others))}."
            if others
            else f" No run of DAG '{dag_id}' has one (its stage tasks never ran?)."
        )
        raise QueryError(f"DAG run '{key}' has no workflow run in the engine.{hint}")
    return found


def _the_group_run(store: SqlPersistence, key: str) -> RunRecord | None:
    """The one workflow run of a DAG run whose workflow is a ``WorkflowTaskGroup`` (key
    ``<dag_id>/<run_id>/<group_id>``); a DAG run with several groups must name the run."""
    # newest_runs' "DAG id" filter matches the key prefix "<dag_id>/<run_id>/".
    runs = newest_runs(store, dag_id=key, limit=100)
    if len(runs) <= 1:
        return runs[0] if runs else None
    choices = ", ".join(f"{split_run_key(r.idempotency_key)[2]}: {r.id}" for r in runs)
    raise QueryError(
        f"DAG run '{key}' runs {len(runs)} workflow task groups; name one with "
        f"--workflow-run-id ({choices})."
    )


def runs_of_dag_run(
    persistence: Persistence, dag_id: str, run_id: str, task_id: str | None = None
) -> list[RunRecord]:
    """The workflow runs of a DAG run: with ``task_id``, the stage task's own (its
    ``WorkflowTaskGroup``'s, by the group prefixes of its task id, or the DAG's); without,
    every one it created (the DAG's and, on SQL persistence, one per workflow task group)."""
    if task_id is not None:
        for key in run_key_candidates(dag_id, run_id, task_id):
            run = find_run_by_key(persistence, key)
            if run is not None:
                return [run]
        return []
    runs = [r for r in [find_run_by_key(persistence, run_key(dag_id, run_id))] if r is not None]
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    if isinstance(persistence, SqlPersistence):
        # Keys "<dag_id>/<run_id>/<group_id>": the "DAG id" filter matches a key prefix.
        runs += newest_runs(persistence, dag_id=run_key(dag_id, run_id), limit=1000)
    return runs
