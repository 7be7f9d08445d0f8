"""What the UI pages read: the engine's tables and the AI cost ledger, through one
:class:`~airflow_workflow_engine.persistence.sql.store.SqlPersistence` and one
:class:`~airflow_workflow_engine.ai.sql_ledger.SqlLedger` (sharing one connection pool) per
process, opened on the first request and never at import.

The database is the engine's own (``workflow_engine_default`` connection, else
``[workflow_engine] sql_alchemy_conn``), never Airflow's ORM session. Which DAGs a user may
read is decided by the caller (:mod:`~airflow_workflow_engine.plugins.ui.app`) and passed in
as ``dag_ids``: ``None`` means every run, a set keeps only runs (and ledger rows) of those
DAGs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.host.queries import costliest_runs, count_runs, newest_runs
from airflow_workflow_engine.plugins.ui.models import (
    AICall,
    Annotation,
    CostReport,
    CostRow,
    Event,
    RunDetail,
    RunList,
    RunSummary,
    Stage,
)

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.ledger import RollupRow
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.kernel.records import RunRecord
    from airflow_workflow_engine.persistence.sql.store import SqlPersistence

__all__ = ["EngineReader", "close_reader", "get_reader"]

#: Characters of a stage output shown in the stage table.
STAGE_PREVIEW_CHARS = 300


@dataclass(frozen=True)
class EngineReader:
    """Read access to the engine's tables and ledger."""

    store: SqlPersistence
    ledger: SqlLedger

    # -- runs ------------------------------------------------------------------------------
    def runs(
        self,
        *,
        dag_id: str | None = None,
        status: str | None = None,
        limit: int = 25,
        offset: int = 0,
        dag_ids: Collection[str] | None = None,
    ) -> RunList:
        found = newest_runs(
            self.store, dag_id=dag_id, status=status, limit=limit, offset=offset, dag_ids=dag_ids
        )
        total = count_runs(self.store, dag_id=dag_id, status=status, dag_ids=dag_ids)
        return RunList(
            runs=[RunSummary.of(r) for r in found],
            total=total,
            limit=limit,
            offset=offset,
            dag_id=dag_id,
            status=status,
        )

    def run(self, workflow_run_id: str) -> RunRecord | None:
        return self.store.get_run(workflow_run_id)

    def run_of_dag_run(self, dag_id: str, run_id: str) -> RunRecord | None:
        """The workflow run a DAG run created (idempotency key ``"<dag_id>/<run_id>"``);
        ``run_id`` may end in ``/<group_id>`` for a ``WorkflowTaskGroup``'s run (a plain
        task group's stage tasks link there too: then the DAG run's own run is shown)."""
        found = self.store.get_run_by_idempotency_key(f"{dag_id}/{run_id}")
        if found is None and "/" in run_id:
            found = self.store.get_run_by_idempotency_key(f"{dag_id}/{run_id.partition('/')[0]}")
        return found

    def detail(self, run: RunRecord) -> RunDetail:
        """Everything the run page shows."""
        from airflow_workflow_engine.ai.ledger import money

        stages = self.store.list_stages(run.id)
        calls = self.ledger.entries(run.id)
        priced = [c.cost for c in calls if c.cost is not None]
        return RunDetail(
            **RunSummary.of(run).model_dump(),
            idempotency_key=run.idempotency_key,
            input=run.input,
            output=run.output,
            error=run.error_message,
            stages=[
                Stage.of(s, STAGE_PREVIEW_CHARS).model_copy(
                    update={"budget": _stage_budget(run.config, s.stage_id)}
                )
                for s in stages
            ],
            annotations=[Annotation.of(a) for a in self.store.list_annotations(run.id)],
            ai_calls=[AICall.of(c) for c in calls],
            events=[Event.of(e) for e in self.store.list_events(run.id)],
            ai_calls_cost=money(sum(priced, start=money(0))),
            ai_calls_unpriced=len(calls) - len(priced),
        )

    # -- AI costs --------------------------------------------------------------------------
    def costs(
        self, *, since: datetime | None = None, dag_ids: Collection[str] | None = None
    ) -> CostReport:
        """Roll-ups of the ledger by day, model and DAG since ``since`` (all time without)."""
        by = {dim: self._rollup(dim, since, dag_ids) for dim in ("day", "model_key", "dag_id")}
        total = self._rollup(None, since, dag_ids)
        return CostReport(
            since=since,
            total=CostRow.of(total[0]) if total else CostRow(),
            by_day=sorted(
                (CostRow.of(r, "day") for r in by["day"]), key=lambda r: r.key or "", reverse=True
            ),
            by_model=_by_cost(CostRow.of(r, "model_key") for r in by["model_key"]),
            by_dag=_by_cost(CostRow.of(r, "dag_id") for r in by["dag_id"]),
        )

    def spend_by_day(
        self, by: str, *, since: datetime, dag_ids: Collection[str] | None = None
    ) -> dict[tuple[date, str], Decimal]:
        """Priced spend per UTC day and ``by`` (``model_key`` or ``dag_id``) since ``since``
        (the costs page's chart); a group without a value is ``"(none)"``."""
        rows = self.ledger.rollup(("day", by), since=since, dag_ids=dag_ids)
        spend: dict[tuple[date, str], Decimal] = {}
        for row in rows:
            day = row.group["day"]
            day = day.date() if isinstance(day, datetime) else day
            if isinstance(day, str):
                day = date.fromisoformat(day[:10])
            name = row.group[by]
            spend[(day, "(none)" if name is None else str(name))] = row.cost
        return spend

    def top_runs(
        self, *, since: datetime | None, dag_ids: Collection[str] | None = None, limit: int = 10
    ) -> list[tuple[CostRow, RunSummary | None]]:
        """The workflow runs created since ``since`` that spent the most (``key``: the run
        id), each with its run and its ledger roll-up (calls, tokens, cost).

        The runs are picked by their ``total_cost`` (the kernel's copy of their ledger sum,
        :func:`~airflow_workflow_engine.host.queries.costliest_runs`), then each one's roll-up
        is read through the ledger's ``workflow_run_id`` index: grouping every ledger row by
        run took seconds with a million rows."""
        runs = costliest_runs(self.store, since=since, dag_ids=dag_ids, limit=limit)
        top = []
        for run in runs:
            rows = self.ledger.rollup((), workflow_run_id=run.id)
            row = CostRow.of(rows[0]) if rows else CostRow()
            top.append((row.model_copy(update={"key": run.id}), RunSummary.of(run)))
        ranked = sorted(top, key=lambda pair: (-pair[0].cost, -pair[0].calls, pair[0].key or ""))
        return [pair for pair in ranked if pair[0].cost > 0]

    def _rollup(
        self, dimension: str | None, since: datetime | None, dag_ids: Collection[str] | None
    ) -> list[RollupRow]:
        dims = () if dimension is None else (dimension,)
        # dag_ids (when not None): only the calls of the DAGs this user may read.
        return self.ledger.rollup(dims, since=since, dag_ids=dag_ids)


