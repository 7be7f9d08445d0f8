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
    # Polls at 60..240 s, then the poll at 300 s (max_wait) checks once more and times out.
    assert POLLS[run_id] == 5
    stage = kit.persistence.get_stage(run_id, "batch")
    assert stage is not None and stage.status == Status.FAILED


def test_work_done_exactly_at_max_wait_completes_the_stage(kit: TestKit) -> None:
    # max_wait = 3 poll intervals; the batch is done at the third poll, which is the deadline:
    # that batch finished in time (and was paid for), so the stage completes.
    run_id = create(
        kit,
        workflow_id="batch",
        config={"batch": {"polls_needed": 3, "poll_interval": 60, "max_wait": 180}},
    )
    start = kit.clock.now()
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED, run.error_message
    assert run.output == {"items": [f"b-{run_id[:6]}", "Report"]}
    assert kit.clock.now() - start == timedelta(seconds=180)
    assert POLLS[run_id] == 3
    stage = kit.persistence.get_stage(run_id, "batch")
    assert stage is not None and stage.status == Status.COMPLETED


def test_work_not_done_at_max_wait_times_out_after_one_final_check(kit: TestKit) -> None:
    run_id = create(
        kit,
        workflow_id="batch",
        config={"batch": {"polls_needed": 4, "poll_interval": 60, "max_wait": 180}},
    )
    start = kit.clock.now()
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert kit.clock.now() - start == timedelta(seconds=180)
    assert POLLS[run_id] == 3  # 60 s, 120 s and the final check at the 180 s deadline
    stage = kit.persistence.get_stage(run_id, "batch")
    assert stage is not None and stage.status == Status.FAILED
    assert "timed out" in (stage.error_message or "")
    assert "checked once more at the deadline" in (stage.error_message or "")


def test_last_poll_is_moved_to_the_max_wait_deadline(kit: TestKit) -> None:
    # max_wait is not a multiple of the interval: the check after 120 s is due at 150 s (the
    # deadline), not at 180 s, and it is the final one.
    run_id = create(
        kit,
        workflow_id="batch",
        config={"batch": {"polls_needed": 3, "poll_interval": 60, "max_wait": 150}},
    )
    start = kit.clock.now()
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED, run.error_message
    assert kit.clock.now() - start == timedelta(seconds=150)
    assert POLLS[run_id] == 3


def test_check_completion_error_at_max_wait_times_out(kit: TestKit) -> None:
    from tests.workflows import HOOKS

    def boom(ctx: object) -> None:
        raise ValueError("provider unavailable")

    run_id = create(
        kit,
        workflow_id="batch",
        config={"batch": {"polls_needed": 10, "poll_interval": 60, "max_wait": 120}},
    )
    kit.kernel.dispatch(RunClaimPending())
    kit.job_transport.dequeue()
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="batch"))
    kit.clock.advance(60)
    assert kit.kernel.dispatch(StagePollSuspended()).outcomes[0].outcome == "pending"
    HOOKS["check"] = boom
    kit.clock.advance(60)
    outcome = kit.kernel.dispatch(StagePollSuspended()).outcomes[0]
    assert outcome.outcome == "timed_out"
    assert "provider unavailable" in (outcome.error or "")
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
