"""``airflow workflow-engine approve`` and ``reject``: a decision for ``ApprovalSensor``;
``approvals list``: the runs waiting for a reviewer in Airflow's Required Actions;
``approvals approve`` and ``approvals reject``: the answer to such a request, as a reviewer
gives it in Required Actions.

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

#: The form field of the reviewer's comment (``operators.approval.COMMENT_PARAM``; the layers
#: keep the CLI from importing the operators).
COMMENT_PARAM = "comment"

__all__ = [
    "approvals_list",
    "approve_request",
    "approve_run",
    "reject_request",
    "reject_run",
]


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


# -- answering Airflow's human-in-the-loop request -------------------------------------------


def _pending_request(session: Any, args: Namespace, where: str) -> Any:
    """The one task instance of the DAG run with an unanswered human-in-the-loop request."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    query = (
        select(TaskInstance)
        .options(joinedload(TaskInstance.hitl_detail))
        .where(TaskInstance.dag_id == args.dag_id, TaskInstance.run_id == args.run_id)
        .where(TaskInstance.map_index == args.map_index)
    )
    if args.task_id:
        query = query.where(TaskInstance.task_id == args.task_id)
    found = [ti for ti in session.scalars(query).unique() if ti.hitl_detail is not None]
    pending = [ti for ti in found if not ti.hitl_detail.response_received]
    if not pending and found:
        done = found[0].hitl_detail
        raise CommandError(
            f"The request of {where} is already answered: {done.chosen_options} by "
            f"{done.responded_by_user_name} at {iso(done.responded_at)}."
        )
    if not pending:
        raise CommandError(f"No human-in-the-loop request in {where}.")
    if len(pending) > 1:
        names = ", ".join(sorted(ti.task_id for ti in pending))
        raise CommandError(f"{where} has several pending requests ({names}): pass --task-id.")
    return pending[0]


def _answer(args: Namespace, option: str) -> None:
    """Answers the pending human-in-the-loop request of a DAG run's approval task in Airflow's
    database, as Airflow's REST API does (``PATCH .../hitlDetails``): the response (who,
    when, the option, the comment) is stored on the request, so Required Actions shows it
    answered, and the waiting task is resumed at once."""
    from airflow.models.hitl import HITLDetail, HITLUser
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.sdk import timezone
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    by = args.by.strip()
    if not by:
        raise CommandError("--by must name who answers.")
    dag_run = f"DAG run {args.dag_id}/{args.run_id}"
    where = dag_run + (f", task {args.task_id}" if args.task_id else "")
    with create_session() as session:
        asked = _pending_request(session, args, where)
        # Lock in Airflow's order (task instance, then the request), as its REST API does.
        ti = session.get(TaskInstance, asked.id, with_for_update={"of": TaskInstance})
        detail = session.scalars(
            select(HITLDetail).where(HITLDetail.ti_id == asked.id).with_for_update(of=HITLDetail)
        ).one()
        if detail.response_received:
            raise CommandError(f"The request of {where} was answered meanwhile.")
        if option not in (detail.options or []):
            raise CommandError(
                f"Task {asked.task_id} does not offer {option!r}: its options are {detail.options}."
            )
        detail.responded_by = dict(HITLUser(id=by, name=by))
        detail.responded_at = timezone.utcnow()
        detail.chosen_options = [option]
        detail.params_input = {COMMENT_PARAM: args.comment} if args.comment else {}
        session.add(detail)
        parked = (TaskInstanceState.AWAITING_INPUT, TaskInstanceState.DEFERRED)
        resumed = ti is not None and ti.state in parked
        if ti is not None and resumed:
            event = TriggerEvent(detail.as_resume_event_payload())  # type: ignore[no-untyped-call]
            handle_event_submit(event, task_instance=ti, session=session)
        task_id = asked.task_id
    comment = f" with comment {args.comment!r}" if args.comment else ""
    state = "; the task resumes" if resumed else ""
    verb = {"Approve": "Approved", "Reject": "Rejected"}[option]
    print(f"{verb} the request of task {task_id} in {dag_run} as {by}{comment}{state}.")


@cli_command(audit=True)
def approve_request(args: Namespace) -> None:
    """Approve a DAG run's pending request in Airflow's Required Actions."""
    _answer(args, "Approve")


@cli_command(audit=True)
def reject_request(args: Namespace) -> None:
    """Reject a DAG run's pending request in Airflow's Required Actions."""
    _answer(args, "Reject")
