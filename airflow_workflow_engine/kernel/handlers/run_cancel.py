"""``run.cancel``: authoritative; cascades to stages and jobs, and cancels external batch work."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow_workflow_engine.kernel.commands import RunCancel, RunCancelResult
from airflow_workflow_engine.kernel.records import StageRecord
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel

logger = logging.getLogger(__name__)


def handle(k: Kernel, cmd: RunCancel) -> RunCancelResult:
    reason = cmd.reason or "cancelled"
    with k.persistence.transaction():
        run = k.require_run(cmd.workflow_run_id, for_update=True)
        if run.status.is_terminal:
            return RunCancelResult(workflow_run_id=run.id, cancelled=False, status=run.status)
        cancelled = k.cancel_open_stages(run.id, f"run cancelled: {reason}")
        run = k.set_run_status(
            run, Status.CANCELLED, completed_at=k.now(), error_message=f"cancelled: {reason}"
        )
        for rec in cancelled:
            k.emit(run.id, "stage:cancelled", {"stage_id": rec.stage_id})
        k.emit(run.id, "workflow:cancelled", {"reason": reason})
    k.job_transport.cancel_run(run.id)
    for rec in cancelled:
        if rec.status == Status.SUSPENDED and rec.suspended_state is not None:
            _cancel_external(k, run.workflow_id, rec)
    return RunCancelResult(workflow_run_id=run.id, cancelled=True, status=run.status)


def _cancel_external(k: Kernel, workflow_id: str, rec: StageRecord) -> None:
    """Best effort: a stage's ``on_cancel`` stops the provider job it was waiting on."""
    try:
        wf = k.workflow(workflow_id)
        stage = wf.get_stage(rec.stage_id)
        if stage.on_cancel is None or rec.suspended_state is None:
            return
        run = k.require_run(rec.workflow_run_id)
        ctx = k.build_context(run, wf, rec.stage_id, attempt=rec.attempt, resume_state=None)
        k.executor.cancel(stage, rec.suspended_state, ctx)
    except Exception:
        logger.exception("on_cancel of stage %s (run %s) failed", rec.stage_id, rec.workflow_run_id)
