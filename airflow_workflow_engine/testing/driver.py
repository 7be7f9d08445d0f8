"""``run_to_completion``: drive runs by dispatching commands, as a host would."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    RunClaimPending,
    RunTransition,
    StagePollSuspended,
)
from airflow_workflow_engine.kernel.records import RunRecord
from airflow_workflow_engine.testing.clock import FakeClock

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.testing.adapters import InMemoryJobTransport

__all__ = ["DriverError", "run_to_completion", "step"]


class DriverError(WorkflowEngineError):
    """The run cannot make progress (nothing scheduled) or took too many steps."""


def step(kernel: Kernel, job_transport: InMemoryJobTransport, worker_id: str = "driver") -> bool:
    """One unit of host work: claim, execute one due job, or poll suspended stages.
    Returns whether anything happened."""
    kernel.dispatch(RunClaimPending(worker_id=worker_id, max_runs=100))
    job = job_transport.dequeue(worker_id)
    if job is not None:
        result = kernel.dispatch(
            JobExecute(
                workflow_run_id=job.workflow_run_id,
                workflow_id=job.workflow_id,
                stage_id=job.stage_id,
                job_id=job.job_id,
                attempt=job.attempt,
                max_attempts=job.max_attempts,
                worker_id=worker_id,
            )
        )
        if result.ghost or result.outcome == "completed":
            job_transport.complete(job.job_id)
        elif result.outcome == "suspended":
            job_transport.suspend(job.job_id, result.next_poll_at)
        else:
            job_transport.fail(job.job_id, result.error or "failed", result.retry_at)
        kernel.dispatch(RunTransition(workflow_run_id=job.workflow_run_id))
        return True
    poll = kernel.dispatch(StagePollSuspended(max_checks=100))
    for run_id in poll.resumed_run_ids:
        kernel.dispatch(RunTransition(workflow_run_id=run_id))
    return bool(poll.resumed_run_ids)


def run_to_completion(
    kernel: Kernel,
    job_transport: InMemoryJobTransport,
    workflow_run_id: str,
    clock: FakeClock | None = None,
    max_steps: int = 10_000,
) -> RunRecord:
    """Drives every queued job until ``workflow_run_id`` is terminal; returns its record.

    When nothing is due, the clock (a :class:`FakeClock`, the kernel's by default) jumps to
    the earliest retry or poll time.
    """
    clock = clock or (kernel.clock if isinstance(kernel.clock, FakeClock) else None)
    for _ in range(max_steps):
        run = kernel.require_run(workflow_run_id)
        if run.status.is_terminal:
            return run
        if step(kernel, job_transport):
            continue
        candidates = [
            t
            for t in (
                job_transport.next_available_at(),
                kernel.persistence.earliest_suspended_poll_at(),
            )
            if t is not None
        ]
        if not candidates:
            raise DriverError(
                f"Run {workflow_run_id} is {run.status.value} but nothing is scheduled: "
                "no queued job and no suspended stage."
            )
        if clock is None:
            raise DriverError("Nothing is due yet; pass a FakeClock to advance time.")
        clock.set(max(min(candidates), clock.now()))
    raise DriverError(f"Run {workflow_run_id} did not finish within {max_steps} steps.")
