"""``lease.reapStale`` and ``run.reapStuck``."""

from __future__ import annotations

from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    LeaseReapStale,
    RunClaimPending,
    RunReapStuck,
    RunTransition,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create


def test_stale_leases_are_released(kit: TestKit) -> None:
    create(kit)
    kit.kernel.dispatch(RunClaimPending())
    job = kit.job_transport.dequeue("lost-worker")
    assert job is not None and kit.job_transport.dequeue() is None
    assert kit.kernel.dispatch(LeaseReapStale(stale_threshold_seconds=60)).released == 0
    kit.clock.advance(61)
    assert kit.kernel.dispatch(LeaseReapStale(stale_threshold_seconds=60)).released == 1
    again = kit.job_transport.dequeue("new-worker")
    assert again is not None and again.job_id == job.job_id


def test_stuck_run_is_reaped_with_a_specific_error(kit: TestKit) -> None:
    run_id = create(kit)
    kit.kernel.dispatch(RunClaimPending())
    kit.persistence.update_stage(run_id, "extract", status=Status.RUNNING)
    assert kit.kernel.dispatch(RunReapStuck(stuck_threshold_seconds=600)).reaped == []
    kit.clock.advance(601)
    result = kit.kernel.dispatch(RunReapStuck(stuck_threshold_seconds=600))
    assert result.reaped == [run_id]
    run = kit.persistence.get_run(run_id)
    assert run is not None and run.status == Status.FAILED
    assert "Stage 'extract' has been RUNNING with no activity for 601s" in (run.error_message or "")
    assert kit.persistence.get_stage(run_id, "extract").status == Status.CANCELLED  # type: ignore[union-attr]


def test_suspended_run_is_never_reaped(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="batch", config={"batch": {"max_wait": None}})
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="batch"))
    # The run stays RUNNING (no transition yet) with a legitimately suspended stage.
    kit.clock.advance(10 * 86400)
    assert kit.kernel.dispatch(RunReapStuck(stuck_threshold_seconds=60)).reaped == []
    kit.kernel.dispatch(RunTransition(workflow_run_id=run_id))
    assert kit.persistence.get_run(run_id).status == Status.SUSPENDED  # type: ignore[union-attr]


def test_one_bad_run_does_not_block_others(kit: TestKit) -> None:
    good = create(kit)
    bad = create(kit)
    kit.kernel.dispatch(RunClaimPending())
    # Corrupt one run: its workflow vanished from the registry.
    kit.persistence.update_run(bad, workflow_id="gone")
    kit.clock.advance(3601)
    result = kit.kernel.dispatch(RunReapStuck(stuck_threshold_seconds=3600))
    assert good in result.reaped


def test_claim_fails_runs_whose_workflow_is_gone_and_continues(kit: TestKit) -> None:
    bad = create(kit)
    good = create(kit)
    kit.persistence.update_run(bad, workflow_id="gone")
    result = kit.kernel.dispatch(RunClaimPending())
    assert [c.workflow_run_id for c in result.claimed] == [good]
    assert result.failed == [bad]
    run = kit.persistence.get_run(bad)
    assert run is not None and run.status == Status.FAILED
    assert "'gone' is not in the registry" in (run.error_message or "")
