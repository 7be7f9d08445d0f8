"""``stage.pollSuspended``: ask due suspended stages whether their external work is done.

``check_completion`` runs outside any transaction (it talks to a provider); each stage's
outcome commits in its own short transaction, so one slow or broken stage blocks no other.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.definitions.stage import CompletionCheck
from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.kernel.commands import (
    PolledStage,
    PollOutcome,
    StagePollSuspended,
    StagePollSuspendedResult,
)
from airflow_workflow_engine.kernel.ports import JobRequest
from airflow_workflow_engine.kernel.records import StageRecord
from airflow_workflow_engine.kernel.stage_io import validate_output
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.context import StageBuffer
    from airflow_workflow_engine.kernel.kernel import Kernel

logger = logging.getLogger(__name__)


def handle(k: Kernel, cmd: StagePollSuspended) -> StagePollSuspendedResult:
    due = k.persistence.list_due_suspended_stages(
        k.now(),
        limit=cmd.max_checks,
        workflow_run_id=cmd.workflow_run_id,
        stage_id=cmd.stage_id,
    )
    result = StagePollSuspendedResult()
    for rec in due:
        outcome = k.run_isolated(
            f"polling stage {rec.stage_id} of run {rec.workflow_run_id}",
            partial(poll_one, k, rec),
        )
        if outcome is not None:
            result.outcomes.append(outcome)
    if cmd.workflow_run_id is not None and cmd.stage_id is not None:
        finished = {"completed", "requeued", "failed", "timed_out"}
        if not any(o.stage_id == cmd.stage_id and o.outcome in finished for o in result.outcomes):
            stage = _polled_stage(k, cmd.workflow_run_id, cmd.stage_id)
            return StagePollSuspendedResult(outcomes=result.outcomes, stage=stage)
    return result


def _polled_stage(k: Kernel, run_id: str, stage_id: str) -> PolledStage:
    """The named stage's row after the poll, for a host that waits on that one stage."""
    rec = k.persistence.get_stage(run_id, stage_id)
    if rec is None:
        return PolledStage(status=None, checked_at=k.now())
    run = k.persistence.get_run(run_id) if rec.status == Status.SUSPENDED else None
    return PolledStage(
        status=rec.status,
        error=rec.error_message,
        next_poll_at=rec.next_poll_at,
        run_status=run.status if run is not None else None,
        checked_at=k.now(),
    )


def _outcome(rec: StageRecord, outcome: Any, **fields: Any) -> PollOutcome:
    return PollOutcome(
        workflow_run_id=rec.workflow_run_id, stage_id=rec.stage_id, outcome=outcome, **fields
    )


def poll_one(k: Kernel, rec: StageRecord) -> PollOutcome:
    run = k.require_run(rec.workflow_run_id)
    if run.status not in (Status.RUNNING, Status.SUSPENDED):
        return _outcome(rec, "skipped")
    wf = k.workflow(run.workflow_id)
    stage = wf.get_stage(rec.stage_id)
    # At (or past) max_wait, check once more: work that finished in time, and was paid for,
    # completes the stage; only work still not done times out.
    final = rec.max_wait_until is not None and k.now() >= rec.max_wait_until
    state = rec.suspended_state or {}
    try:
        ctx = k.build_context(
            run, wf, rec.stage_id, attempt=rec.attempt, resume_state=None, execution_id=rec.id
        )
        raw = k.executor.check_completion(stage, state, ctx)
        check = raw if isinstance(raw, CompletionCheck) else CompletionCheck.model_validate(raw)
    except WorkflowEngineError as exc:
        if exc.retryable and not final:
            return _reschedule(k, rec, f"check_completion failed: {exc}")
        if exc.retryable:
            return _commit(k, rec, "timed_out", error=_timed_out(k, rec, f"{exc}"))
        return _commit(k, rec, "failed", error=str(exc))
    except Exception as exc:
        # A provider hiccup: keep waiting (max_wait still bounds the stage).
        detail = f"check_completion failed: {type(exc).__name__}: {exc}"
        if final:
            return _commit(k, rec, "timed_out", error=_timed_out(k, rec, detail))
        return _reschedule(k, rec, detail)
    if check.error is not None:
        return _commit(k, rec, "failed", error=check.error, buffer=ctx.buffer)
    if not check.ready:
        if final:
            return _commit(k, rec, "timed_out", error=_timed_out(k, rec), buffer=ctx.buffer)
        delay = check.next_check_in if check.next_check_in is not None else rec.poll_interval
        return _commit(k, rec, "pending", buffer=ctx.buffer, delay=delay)
    if check.output is None:
        return _commit(k, rec, "requeued", buffer=ctx.buffer)
    try:
        value = validate_output(stage, check.output)
    except WorkflowEngineError as exc:
        return _commit(k, rec, "failed", error=str(exc), buffer=ctx.buffer)
    stored = k.store_output(rec.workflow_run_id, rec.stage_id, value)
    return _commit(k, rec, "completed", buffer=ctx.buffer, stored=stored)


