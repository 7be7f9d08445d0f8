"""``airflow workflow-engine runs list`` and ``runs show``: the engine's rows of workflow runs."""

from __future__ import annotations

from argparse import Namespace
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.ai.ledger import money
from airflow_workflow_engine.cli._common import (
    cli_command,
    iso,
    money_text,
    newest_runs,
    open_store,
    preview,
    print_listing,
    print_structured,
    render_table,
    resolve_run,
)
from airflow_workflow_engine.host.runs import split_run_key
from airflow_workflow_engine.kernel.approvals import APPROVAL_PREFIX, awaiting_since
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.records import AnnotationRecord, RunRecord, StageRecord

__all__ = ["runs_list", "runs_show"]

_LIST_HEADERS = [
    "WORKFLOW RUN",
    "WORKFLOW",
    "DAG RUN",
    "STATUS",
    "CREATED",
    "COMPLETED",
    "COST",
    "TOKENS",
]


def _awaiting_approval(store: Any, run: RunRecord) -> str | None:
    """Since when an active run waits for a reviewer (``WorkflowApprovalOperator``)."""
    if run.status not in (Status.RUNNING, Status.SUSPENDED):
        return None

    return iso(awaiting_since(store.list_annotations(run.id, key_prefix=APPROVAL_PREFIX)))


def _run_row(run: RunRecord, awaiting_approval_since: str | None = None) -> dict[str, Any]:
    dag_id, dag_run_id, _ = split_run_key(run.idempotency_key)
    return {
        "workflow_run_id": run.id,
        "workflow_id": run.workflow_id,
        "dag_id": dag_id,
        "dag_run_id": dag_run_id,
        "idempotency_key": run.idempotency_key,
        "status": run.status.value,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "completed_at": iso(run.completed_at),
        # Exact in JSON and YAML: a decimal string, never a float such as 4.36e-05.
        "total_cost": money(run.total_cost),
        "total_tokens": run.total_tokens,
        "awaiting_approval_since": awaiting_approval_since,
    }


@cli_command()
def runs_list(args: Namespace) -> None:
    """Workflow runs, newest first."""
    with open_store(args.conn_id) as store:
        runs = newest_runs(
            store,
            dag_id=args.dag_id,
            workflow_id=args.workflow_id,
            status=args.status,
            limit=max(int(args.limit), 1),
        )
        rows = [_run_row(r, _awaiting_approval(store, r)) for r in runs]
    print_listing(rows, args.output, mapper=_list_cells, empty="No workflow runs match.")


def _list_cells(row: dict[str, Any]) -> dict[str, Any]:
    values = (
        row["workflow_run_id"],
        row["workflow_id"],
        row["idempotency_key"],
        _status_note(row),
        row["created_at"],
        row["completed_at"],
        money_text(row["total_cost"]),
        row["total_tokens"],
    )
    return dict(zip(_LIST_HEADERS, values, strict=True))


def _status_note(row: dict[str, Any]) -> str:
    since = row["awaiting_approval_since"]
    return f"{row['status']} (awaiting approval since {since})" if since else str(row["status"])


def _duration(stage: StageRecord) -> float | None:
    if stage.started_at is None or stage.completed_at is None:
        return None
    return round((stage.completed_at - stage.started_at).total_seconds(), 3)


def _stage_row(stage: StageRecord) -> dict[str, Any]:
    metrics = stage.metrics or {}
    return {
        "stage_id": stage.stage_id,
        "execution_group": stage.execution_group,
        "status": stage.status.value,
        "attempt": stage.attempt,
        "started_at": iso(stage.started_at),
        "completed_at": iso(stage.completed_at),
        "duration_seconds": _duration(stage),
        "ai_cost": None if metrics.get("ai_cost") is None else money(metrics["ai_cost"]),
        "ai_tokens": metrics.get("ai_tokens"),
        "output_preview": None if stage.output is None else preview(stage.output),
        "output_ref": stage.output_ref,
        "error": stage.error_message,
    }


def _annotation_row(note: AnnotationRecord) -> dict[str, Any]:
    return {
        "key": note.key,
        "value": note.value,
        "actor": f"{note.actor.kind}:{note.actor.id}",
        "stage_id": note.stage_id,
        "attempt": note.attempt,
        "created_at": iso(note.created_at),
    }


@cli_command()
def runs_show(args: Namespace) -> None:
    """One workflow run: status, input, error, stages and annotations."""
    with open_store(args.conn_id) as store:
        run = resolve_run(store, args.dag_id, args.run_id, args.workflow_run_id)
        stages = store.list_stages(run.id)
        notes = store.list_annotations(run.id)
    summary = _run_row(run)
    stage_rows = [_stage_row(s) for s in stages]
    note_rows = [_annotation_row(a) for a in notes]
    if args.output in ("json", "yaml"):
        print_structured(
            {
                **summary,
                "workflow_name": run.workflow_name,
                "input": run.input,
                "output_preview": None if run.output is None else preview(run.output),
                "error": run.error_message,
                "stages": stage_rows,
                "annotations": note_rows,
            },
            args.output,
        )
        return
    _print_run(run, summary, stage_rows, note_rows)


def _print_run(
    run: RunRecord,
    summary: dict[str, Any],
    stages: list[dict[str, Any]],
    notes: list[dict[str, Any]],
) -> None:
    duration = run.duration_seconds
    facts = [
        ("DAG run", summary["idempotency_key"]),
        ("status", summary["status"]),
        ("created", summary["created_at"]),
        ("started", summary["started_at"]),
        ("completed", summary["completed_at"]),
        ("duration", None if duration is None else f"{duration:.1f}s"),
        ("AI cost", f"{money_text(run.total_cost)}, {run.total_tokens} tokens"),
        ("input", preview(run.input)),
        ("error", run.error_message),
    ]
    print(f"Workflow run {run.id} (workflow {run.workflow_id})")
    for name, value in facts:
        print(f"  {name + ':':<11}{'-' if value is None else value}")
    print(f"\nStages ({len(stages)}):")
    if stages:
        table = render_table(
            ["GROUP", "STAGE", "STATUS", "ATTEMPT", "DURATION", "AI COST", "AI TOKENS", "OUTPUT"],
            [
                [
                    s["execution_group"],
                    s["stage_id"],
                    s["status"],
                    s["attempt"],
                    None if s["duration_seconds"] is None else f"{s['duration_seconds']:.2f}s",
                    None if s["ai_cost"] is None else money_text(s["ai_cost"]),
                    s["ai_tokens"],
                    _output_cell(s),
                ]
                for s in stages
            ],
            right=(0, 3, 4, 5, 6),
        )
        print("\n".join(f"  {line}" for line in table.splitlines()))
    print(f"\nAnnotations ({len(notes)}):")
    for a in notes:
        where = f", stage {a['stage_id']}" if a["stage_id"] else ""
        print(
            f"  {a['key']} = {preview(a['value'], 80)}  (by {a['actor']}{where}, {a['created_at']})"
        )


def _output_cell(stage: dict[str, Any]) -> str | None:
    if stage["output_ref"]:
        return f"blob:{stage['output_ref']}"
    if stage["error"]:
        return f"error: {stage['error']}"
    preview_text: str | None = stage["output_preview"]
    return preview_text
