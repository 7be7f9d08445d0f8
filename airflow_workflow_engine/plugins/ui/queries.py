"""Read-only queries over the engine's ``wfe_`` tables, shared by the UI pages and the
``airflow workflow-engine`` CLI (which re-exports them from ``cli/_common.py``).

SQLAlchemy Core on the engine's own database, never Airflow's ORM session. Nothing here
imports Airflow or FastAPI, and SQLAlchemy is imported only when a query runs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Select

    from airflow_workflow_engine.kernel.records import RunRecord
    from airflow_workflow_engine.persistence.sql.store import SqlPersistence

__all__ = ["count_runs", "newest_runs", "split_key"]


def split_key(key: str | None) -> tuple[str | None, str | None]:
    """``(dag_id, run_id)`` of a workflow run's idempotency key ``"<dag_id>/<run_id>"`` or
    ``"<dag_id>/<run_id>/<group_id>"`` (a ``WorkflowTaskGroup``'s run)."""
    if not key or "/" not in key:
        return None, None
    dag_id, _, rest = key.partition("/")
    return dag_id, rest.partition("/")[0]


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
