"""What the kernel's commands carry for a host (Airflow's operators, triggers and listeners),
so that the host never reads rows itself: an external cancel (with the rejection as its cause,
and stopping a batch another process could not), a conditional rerun (a clear), and the row of
the one stage a trigger polls."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from airflow_workflow_engine.conventions import Actor
from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    RunCancel,
    RunClaimPending,
    RunRerunStages,
    StagePollSuspended,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit, create_test_kernel
from tests.unit.kernel.helpers import create


def test_external_cancel_puts_the_standing_rejection_first(kit: TestKit) -> None:
    run_id = create(kit)
    kit.kernel.annotations.attach(
        run_id,
        actor=Actor(kind="user", id="alice"),
        attributes={"approval.status": "rejected", "approval.approver": "alice"},
        idempotency_key="a",
    )
    result = kit.kernel.dispatch(
        RunCancel(workflow_run_id=run_id, reason="DAG run failed", rejection_first=True)
    )
    assert result.cancelled and result.reason is not None
    assert result.reason.startswith("rejected") and result.reason.endswith("; DAG run failed")
    run = kit.persistence.get_run(run_id)
    assert run is not None and run.error_message == f"cancelled: {result.reason}"
    # A final run is left alone and says so.
    again = kit.kernel.dispatch(RunCancel(workflow_run_id=run_id, rejection_first=True))
    assert not again.cancelled and again.reason is None and again.status == Status.CANCELLED


def test_external_cancel_without_rejection_keeps_the_reason(kit: TestKit) -> None:
    run_id = create(kit)
    result = kit.kernel.dispatch(
        RunCancel(workflow_run_id=run_id, reason="DAG run failed", rejection_first=True)
    )
    assert result.reason == "DAG run failed"


def _remote_kit(persistence: Any) -> tuple[TestKit, list[dict[str, Any]]]:
    from airflow_workflow_engine import CompletionCheck, Suspended, WorkflowBuilder
    from airflow_workflow_engine import define_async_batch_stage as dabs

    cancelled: list[dict[str, Any]] = []

    class Out(BaseModel):
        n: int

    class In(BaseModel):
        x: int = 1

    st = dabs(
        id="remote",
        output=Out,
        execute=lambda ctx: Suspended(state={"job": "j-1"}, poll_interval=5),
        check_completion=lambda state, ctx: CompletionCheck(ready=False),
        on_cancel=lambda state, ctx: cancelled.append(state),
    )
    wf = WorkflowBuilder("remote", "Remote", None, input=In, output=Out).pipe(st).build()
    return create_test_kernel([wf], persistence=persistence), cancelled


def test_cancel_stops_a_batch_that_the_cancelling_process_could_not(persistence: Any) -> None:
    kit, cancelled = _remote_kit(persistence)
    run_id = kit.kernel.dispatch({"type": "run.create", "workflow_id": "remote"}).workflow_run_id
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="remote"))
    # A process that does not know the workflow (Airflow's api-server) cancels the run.
    blind = create_test_kernel([], persistence=persistence)
    first = blind.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason="marked failed"))
    assert first.cancelled
    assert cancelled == []
    # The trigger, which knows it, stops the batch through the same command.
    result = kit.kernel.dispatch(
        RunCancel(workflow_run_id=run_id, reason="again", stop_stage_id="remote")
    )
    assert not result.cancelled and result.stopped_stage_work
    assert cancelled == [{"job": "j-1"}]
    kit.kernel.dispatch(RunCancel(workflow_run_id=run_id, stop_stage_id="remote"))
    assert cancelled == [{"job": "j-1"}]  # on_cancel runs once
    other = kit.kernel.dispatch(RunCancel(workflow_run_id=run_id, stop_stage_id="nope"))
    assert not other.stopped_stage_work


def test_poll_of_one_stage_carries_its_row(persistence: Any) -> None:
    kit, _ = _remote_kit(persistence)
    run_id = kit.kernel.dispatch({"type": "run.create", "workflow_id": "remote"}).workflow_run_id
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="remote"))
    early = kit.kernel.dispatch(
        StagePollSuspended(workflow_run_id=run_id, stage_id="remote", max_checks=1)
    )
    assert early.outcomes == [] and early.stage is not None
    assert early.stage.status == Status.SUSPENDED and early.stage.run_status is not None
    assert early.stage.next_poll_at is not None and early.stage.checked_at == kit.clock.now()
    kit.clock.advance(10)
    pending = kit.kernel.dispatch(
        StagePollSuspended(workflow_run_id=run_id, stage_id="remote", max_checks=1)
    )
    assert [o.outcome for o in pending.outcomes] == ["pending"] and pending.stage is not None
    # Without a named stage the result carries none.
    assert kit.kernel.dispatch(StagePollSuspended()).stage is None
    gone = kit.kernel.dispatch(StagePollSuspended(workflow_run_id=run_id, stage_id="nope"))
    assert gone.stage is not None and gone.stage.status is None


def test_rerun_only_when_the_stage_finished_before_the_clear(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    stage = kit.persistence.get_stage(run_id, "publish")
    assert stage is not None and stage.attempt == 1
    # Finished at attempt 1, and this is attempt 1's series of tries: a duplicate delivery.
    same = kit.kernel.dispatch(
        RunRerunStages(workflow_run_id=run_id, stage_ids=["publish"], if_finished_before_attempt=1)
    )
    assert not same.rerun and same.deleted_stages == []
    assert (same.previous_status, same.previous_attempt) == (Status.COMPLETED, 1)
    # The first try since a clear is 2: the row of attempt 1 is what the clear replaces.
    cleared = kit.kernel.dispatch(
        RunRerunStages(workflow_run_id=run_id, stage_ids=["publish"], if_finished_before_attempt=2)
    )
    assert cleared.rerun and cleared.deleted_stages == ["publish"]
    assert cleared.previous_status == Status.COMPLETED
    # The stage waits to run again (a new PENDING row): not finished, nothing to rerun.
    waiting = kit.kernel.dispatch(
        RunRerunStages(workflow_run_id=run_id, stage_ids=["publish"], if_finished_before_attempt=2)
    )
    assert not waiting.rerun and waiting.previous_status == Status.PENDING


def test_job_execute_result_carries_what_the_task_summary_shows(kit: TestKit) -> None:
    run_id = create(kit)
    kit.kernel.dispatch(RunClaimPending())
    done = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="extract"))
    row = kit.persistence.get_stage(run_id, "extract")
    assert row is not None and done.outcome == "completed"
    assert done.metrics == row.metrics and "duration_seconds" in done.metrics
    assert done.output_ref == row.output_ref and done.output == row.output
    again = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="extract"))
    assert again.replayed and again.metrics == row.metrics and again.output_ref == row.output_ref


def test_a_suspended_result_carries_its_poll_interval(persistence: Any) -> None:
    kit, _ = _remote_kit(persistence)
    run_id = kit.kernel.dispatch({"type": "run.create", "workflow_id": "remote"}).workflow_run_id
    kit.kernel.dispatch(RunClaimPending())
    first = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="remote"))
    assert first.outcome == "suspended" and first.poll_interval == 5
    again = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="remote"))
    assert again.replayed and again.poll_interval == 5
