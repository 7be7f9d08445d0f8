"""Authoritative cancellation and ghost results."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_workflow_engine.errors import RunNotFoundError
from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    RunCancel,
    RunClaimPending,
    StagePollSuspended,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create
from tests.workflows import CALLS, HOOKS


def test_cancel_during_running_stage_makes_result_a_ghost(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}})

    def cancel_from_inside(ctx: Any) -> None:
        result = kit.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason="user pressed stop"))
        assert result.cancelled
        # The cancel took effect at once, while the body is still running.
        stage = kit.persistence.get_stage(run_id, "flaky")
        assert stage is not None and stage.status == Status.CANCELLED
        ctx.progress(0.9, "almost")

    HOOKS["flaky"] = cancel_from_inside
    kit.kernel.dispatch(RunClaimPending())
    job = kit.job_transport.dequeue()
    assert job is not None
    result = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="flaky", attempt=1))
    assert result.ghost is True
    assert result.retry is False
    assert result.outcome == "cancelled"

    run = kit.persistence.get_run(run_id)
    assert run is not None and run.status == Status.CANCELLED
    assert run.error_message == "cancelled: user pressed stop"
    types = [e.type for e in kit.persistence.list_events(run_id)]
    assert "stage:completed" not in types
    assert "stage:progress" not in types
    assert types[-1] == "workflow:cancelled"
    # The ghost's annotations were dropped with it.
    assert kit.kernel.annotations.list(run_id, key_prefix="attempt.") == []
    # Cancelled jobs are not handed out again.
    assert kit.job_transport.jobs[job.job_id].status == "cancelled"


def test_cancel_is_authoritative_and_cascades(kit: TestKit) -> None:
    run_id = create(kit)
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(RunCancel(workflow_run_id=run_id))
    stages = kit.persistence.list_stages(run_id)
    assert [s.status for s in stages] == [Status.CANCELLED]
    assert kit.job_transport.dequeue() is None
    # A late delivery does not run the body.
    late = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="extract"))
    assert late.ghost is True and CALLS["extract"] == 0
    # Cancelling again is a no-op that reports it.
    again = kit.kernel.dispatch(RunCancel(workflow_run_id=run_id))
    assert again.cancelled is False and again.status == Status.CANCELLED


def test_cancel_pending_run(kit: TestKit) -> None:
    run_id = create(kit)
    result = kit.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason="not needed"))
    assert result.cancelled and result.status == Status.CANCELLED
    assert kit.kernel.dispatch(RunClaimPending()).claimed == []


def test_poll_skips_cancelled_runs_and_calls_on_cancel(persistence: Any) -> None:
    from pydantic import BaseModel

    from airflow_workflow_engine import CompletionCheck, Suspended, WorkflowBuilder
    from airflow_workflow_engine import define_async_batch_stage as dabs
    from airflow_workflow_engine.testing.kit import create_test_kernel

    cancelled: list[dict[str, Any]] = []
    checks: list[int] = []

    class Out(BaseModel):
        n: int

    class In(BaseModel):
        x: int = 1

    st = dabs(
        id="remote",
        output=Out,
        execute=lambda ctx: Suspended(state={"job": "j-1"}, poll_interval=5),
        check_completion=lambda state, ctx: checks.append(1) or CompletionCheck(ready=False),
        on_cancel=lambda state, ctx: cancelled.append(state),
    )
    wf = WorkflowBuilder("remote", "Remote", None, input=In, output=Out).pipe(st).build()
    kit = create_test_kernel([wf], persistence=persistence)
    run_id = kit.kernel.dispatch({"type": "run.create", "workflow_id": "remote"}).workflow_run_id
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="remote"))
    kit.kernel.dispatch(RunCancel(workflow_run_id=run_id))
    assert cancelled == [{"job": "j-1"}]
    kit.clock.advance(10)
    assert kit.kernel.dispatch(StagePollSuspended()).checked == 0
    assert checks == []


def test_cancel_unknown_run(kit: TestKit) -> None:
    with pytest.raises(RunNotFoundError, match="'nope' does not exist"):
        kit.kernel.dispatch(RunCancel(workflow_run_id="nope"))
