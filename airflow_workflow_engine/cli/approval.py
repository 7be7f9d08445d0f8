"""``airflow workflow-engine approve`` and ``reject``: a decision for ``ApprovalSensor``.

The decision is an ``Approval`` annotation on the workflow run, written through the kernel by
:func:`airflow_workflow_engine.sensors.approval.record_approval`, as the UI or any other writer
does; the sensor waiting on the run then succeeds (approved) or fails (rejected).
"""

from __future__ import annotations

from argparse import Namespace

from airflow_workflow_engine.cli._common import CommandError, cli_command, open_store, resolve_run

__all__ = ["approve_run", "reject_run"]


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
        f"{'approved' if approved else 'rejected'})."
    )


@cli_command(audit=True)
def approve_run(args: Namespace) -> None:
    """Approve the workflow run of a DAG run."""
    _decide(args, approved=True)


@cli_command(audit=True)
def reject_run(args: Namespace) -> None:
    """Reject the workflow run of a DAG run."""
    _decide(args, approved=False)
