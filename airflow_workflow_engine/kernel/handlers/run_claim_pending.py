"""``run.claimPending``: start PENDING runs (highest priority first) and enqueue group 1."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine.errors import WorkflowNotFoundError
from airflow_workflow_engine.kernel.commands import (
    ClaimedRun,
    RunClaimPending,
    RunClaimPendingResult,
)
from airflow_workflow_engine.kernel.records import RunRecord
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel


def start_run(k: Kernel, run: RunRecord | str, worker_id: str) -> ClaimedRun | None:
    """PENDING -> RUNNING and the first group's jobs. Call inside a transaction."""
    run_id = run if isinstance(run, str) else run.id
    run, stages = k.require_run_with_stages(run_id, for_update=True)
    if run.status != Status.PENDING:
        return None
    wf = k.workflow(run.workflow_id)
    run = k.set_run_status_and_emit(
        run, Status.RUNNING, "workflow:started", {"worker_id": worker_id}, started_at=k.now()
    )
    job_ids = k.start_group(run, wf, 0, existing={s.stage_id for s in stages})
    return ClaimedRun(workflow_run_id=run.id, workflow_id=run.workflow_id, job_ids=job_ids)


def handle(k: Kernel, cmd: RunClaimPending) -> RunClaimPendingResult:
    if cmd.workflow_run_id is not None:
        # Read (and locked) once, inside start_run's transaction.
        run_ids = [cmd.workflow_run_id]
    else:
        run_ids = [r.id for r in k.persistence.list_runs(status=Status.PENDING, limit=cmd.max_runs)]
    result = RunClaimPendingResult()
    for run_id in run_ids:
        try:
            with k.persistence.transaction():
                claimed = start_run(k, run_id, cmd.worker_id)
        except WorkflowNotFoundError as exc:
            # A run whose workflow is gone can never start: fail it rather than retry forever.
            with k.persistence.transaction():
                fresh = k.require_run(run_id, for_update=True)
                if fresh.status == Status.PENDING:
                    k.fail_run(fresh, str(exc))
            result.failed.append(run_id)
            continue
        except Exception:
            if cmd.workflow_run_id is not None:
                raise
            result.failed.append(run_id)
            continue
        if claimed is not None:
            result.claimed.append(claimed)
    return result
