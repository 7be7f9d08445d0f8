"""``airflow workflow-engine costs``: AI spend from the ledger (``wfe_ai_calls``), rolled up.

The roll-up is :meth:`SqlLedger.rollup` (filtered by time, workflow run and DAG in the
database) and the table is :func:`ai.report.cost_table`.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Collection, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.cli._common import (
    CommandError,
    cli_command,
    engine_url,
    open_store,
    parse_when,
    print_structured,
    resolve_run,
)

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.ledger import LedgerEntry, RollupRow
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

__all__ = ["LedgerView", "costs"]

_DEFAULT_BY = ("dag", "model")
_DEFAULT_BY_RUN = ("stage", "model")


class LedgerView:
    """A :class:`~airflow_workflow_engine.ai.ledger.Ledger` whose roll-ups keep only the calls
    of a time window (``since`` included, ``until`` excluded) and of one DAG."""

    def __init__(
        self,
        ledger: SqlLedger,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        dag_id: str | None = None,
    ) -> None:
        self._ledger = ledger
        self._since = since
        self._until = until
        self._dag_id = dag_id

    def record(self, entry: LedgerEntry) -> None:
        self._ledger.record(entry)

    def totals(self, workflow_run_id: str, stage_id: str | None = None) -> tuple[Decimal, int]:
        return self._ledger.totals(workflow_run_id, stage_id)

    def spent(self, workflow_run_id: str, stage_id: str | None = None) -> Decimal:
        return self._ledger.spent(workflow_run_id, stage_id)

    def entries(
        self, workflow_run_id: str | None = None, stage_id: str | None = None
    ) -> list[LedgerEntry]:
        return self._ledger.entries(workflow_run_id, stage_id)

    def rollup(
        self,
        group_by: Sequence[str] = ("model_key",),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        workflow_run_id: str | None = None,
        dag_ids: Collection[str] | None = None,
    ) -> list[RollupRow]:
        if dag_ids is None and self._dag_id is not None and workflow_run_id is None:
            dag_ids = (self._dag_id,)
        return self._ledger.rollup(
            group_by,
            since=since or self._since,
            until=until or self._until,
            workflow_run_id=workflow_run_id,
            dag_ids=dag_ids,
        )


def _dimensions(by: str | None, per_run: bool) -> tuple[str, ...]:
    from airflow_workflow_engine.ai.ledger import normalize_group_by

    names = [n.strip() for n in by.split(",") if n.strip()] if by else []
    try:
        return normalize_group_by(names or (_DEFAULT_BY_RUN if per_run else _DEFAULT_BY))
    except ValueError as exc:
        raise CommandError(f"--by: {exc}") from exc


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def _row_json(row: RollupRow) -> dict[str, Any]:
    return {
        **{dim: _json_value(value) for dim, value in row.group.items()},
        "calls": row.calls,
        "errors": row.errors,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cached_tokens": row.cached_tokens,
        "total_tokens": row.total_tokens,
        # Exact: a decimal string ("0.0000436"), never a float such as 4.36e-05.
        "cost": format(row.cost.normalize(), "f"),
        "unpriced_calls": row.unpriced_calls,
    }


@cli_command()
def costs(args: Namespace) -> None:
    """Calls, tokens and cost per group, with a total."""
    from airflow.cli.simple_table import AirflowConsole

    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    if args.run_id and not args.dag_id:
        raise CommandError("--run-id needs --dag-id: a DAG run is named by both.")
    dims = _dimensions(args.by, per_run=bool(args.run_id))
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until, end=True) if args.until else None
    if since is not None and until is not None and until < since:
        raise CommandError(f"--until ({args.until}) is before --since ({args.since}).")
    workflow_run_id: str | None = None
    if args.run_id:
        with open_store(args.conn_id) as store:
            workflow_run_id = resolve_run(store, args.dag_id, args.run_id, None).id
    ledger = SqlLedger(engine_url(args.conn_id))
    try:
        view = LedgerView(ledger, since=since, until=until, dag_id=args.dag_id)
        rows = view.rollup(dims, workflow_run_id=workflow_run_id)
        totals = view.rollup((), workflow_run_id=workflow_run_id)
    finally:
        ledger.close()
    total = totals[0] if totals else _empty_total()
    if args.output in ("table", "plain"):
        if not rows:
            print("No AI calls match.")
            return
        cells = [_row_cells(r, dims) for r in rows]
        cells.append(_row_cells(total, dims, label="TOTAL"))
        AirflowConsole().print_as(data=cells, output=args.output)
        return
    print_structured(
        {
            "group_by": list(dims),
            "filters": {
                "dag_id": args.dag_id,
                "run_id": args.run_id,
                "workflow_run_id": workflow_run_id,
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
            },
            "rows": [_row_json(r) for r in rows],
            "total": _row_json(total),
        },
        args.output,
    )


def _row_cells(row: RollupRow, dims: Sequence[str], label: str = "") -> dict[str, Any]:
    from airflow_workflow_engine.ai.report import format_cost

    group = {
        dim.removesuffix("_id").removesuffix("_key").upper(): (label if i == 0 else "")
        if label
        else _cell(row.group.get(dim))
        for i, dim in enumerate(dims)
    }
    return {
        **group,
        "CALLS": row.calls,
        "ERRORS": row.errors,
        "INPUT TOKENS": row.input_tokens,
        "OUTPUT TOKENS": row.output_tokens,
        "TOTAL TOKENS": row.total_tokens,
        "COST": format_cost(row.cost, row.unpriced_calls),
    }


def _cell(value: Any) -> Any:
    if value is None:
        return "-"
    return _json_value(value)


def _empty_total() -> RollupRow:
    from airflow_workflow_engine.ai.ledger import RollupRow

    return RollupRow(group={}, calls=0)
