"""``job.execute``: run one stage in three phases.

1. RUNNING is committed in a short transaction.
2. The stage body runs outside any transaction (it may take hours, call models, be cancelled).
3. Outcome, buffered annotations, logs, progress and outbox events commit in one transaction;
   if the run was cancelled meanwhile the result is a ghost: discarded, never retried. The
   stage's AI metrics and the run's cost totals are rolled up from the ledger here (the
   ledger's rows were written as the calls happened, not buffered).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.definitions.context import StageBuffer
from airflow_workflow_engine.definitions.stage import Suspended
from airflow_workflow_engine.errors import InvalidTransitionError, WorkflowEngineError
from airflow_workflow_engine.kernel.commands import JobExecute, JobExecuteResult
from airflow_workflow_engine.kernel.handlers.run_claim_pending import start_run
from airflow_workflow_engine.kernel.records import RunRecord, StageRecord
from airflow_workflow_engine.kernel.stage_io import StageOutput, interpret_return
from airflow_workflow_engine.kernel.status import Status, check_stage_transition

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.kernel.kernel import Kernel

_ACTIVE_RUN = {Status.RUNNING, Status.SUSPENDED}


@dataclass
class _Started:
    run: RunRecord
    stage: StageRecord
    attempt: int
    #: The run's stage rows as phase 1 read them (outputs not resolved from the blob store).
    records: list[StageRecord]
    workflow: Workflow
    #: The previous attempt's worker died mid-stage: the answers it recorded may be reused.
    took_over: bool = False


def _result(cmd: JobExecute, outcome: Any, attempt: int, **fields: Any) -> JobExecuteResult:
    return JobExecuteResult(
        workflow_run_id=cmd.workflow_run_id,
        stage_id=cmd.stage_id,
        outcome=outcome,
        attempt=attempt,
        **fields,
    )


def _replay(k: Kernel, cmd: JobExecute, rec: StageRecord) -> JobExecuteResult:
    """A duplicate delivery of a stage that already finished (or is waiting)."""
    if rec.status == Status.COMPLETED:
        return _result(
            cmd,
            "completed",
            rec.attempt,
            output=k.load_output(rec).output,
            replayed=True,
            output_ref=rec.output_ref,
            metrics=rec.metrics,
        )
    return _result(
        cmd,
        "suspended",
        rec.attempt,
        next_poll_at=rec.next_poll_at,
        replayed=True,
        poll_interval=rec.poll_interval,
    )


def _ensure_stage(
    k: Kernel, run: RunRecord, wf: Workflow, stage_id: str, rec: StageRecord | None
) -> StageRecord:
    """The stage row ``rec`` (as read), created if this delivery got here before
    ``run.transition`` (hosts such as Airflow start a group's tasks themselves). Earlier
    groups must be complete."""
    if rec is not None:
        return rec
    number = wf.group_of(stage_id)
    for earlier in range(number):
        for st in wf.group(earlier):
            prev = k.persistence.get_stage(run.id, st.id)
            if prev is None or prev.status not in (Status.COMPLETED, Status.SKIPPED):
                state = prev.status.value if prev else "not started"
                raise InvalidTransitionError(
                    "stage",
                    "absent",
                    Status.RUNNING.value,
                    f"stage '{stage_id}' cannot start: earlier stage '{st.id}' is {state}.",
                )
    k.start_group(run, wf, number)
    created = k.persistence.get_stage(run.id, stage_id)
    assert created is not None
    return created


def _phase1(k: Kernel, cmd: JobExecute) -> _Started | JobExecuteResult:
    with k.persistence.transaction():
        # The run (locked) and all its stages in one read: this stage's row, and the earlier
        # outputs phase 2 builds the stage's input from.
        run, records = k.require_run_with_stages(cmd.workflow_run_id, for_update=True)
        wf = k.workflow(run.workflow_id)
        wf.get_stage(cmd.stage_id)  # StageNotFoundError for an unknown stage
        if run.status == Status.PENDING:
            start_run(k, run, cmd.worker_id or "job.execute")
            run, records = k.require_run_with_stages(run.id)
        rec = next((r for r in records if r.stage_id == cmd.stage_id), None)
        if rec is not None and rec.status in (Status.COMPLETED, Status.SUSPENDED):
            return _replay(k, cmd, rec)
        if run.status not in _ACTIVE_RUN:
            # Cancelled or failed before this delivery started: nothing to run.
            return _result(cmd, "cancelled", rec.attempt if rec else 0, ghost=True)
        rec = _ensure_stage(k, run, wf, cmd.stage_id, rec)
        now = k.now()
        took_over = rec.status == Status.RUNNING
        if took_over:
            # The previous attempt's worker died mid-stage (Airflow retried the task).
            k.persistence.update_stage(
                run.id,
                rec.stage_id,
                status=Status.PENDING,
                error_message=f"attempt {rec.attempt} did not finish (worker lost)",
                updated_at=now,
            )
            rec = rec.model_copy(update={"status": Status.PENDING})
        check_stage_transition(rec.status, Status.RUNNING, f"(stage '{rec.stage_id}')")
        attempt = run.stage_attempts.get(rec.stage_id, 0) + 1
        changes: dict[str, Any] = {
            "stage_attempts": {**run.stage_attempts, rec.stage_id: attempt},
            "updated_at": now,
        }
        if run.status == Status.SUSPENDED:
            run = k.set_run_status_and_emit(
                run, Status.RUNNING, "workflow:resumed", {"stage_id": rec.stage_id}, **changes
            )
            changes = {}
        rec = k.persistence.update_stage(
            run.id,
            rec.stage_id,
            status=Status.RUNNING,
            attempt=attempt,
            started_at=now,
            updated_at=now,
            completed_at=None,
        )
        # The run's new attempt count rides on the event's write to the run row.
        run = k.emit_with_run_changes(
            run, "stage:started", {"stage_id": rec.stage_id, "attempt": attempt}, **changes
        )
        return _Started(run, rec, attempt, records, wf, took_over)


def handle(k: Kernel, cmd: JobExecute) -> JobExecuteResult:
    started = _phase1(k, cmd)
    if isinstance(started, JobExecuteResult):
        return started
    run, rec, attempt, wf = started.run, started.stage, started.attempt, started.workflow
    stage = wf.get_stage(rec.stage_id)

    # Phase 2: no transaction, no lock.
    buffer = StageBuffer()
    outcome: StageOutput | Suspended | None = None
    stored: dict[str, Any] = {}
    error: BaseException | None = None
    try:
        ctx = k.build_context(
            run,
            wf,
            rec.stage_id,
            attempt=attempt,
            resume_state=rec.resume_state,
            execution_id=rec.id,
            # Outputs moved to the blob store are read now, outside the transaction.
            records=started.records,
            # A lost attempt's answers (rows since this execution began) are not paid again.
            execution_created_at=rec.created_at if started.took_over else None,
        )
        buffer = ctx.buffer
        outcome = interpret_return(stage, k.executor.execute(stage, ctx))
        if isinstance(outcome, StageOutput):
            stored = k.store_output(run.id, rec.stage_id, outcome.value)
    except Exception as exc:
        error = exc
        # Before the outcome transaction (the ledger writes on its own connection): the
        # attempt's answered calls stay in the ledger, marked with why the attempt failed.
        k.mark_ai_calls_failed(
            run.id, rec.stage_id, attempt, f"stage attempt {attempt} failed: {_describe(exc)}"
        )

    # Phase 3: one transaction for everything the attempt produced.
    with k.persistence.transaction():
        # The run (locked), its stages and, where one statement can, the AI totals.
        fresh_run, stages, totals = k.require_run_for_outcome(run.id, rec.stage_id)
        fresh = next((s for s in stages if s.stage_id == rec.stage_id), None)
        if (
            fresh_run.status not in _ACTIVE_RUN
            or fresh is None
            or fresh.status != Status.RUNNING
            or fresh.attempt != attempt
        ):
            # A ghost's model calls were still paid for: the run's totals include them.
            k.refresh_run_ai_totals(run.id, fresh_run)
            return _result(cmd, "cancelled", attempt, ghost=True, error=_describe(error))
        k.persist_buffer(run.id, rec.stage_id, buffer, attempt)
        ai = k.refresh_ai_totals(fresh_run, rec.stage_id, totals)
        if error is not None:
            return _fail(k, cmd, fresh, attempt, error, ai=ai)
        if isinstance(outcome, Suspended):
            return _suspend(k, cmd, fresh, attempt, outcome, ai=ai)
        assert outcome is not None
        return _complete(
            k, cmd, fresh, attempt, outcome=outcome, stored=stored, buffer=buffer, ai=ai
        )


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = str(error)
    return text if isinstance(error, WorkflowEngineError) else f"{type(error).__name__}: {text}"


def _complete(
    k: Kernel,
    cmd: JobExecute,
    rec: StageRecord,
    attempt: int,
    *,
    outcome: StageOutput,
    stored: dict[str, Any],
    buffer: StageBuffer,
    ai: dict[str, Any],
) -> JobExecuteResult:
    now = k.now()
    # The ledger's roll-up wins over a stage's own metric of the same name.
    duration = (now - rec.started_at).total_seconds() if rec.started_at else None
    metrics = {**buffer.metrics, **outcome.metrics, **ai, "duration_seconds": duration}
    k.persistence.update_stage(
        rec.workflow_run_id,
        rec.stage_id,
        status=Status.COMPLETED,
        metrics=metrics,
        error_message=None,
        completed_at=now,
        updated_at=now,
        resume_state=None,
        **stored,
    )
    k.emit(
        rec.workflow_run_id,
        "stage:completed",
        {"stage_id": rec.stage_id, "attempt": attempt, "output_ref": stored.get("output_ref")},
    )
    return _result(
        cmd,
        "completed",
        attempt,
        output=outcome.value,
        output_ref=stored.get("output_ref"),
        metrics=metrics,
    )


def _suspend(
    k: Kernel,
    cmd: JobExecute,
    rec: StageRecord,
    attempt: int,
    suspended: Suspended,
    *,
    ai: dict[str, Any],
) -> JobExecuteResult:
    now = k.now()
    next_poll_at = now + timedelta(seconds=suspended.poll_interval)
    max_wait_until = (
        now + timedelta(seconds=suspended.max_wait) if suspended.max_wait is not None else None
    )
    check_stage_transition(rec.status, Status.SUSPENDED)
    k.persistence.update_stage(
        rec.workflow_run_id,
        rec.stage_id,
        status=Status.SUSPENDED,
        suspended_state=suspended.state,
        resume_state=None,
        poll_interval=suspended.poll_interval,
        next_poll_at=next_poll_at,
        max_wait_until=max_wait_until,
        metrics={**rec.metrics, **ai},
        updated_at=now,
    )
    k.emit(
        rec.workflow_run_id,
        "stage:suspended",
        {"stage_id": rec.stage_id, "attempt": attempt, "next_poll_at": next_poll_at.isoformat()},
    )
    k.scheduler.schedule(
        "stage.pollSuspended",
        {"workflow_run_id": rec.workflow_run_id, "stage_id": rec.stage_id},
        next_poll_at,
    )
    return _result(
        cmd, "suspended", attempt, next_poll_at=next_poll_at, poll_interval=suspended.poll_interval
    )


def _fail(
    k: Kernel,
    cmd: JobExecute,
    rec: StageRecord,
    attempt: int,
    error: BaseException,
    *,
    ai: dict[str, Any],
) -> JobExecuteResult:
    now = k.now()
    message = _describe(error) or "failed"
    retryable = getattr(error, "retryable", True)
    delivery = cmd.attempt or attempt
    max_attempts: int = (
        cmd.max_attempts
        or getattr(k.job_transport, "max_attempts", None)
        or k.settings.default_max_attempts
    )
    will_retry = bool(retryable) and delivery < max_attempts
    target = Status.PENDING if will_retry else Status.FAILED
    k.persistence.update_stage(
        rec.workflow_run_id,
        rec.stage_id,
        status=target,
        error_message=message,
        metrics={**rec.metrics, **ai},
        updated_at=now,
        completed_at=None if will_retry else now,
    )
    retry_at = now + timedelta(seconds=2**delivery) if will_retry else None
    k.emit(
        rec.workflow_run_id,
        "stage:failed",
        {"stage_id": rec.stage_id, "attempt": attempt, "error": message, "will_retry": will_retry},
    )
    return _result(cmd, "failed", attempt, error=message, retry=will_retry, retry_at=retry_at)
