"""What a ``stage.pollSuspended`` result means for a trigger waiting on one stage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_workflow_engine.host.poll import MIN_SLEEP_SECONDS, poll_decision
from airflow_workflow_engine.kernel.commands import (
    PolledStage,
    PollOutcome,
    StagePollSuspendedResult,
)
from airflow_workflow_engine.kernel.status import Status

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _polled(status: Status | None, **fields: object) -> StagePollSuspendedResult:
    stage = PolledStage.model_validate({"status": status, "checked_at": NOW, **fields})
    return StagePollSuspendedResult(stage=stage)


@pytest.mark.parametrize("outcome", ["completed", "requeued", "failed", "timed_out"])
def test_a_finished_outcome_ends_the_wait(outcome: str) -> None:
    result = StagePollSuspendedResult(
        outcomes=[
            PollOutcome.model_validate(
                {"workflow_run_id": "r", "stage_id": "s", "outcome": outcome, "error": "e"}
            )
        ]
    )
    decision = poll_decision(result, "r", "s", 60)
    assert (decision.status, decision.message) == (outcome, "e")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.COMPLETED, "completed"),  # finished by another triggerer
        (Status.PENDING, "requeued"),
        (Status.FAILED, "failed"),
        (Status.CANCELLED, "cancelled"),
        (Status.SKIPPED, "cancelled"),
        (Status.RUNNING, "error"),
        (None, "cancelled"),  # the row is gone: rerun
    ],
)
def test_the_row_decides_when_the_poll_did_not(status: Status | None, expected: str) -> None:
    assert poll_decision(_polled(status), "r", "s", 60).status == expected


def test_a_suspended_stage_of_a_finished_run_is_cancelled() -> None:
    decision = poll_decision(_polled(Status.SUSPENDED, run_status=Status.CANCELLED), "r", "s", 60)
    assert decision.status == "cancelled" and "is CANCELLED" in (decision.message or "")


def test_wait_until_due_within_bounds() -> None:
    due = NOW + timedelta(seconds=30)
    result = _polled(Status.SUSPENDED, run_status=Status.SUSPENDED, next_poll_at=due)
    assert poll_decision(result, "r", "s", 60).wait_seconds == 30
    assert poll_decision(result, "r", "s", 10).wait_seconds == 10
    overdue = _polled(Status.SUSPENDED, run_status=Status.RUNNING, next_poll_at=NOW)
    assert poll_decision(overdue, "r", "s", 10).wait_seconds == MIN_SLEEP_SECONDS
