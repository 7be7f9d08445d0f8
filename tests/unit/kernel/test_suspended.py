"""Async-batch stages: suspend, poll, complete, re-execute with resume_state, time out."""

from __future__ import annotations

from datetime import timedelta

from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    RunClaimPending,
    RunTransition,
    StagePollSuspended,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create
from tests.workflows import CALLS, POLLS


def test_suspended_stage_completes_after_n_polls(kit: TestKit) -> None:
    start = kit.clock.now()
    run_id = create(kit, workflow_id="batch", config={"batch": {"polls_needed": 4}})
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert run.output == {"items": [f"b-{run_id[:6]}", "Report"]}
    assert POLLS[run_id] == 4
    assert CALLS["batch"] == 1  # execute ran once; the output came from check_completion
    # Four polls at the 30 s interval on the fake clock.
    assert kit.clock.now() - start == timedelta(seconds=120)
    types = [e.type for e in kit.persistence.list_events(run_id)]
    assert types.count("stage:suspended") == 1
    assert "workflow:suspended" in types and "workflow:resumed" in types
    assert types[-2:] == ["stage:completed", "workflow:completed"]


def test_poll_before_due_does_nothing(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="batch")
    kit.kernel.dispatch(RunClaimPending())
    job = kit.job_transport.dequeue()
    assert job is not None
    result = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="batch"))
    assert result.outcome == "suspended"
    assert result.next_poll_at == kit.clock.now() + timedelta(seconds=30)
    kit.kernel.dispatch(RunTransition(workflow_run_id=run_id))
    assert kit.persistence.get_run(run_id).status == Status.SUSPENDED  # type: ignore[union-attr]
    assert kit.kernel.dispatch(StagePollSuspended()).checked == 0
    assert kit.scheduler.scheduled[-1].command_type == "stage.pollSuspended"
    kit.clock.advance(30)
    poll = kit.kernel.dispatch(StagePollSuspended())
    assert [o.outcome for o in poll.outcomes] == ["pending"]


def test_duplicate_delivery_of_suspended_stage_is_not_resubmitted(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="batch")
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="batch"))
    again = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="batch"))
    assert again.outcome == "suspended" and again.replayed is True
    assert CALLS["batch"] == 1


def test_ready_without_output_reruns_execute_with_resume_state(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="batch", config={"batch": {"polls_needed": 2, "resume": True}})
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert run.output == {"items": [f"resumed:b-{run_id[:6]}"]}
    assert CALLS["batch"] == 2
    stage = kit.persistence.get_stage(run_id, "batch")
    assert stage is not None and stage.attempt == 2 and stage.resume_state is None


def test_suspended_stage_times_out_at_max_wait(kit: TestKit) -> None:
    run_id = create(
        kit,
        workflow_id="batch",
        config={"batch": {"polls_needed": 1000, "poll_interval": 60, "max_wait": 300}},
    )
    start = kit.clock.now()
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert "Stage 'batch' failed" in (run.error_message or "")
    assert "timed out" in (run.error_message or "")
    assert kit.clock.now() - start == timedelta(seconds=300)
    # Polls at 60..240 s; the poll at 300 s is at max_wait and fails without calling the stage.
    assert POLLS[run_id] == 4
    stage = kit.persistence.get_stage(run_id, "batch")
    assert stage is not None and stage.status == Status.FAILED


def test_check_completion_error_fails_stage_without_retry(kit: TestKit) -> None:
    from tests.workflows import HOOKS

    def boom(ctx: object) -> None:
        raise ValueError("provider says: batch expired")

    HOOKS["check"] = boom
    run_id = create(kit, workflow_id="batch", config={"batch": {"polls_needed": 2}})
    kit.kernel.dispatch(RunClaimPending())
    kit.job_transport.dequeue()
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="batch"))
    kit.clock.advance(30)
    poll = kit.kernel.dispatch(StagePollSuspended())
    # An exception is a hiccup: the stage keeps waiting, bounded by max_wait.
    assert poll.outcomes[0].outcome == "error"
    assert "batch expired" in (poll.outcomes[0].error or "")
    HOOKS.clear()
    kit.clock.advance(30)
    poll = kit.kernel.dispatch(StagePollSuspended())
    assert poll.outcomes[0].outcome == "completed"
