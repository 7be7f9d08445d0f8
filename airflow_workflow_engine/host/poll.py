"""Waiting for one suspended batch stage: what a ``stage.pollSuspended`` result means.

Shared by ``SuspendedStageTrigger`` (in the triggerer) and ``AsyncBatchStageOperator``'s sync
fallback (``deferrable=False``). :func:`poll_stage` dispatches ``stage.pollSuspended`` for the
stage (the kernel calls its ``check_completion``, enforces ``max_wait`` and commits the answer)
and turns the result into a :class:`PollDecision`: a terminal status, or how long to wait.
The result carries the stage's row when the poll did not finish it
(:class:`~airflow_workflow_engine.kernel.commands.PolledStage`), so nothing here reads rows.
No ``airflow`` import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
from typing import TYPE_CHECKING, Literal, TypedDict

from airflow_workflow_engine.kernel.commands import StagePollSuspended
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.commands import StagePollSuspendedResult
    from airflow_workflow_engine.kernel.kernel import Kernel

__all__ = [
    "MIN_SLEEP_SECONDS",
    "PollDecision",
    "PollEvent",
    "PollStatus",
    "poll_decision",
    "poll_stage",
]

PollStatus = Literal["completed", "requeued", "failed", "timed_out", "cancelled", "error"]

#: Shortest sleep between polls, so a clock mismatch never turns into a busy loop.
MIN_SLEEP_SECONDS = 0.2


class PollEvent(TypedDict):
    """The payload of the trigger's one event."""

    status: PollStatus
    workflow_run_id: str
    stage_id: str
    message: str | None


@dataclass(frozen=True)
class PollDecision:
    """One poll's verdict: a terminal ``status``, or ``None`` and how long to wait."""

    status: PollStatus | None
    message: str | None = None
    wait_seconds: float = 0.0

    def event(self, workflow_run_id: str, stage_id: str) -> PollEvent:
        assert self.status is not None
        return PollEvent(
            status=self.status,
            workflow_run_id=workflow_run_id,
            stage_id=stage_id,
            message=self.message,
        )


_FINISHED_OUTCOMES: dict[str, PollStatus] = {
    "completed": "completed",
    "requeued": "requeued",
    "failed": "failed",
    "timed_out": "timed_out",
}
#: A stage row's status (the kernel's ``Status`` values) when the poll did not finish it.
_BY_STATUS: dict[Status, PollStatus] = {
    Status.COMPLETED: "completed",
    Status.PENDING: "requeued",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
    Status.SKIPPED: "cancelled",
}


def poll_decision(
    result: StagePollSuspendedResult, workflow_run_id: str, stage_id: str, poll_interval: float
) -> PollDecision:
    """What a ``stage.pollSuspended`` of one stage means for whoever waits on it."""
    for outcome in result.outcomes:
        if outcome.stage_id == stage_id and outcome.outcome in _FINISHED_OUTCOMES:
            return PollDecision(_FINISHED_OUTCOMES[outcome.outcome], outcome.error)
    polled = result.stage
    if polled is None or polled.status is None:
        return PollDecision(
            "cancelled", f"stage '{stage_id}' of run {workflow_run_id} no longer exists (rerun?)"
        )
    status = polled.status
    if status in _BY_STATUS:
        return PollDecision(_BY_STATUS[status], polled.error)
    if status is not Status.SUSPENDED:
        return PollDecision("error", f"stage '{stage_id}' is {status}, not SUSPENDED")
    if polled.run_status is None or polled.run_status.is_terminal:
        state = polled.run_status.value if polled.run_status else "gone"
        return PollDecision("cancelled", f"workflow run {workflow_run_id} is {state}")
    now = polled.checked_at
    due = polled.next_poll_at or now
    if due.tzinfo is None:
        due = due.replace(tzinfo=timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    wait = (due - now).total_seconds()
    return PollDecision(None, wait_seconds=min(max(wait, MIN_SLEEP_SECONDS), poll_interval))


def poll_stage(
    kernel: Kernel, workflow_run_id: str, stage_id: str, poll_interval: float
) -> PollDecision:
    """Polls one suspended stage once (when due) and says what happened."""
    result = kernel.dispatch(
        StagePollSuspended(workflow_run_id=workflow_run_id, stage_id=stage_id, max_checks=1)
    )
    return poll_decision(result, workflow_run_id, stage_id, poll_interval)
