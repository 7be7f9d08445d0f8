"""``run.cancel``: authoritative; cascades to stages and jobs, and cancels external batch work."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow_workflow_engine.errors import WorkflowNotFoundError
from airflow_workflow_engine.kernel.approvals import approval_state
from airflow_workflow_engine.kernel.commands import RunCancel, RunCancelResult
from airflow_workflow_engine.kernel.records import RunRecord, StageRecord
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel

logger = logging.getLogger(__name__)

#: Stage metric set once the stage's ``on_cancel`` ran, so no other process calls it again.
ON_CANCEL_CALLED = "on_cancel_called"


def handle(k: Kernel, cmd: RunCancel) -> RunCancelResult:
    reason = cmd.reason or "cancelled"
    with k.persistence.transaction():
        run = k.require_run(cmd.workflow_run_id, for_update=True)
        final = run.status.is_terminal
        if not final and cmd.rejection_first:
            decision = approval_state(k.persistence.list_annotations(run.id)).decision
            if decision is not None and not decision.approved:
                reason = f"{decision.describe()}; {reason}"
        if not final:
            cancelled = k.cancel_open_stages(run.id, f"run cancelled: {reason}")
            run = k.set_run_status(
                run, Status.CANCELLED, completed_at=k.now(), error_message=f"cancelled: {reason}"
            )
            for rec in cancelled:
                k.emit(run.id, "stage:cancelled", {"stage_id": rec.stage_id})
            k.emit(run.id, "workflow:cancelled", {"reason": reason})
    if final:
        # Outside the transaction: on_cancel calls the provider.
        stopped = cmd.stop_stage_id is not None and _stop_stage_work(k, run, cmd.stop_stage_id)
        return RunCancelResult(
            workflow_run_id=run.id, cancelled=False, status=run.status, stopped_stage_work=stopped
        )
    k.job_transport.cancel_run(run.id)
    for rec in cancelled:
        if rec.status == Status.SUSPENDED and rec.suspended_state is not None:
            cancel_external_work(k, run.workflow_id, rec)
    return RunCancelResult(workflow_run_id=run.id, cancelled=True, status=run.status, reason=reason)


def _stop_stage_work(k: Kernel, run: RunRecord, stage_id: str) -> bool:
    """``on_cancel`` of a stage cancelled with its run by a process that could not call it."""
    rec = k.persistence.get_stage(run.id, stage_id)
    if rec is None or rec.status != Status.CANCELLED or rec.suspended_state is None:
        return False
    cancel_external_work(k, run.workflow_id, rec)
    return True


def cancel_external_work(k: Kernel, workflow_id: str, rec: StageRecord) -> None:
    """Best effort: a stage's ``on_cancel`` stops the provider job it was waiting on.

    A process that does not know the workflow (Airflow's scheduler or api-server, where the
    listeners cancel runs) skips it; under Airflow the trigger's ``on_kill`` does it instead.
    """
    try:
        wf = k.workflow(workflow_id)
    except WorkflowNotFoundError:
        logger.info(
            "on_cancel of stage %s (run %s) skipped: workflow '%s' is not registered here",
            rec.stage_id,
            rec.workflow_run_id,
            workflow_id,
        )
        return
    try:
        stage = wf.get_stage(rec.stage_id)
        if stage.on_cancel is None or rec.suspended_state is None:
            return
        latest = k.persistence.get_stage(rec.workflow_run_id, rec.stage_id)
        if latest is not None and latest.metrics.get(ON_CANCEL_CALLED):
            return  # another process did it already
        run = k.require_run(rec.workflow_run_id)
        ctx = k.build_context(
            run, wf, rec.stage_id, attempt=rec.attempt, resume_state=None, execution_id=rec.id
        )
        k.executor.cancel(stage, rec.suspended_state, ctx)
        if latest is not None:
            k.persistence.update_stage(
                rec.workflow_run_id,
                rec.stage_id,
                metrics={**latest.metrics, ON_CANCEL_CALLED: True},
                updated_at=k.now(),
            )
    except Exception:
        logger.exception("on_cancel of stage %s (run %s) failed", rec.stage_id, rec.workflow_run_id)
