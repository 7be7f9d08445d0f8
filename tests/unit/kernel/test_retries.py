"""Retries: user errors retry with backoff; engine validation and NonRetryable errors do not."""

from __future__ import annotations

from datetime import timedelta

from airflow_workflow_engine.kernel.commands import JobExecute, RunClaimPending
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create
from tests.workflows import CALLS


def test_transient_errors_retry_with_exponential_backoff(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 2}})
    start = kit.clock.now()
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert CALLS["flaky"] == 3
    # Backoff 2**1 + 2**2 seconds on the kernel clock.
    assert kit.clock.now() - start == timedelta(seconds=6)
    failed = [e for e in kit.persistence.list_events(run_id) if e.type == "stage:failed"]
    assert [e.payload["will_retry"] for e in failed] == [True, True]
    assert "RuntimeError: transient failure #1" in failed[0].payload["error"]


def test_retries_exhausted_fail_the_run_with_the_stage_error(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 10}})
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert CALLS["flaky"] == 3
    assert run.error_message == "Stage 'flaky' failed: RuntimeError: transient failure #3"


def test_non_retryable_error_is_not_retried(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"non_retryable": True}})
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED and CALLS["flaky"] == 1
    assert run.error_message == "Stage 'flaky' failed: bad document: cannot be processed"


def test_output_validation_error_is_not_retried_and_names_field(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="wrong-output")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED and CALLS["wrong"] == 1
    assert "Invalid output of stage 'wrong'" in (run.error_message or "")
    assert "ok: Input should be a valid boolean" in (run.error_message or "")
    stage = kit.persistence.get_stage(run_id, "wrong")
    assert stage is not None and stage.status == Status.FAILED and stage.output is None


def test_missing_earlier_output_fails_loudly(kit: TestKit) -> None:
    run_id = create(kit)
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="extract"))
    # Simulate a lost output: the earlier row says COMPLETED but its output is gone.
    kit.persistence.update_stage(run_id, "extract", output=None)
    result = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="summarize"))
    assert result.outcome == "failed" and result.retry is False
    assert "requires the output of stage 'extract'" in (result.error or "")
    assert CALLS["summarize"] == 0


def test_airflow_style_attempts_map_to_try_numbers(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 1}})
    first = kit.kernel.dispatch(
        JobExecute(workflow_run_id=run_id, stage_id="flaky", attempt=1, max_attempts=1)
    )
    assert first.outcome == "failed" and first.retry is False
    stage = kit.persistence.get_stage(run_id, "flaky")
    assert stage is not None and stage.status == Status.FAILED


def test_worker_lost_mid_stage_is_taken_over(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}})
    kit.kernel.dispatch(RunClaimPending())
    # A first attempt marked RUNNING, then its worker died (no outcome was committed).
    kit.persistence.update_stage(run_id, "flaky", status=Status.RUNNING, attempt=1)
    kit.persistence.update_run(run_id, stage_attempts={"flaky": 1})
    result = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="flaky", attempt=2))
    assert result.outcome == "completed" and result.attempt == 2