def _timed_out(k: Kernel, rec: StageRecord, detail: str | None = None) -> str:
    waited = (k.now() - rec.started_at).total_seconds() if rec.started_at else None
    after = f" (waited {waited:.0f}s)" if waited is not None else ""
    last = f"; the last check failed: {detail}" if detail else ""
    return (
        f"Stage '{rec.stage_id}' timed out: still not complete at max_wait{after}, "
        f"checked once more at the deadline{last}."
    )


def _next_poll_at(k: Kernel, rec: StageRecord, delay: float) -> datetime:
    """``now + delay``, but never after ``max_wait_until``: the last check is at the deadline."""
    at = k.now() + timedelta(seconds=delay)
    return at if rec.max_wait_until is None else min(at, rec.max_wait_until)


def _reschedule(k: Kernel, rec: StageRecord, error: str) -> PollOutcome:
    logger.warning("stage %s of run %s: %s", rec.stage_id, rec.workflow_run_id, error)
    with k.persistence.transaction():
        fresh = k.persistence.get_stage(rec.workflow_run_id, rec.stage_id)
        if fresh is None or fresh.status != Status.SUSPENDED:
            return _outcome(rec, "skipped")
        next_poll_at = _next_poll_at(k, rec, rec.poll_interval or 60.0)
        k.persistence.update_stage(
            rec.workflow_run_id, rec.stage_id, next_poll_at=next_poll_at, updated_at=k.now()
        )
    return _outcome(rec, "error", error=error, next_poll_at=next_poll_at)


def _commit(
    k: Kernel,
    rec: StageRecord,
    outcome: str,
    *,
    error: str | None = None,
    buffer: StageBuffer | None = None,
    delay: float | None = None,
    stored: dict[str, Any] | None = None,
) -> PollOutcome:
    run_id, sid = rec.workflow_run_id, rec.stage_id
    if outcome in ("failed", "timed_out"):
        # Outside the transaction (the ledger writes on its own connection): the batch results
        # already read stay in the ledger, marked with why the attempt failed.
        k.mark_ai_calls_failed(
            run_id, sid, rec.attempt, f"stage attempt {rec.attempt} {outcome}: {error}"
        )
    now = k.now()
    with k.persistence.transaction():
        run = k.require_run(run_id, for_update=True)
        fresh = k.persistence.get_stage(run_id, sid)
        if run.status not in (Status.RUNNING, Status.SUSPENDED) or (
            fresh is None or fresh.status != Status.SUSPENDED
        ):
            return _outcome(rec, "skipped")  # cancelled meanwhile: the answer is a ghost
        if buffer is not None:
            k.persist_buffer(run_id, sid, buffer, rec.attempt)
        if outcome == "pending":
            next_poll_at = _next_poll_at(k, rec, delay or 60.0)
            k.persistence.update_stage(run_id, sid, next_poll_at=next_poll_at, updated_at=now)
            return _outcome(rec, "pending", next_poll_at=next_poll_at)
        # Batch results are priced into the ledger as they are read: roll them up now.
        ai = k.refresh_ai_totals(run, sid)
        if outcome in ("failed", "timed_out"):
            k.persistence.update_stage(
                run_id,
                sid,
                status=Status.FAILED,
                metrics={**rec.metrics, **ai},
                error_message=error,
                next_poll_at=None,
                completed_at=now,
                updated_at=now,
            )
            k.emit(
                run_id,
                "stage:failed",
                {"stage_id": sid, "attempt": rec.attempt, "error": error, "will_retry": False},
            )
            return _outcome(rec, outcome, error=error)
        if run.status == Status.SUSPENDED:
            k.set_run_status(run, Status.RUNNING)
            k.emit(run_id, "workflow:resumed", {"stage_id": sid})
        k.emit(run_id, "stage:resumed", {"stage_id": sid, "attempt": rec.attempt})
        if outcome == "requeued":
            # Ready without output: execute runs again with ctx.resume_state set.
            k.persistence.update_stage(
                run_id,
                sid,
                status=Status.PENDING,
                resume_state=rec.suspended_state,
                metrics={**rec.metrics, **ai},
                next_poll_at=None,
                updated_at=now,
            )
            k.job_transport.enqueue(
                JobRequest(
                    workflow_run_id=run_id,
                    workflow_id=run.workflow_id,
                    stage_id=sid,
                    priority=run.priority,
                )
            )
            return _outcome(rec, "requeued")
        duration = (now - rec.started_at).total_seconds() if rec.started_at else None
        k.persistence.update_stage(
            run_id,
            sid,
            status=Status.COMPLETED,
            next_poll_at=None,
            completed_at=now,
            updated_at=now,
            metrics={**rec.metrics, **ai, "duration_seconds": duration},
            **(stored or {}),
        )
        k.emit(
            run_id,
            "stage:completed",
            {
                "stage_id": sid,
                "attempt": rec.attempt,
                "output_ref": (stored or {}).get("output_ref"),
            },
        )
        return _outcome(rec, "completed")
