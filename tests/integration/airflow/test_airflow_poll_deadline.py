"""The wait loop the trigger and the sync fallback share (``poll_stage``) at the ``max_wait``
deadline, on a FakeClock (issue 9, item 9): work done exactly at the deadline completes; work
still not done times out after one final check."""

from __future__ import annotations

from datetime import timedelta

from tests.integration.airflow.fixtures import AIRFLOW_MARKS

pytestmark = AIRFLOW_MARKS


def _wait(polls_needed: int) -> tuple[str, str | None, float, int]:
    """Submits the batch stage, then polls like ``AsyncBatchStageOperator(deferrable=False)``
    does, sleeping on the fake clock; returns the status, message, seconds waited and polls."""
    from airflow_workflow_engine.host.poll import poll_stage
    from airflow_workflow_engine.kernel.commands import JobExecute, RunClaimPending, RunCreate
    from airflow_workflow_engine.testing.kit import create_test_kernel
    from tests.workflows import BATCH_WORKFLOW, DOC_INPUT, POLLS

    kit = create_test_kernel([BATCH_WORKFLOW])
    config = {"batch": {"polls_needed": polls_needed, "poll_interval": 60, "max_wait": 180}}
    run_id = kit.kernel.dispatch(
        RunCreate(workflow_id="batch", input=DOC_INPUT, config=config)
    ).workflow_run_id
    kit.kernel.dispatch(RunClaimPending())
    result = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="batch"))
    assert result.outcome == "suspended"
    start = kit.clock.now()
    for _ in range(100):
        decision = poll_stage(kit.kernel, run_id, "batch", 60.0)
        if decision.status is not None:
            waited = (kit.clock.now() - start) / timedelta(seconds=1)
            return decision.status, decision.message, waited, POLLS[run_id]
        kit.clock.advance(decision.wait_seconds)
    raise AssertionError("the wait did not end")


def test_work_done_at_the_deadline_completes() -> None:
    status, message, waited, polls = _wait(polls_needed=3)
    assert (status, waited, polls) == ("completed", 180.0, 3), message


def test_work_not_done_at_the_deadline_times_out_after_a_final_check() -> None:
    status, message, waited, polls = _wait(polls_needed=4)
    assert (status, waited, polls) == ("timed_out", 180.0, 3)
    assert "checked once more at the deadline" in (message or "")
