"""``airflow workflow-engine approve`` and ``reject``: a decision for ``ApprovalSensor``;
``approvals list``: the runs waiting for a reviewer in Airflow's Required Actions.

The decision is an ``Approval`` annotation on the workflow run, written through the kernel by
:func:`airflow_workflow_engine.kernel.approvals.record_approval`, as the UI or any other writer
does; the sensor waiting on the run then succeeds (approved) or fails (rejected).
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from airflow_workflow_engine.cli._common import (
    CommandError,
    cli_command,
    iso,
    newest_runs,
    open_store,
    print_listing,
    resolve_run,
)
from airflow_workflow_engine.conventions import Approval
from airflow_workflow_engine.host.runs import split_run_key
from airflow_workflow_engine.kernel.approvals import APPROVAL_PREFIX, awaiting_since
from airflow_workflow_engine.kernel.status import Status

__all__ = ["approvals_list", "approve_run", "reject_run"]


def _decide(args: Namespace, *, approved: bool) -> None:
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.host.approvals import record_approval

    if not args.by.strip():
        raise CommandError("--by must name who decides.")
    with open_store(args.conn_id) as store:
        run = resolve_run(store, args.dag_id, args.run_id, args.workflow_run_id)
    kernel = WorkflowEngineHook(args.conn_id).get_kernel()
    rows = record_approval(
        kernel,
        run.id,
        approved=approved,
        approver=args.by.strip(),
        comment=args.comment,
        stage_id=args.stage_id,
        key_prefix=args.key_prefix,
    )
    verb = "Approved" if approved else "Rejected"
    what = f"DAG run {run.idempotency_key}" if run.idempotency_key else "workflow run"
    stage = f", stage {args.stage_id}" if args.stage_id else ""
    comment = f": {args.comment!r}" if args.comment else ""
    print(
        f"{verb} {what} (workflow run {run.id}, {run.status.value}{stage}) by {args.by}"
        f"{comment}; {len(rows)} annotation(s) written ({args.key_prefix}status = "
        f"{Approval.APPROVED if approved else Approval.REJECTED})."
    )


@cli_command(audit=True)
def approve_run(args: Namespace) -> None:
    """Approve the workflow run of a DAG run."""
    _decide(args, approved=True)


@cli_command(audit=True)
def reject_run(args: Namespace) -> None:
    """Reject the workflow run of a DAG run."""
    _decide(args, approved=False)


@cli_command()
def approvals_list(args: Namespace) -> None:
    """Running workflow runs whose approval point asks a reviewer, oldest request first."""
    rows: list[dict[str, Any]] = []
    with open_store(args.conn_id) as store:
        runs = newest_runs(
            store, dag_id=args.dag_id, status=Status.RUNNING.value, limit=max(int(args.limit), 1)
        )
        for run in runs:
            notes = store.list_annotations(run.id, key_prefix=APPROVAL_PREFIX)
            since = awaiting_since(notes)
            if since is None:
                continue
            task = next((n.value for n in reversed(notes) if n.key.endswith(".task")), None)
            dag_id, dag_run_id, _ = split_run_key(run.idempotency_key)
            rows.append(
                {
                    "workflow_run_id": run.id,
                    "workflow_id": run.workflow_id,
                    "dag_id": dag_id,
                    "dag_run_id": dag_run_id,
                    "task_id": None if task is None else str(task).rsplit("/", 1)[-1],
                    "since": iso(since),
                }
            )
    rows.sort(key=lambda r: str(r["since"]))
    print_listing(rows, args.output, mapper=_cells, empty="No workflow run awaits approval.")


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "WORKFLOW RUN": row["workflow_run_id"],
        "DAG": row["dag_id"],
        "DAG RUN": row["dag_run_id"],
        "TASK": row["task_id"],
        "WAITING SINCE": row["since"],
    }