def _stage_budget(config: dict[str, Any] | None, stage_id: str) -> Decimal | None:
    """``max_cost`` of the stage's config in the run (a budget of US dollars), if any."""
    from airflow_workflow_engine.ai.ledger import money

    stage = (config or {}).get(stage_id)
    value = stage.get("max_cost") if isinstance(stage, dict) else None
    if not isinstance(value, (int, float, str)) or isinstance(value, bool):
        return None
    try:
        return money(Decimal(str(value).strip()))
    except ArithmeticError:
        return None  # not a number: the stage itself reports that


def _by_cost(rows: Iterable[CostRow]) -> list[CostRow]:
    return sorted(rows, key=lambda r: (-r.cost, -r.calls, r.key or ""))


# -- one reader per process --------------------------------------------------------------

_lock = threading.Lock()
_readers: dict[tuple[int, str | None], EngineReader] = {}


def get_reader(conn_id: str | None = DEFAULT_CONN_ID) -> EngineReader:
    """This process's reader, opened on first use.

    Raises ``EngineNotConfiguredError`` (it names what to set), ``MigrationsNotAppliedError``
    or ``DatabaseUnavailableError``; nothing is kept after a failure, so the next request
    tries again (e.g. once ``airflow db migrate`` has run).
    """
    key = (os.getpid(), conn_id)
    with _lock:
        reader = _readers.get(key)
        if reader is not None:
            return reader
        from airflow_workflow_engine.ai.sql_ledger import SqlLedger
        from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
        from airflow_workflow_engine.persistence.sql.store import SqlPersistence

        store = SqlPersistence(WorkflowEngineHook(conn_id=conn_id).get_sql_url())
        try:
            store.check_schema()
        except BaseException:
            store.close()
            raise
        reader = _readers[key] = EngineReader(store, SqlLedger(store.engine))
        return reader


def close_reader() -> None:
    """Closes the readers of this process (their connection pools)."""
    with _lock:
        for key in [k for k in _readers if k[0] == os.getpid()]:
            _readers.pop(key).store.close()
