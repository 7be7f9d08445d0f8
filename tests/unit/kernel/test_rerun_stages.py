"""``run.rerunStages``: the chosen finished stages run again, the others keep their outputs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_workflow_engine.errors import StageNotFoundError
from airflow_workflow_engine.kernel.commands import RunClaimPending, RunRerunStages
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create
from tests.workflows import CALLS


def test_rerun_one_parallel_stage_keeps_its_sibling(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    kit.blob_store.put(f"runs/{run_id}/stages/summarize/old.txt", b"old")
    kit.blob_store.put(f"runs/{run_id}/stages/classify/keep.txt", b"keep")
    before = {s.stage_id: s for s in kit.persistence.list_stages(run_id)}

    result = kit.kernel.dispatch(
        RunRerunStages(
            workflow_run_id=run_id,
            stage_ids=["publish", "summarize", "combine"],
            reason="cleared in Airflow",
        )
    )
    # Ordered by group; the run is RUNNING again with its output cleared.
    assert result.deleted_stages == ["summarize", "combine", "publish"]
    assert result.deleted_blobs == 1 and result.status == Status.RUNNING
    assert not kit.blob_store.has(f"runs/{run_id}/stages/summarize/old.txt")
    assert kit.blob_store.has(f"runs/{run_id}/stages/classify/keep.txt")
    run = kit.persistence.get_run(run_id)
    assert run is not None and run.status == Status.RUNNING and run.output is None
    # The first affected group is open again: summarize has a fresh PENDING row.
    pending = kit.persistence.get_stage(run_id, "summarize")
    assert pending is not None and pending.status == Status.PENDING
    assert kit.persistence.get_stage(run_id, "combine") is None

    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert CALLS["extract"] == 1 and CALLS["classify"] == 1
    assert CALLS["summarize"] == 2 and CALLS["combine"] == 2 and CALLS["publish"] == 2
    after = {s.stage_id: s for s in kit.persistence.list_stages(run_id)}
    assert after["classify"].id == before["classify"].id
    assert after["summarize"].id != before["summarize"].id
    started = [e for e in kit.persistence.list_events(run_id) if e.type == "workflow:started"]
    assert started[-1].payload == {
        "rerun_stages": ["summarize", "combine", "publish"],
        "reason": "cleared in Airflow",
    }


def test_rerun_failed_stage_of_a_failed_run(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"non_retryable": True}})
    failed = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert failed.status == Status.FAILED and failed.error_message
    result = kit.kernel.dispatch(RunRerunStages(workflow_run_id=run_id, stage_ids=["flaky"]))
    assert result.deleted_stages == ["flaky"]
    run = kit.persistence.get_run(run_id)
    assert run is not None and run.status == Status.RUNNING
    assert run.error_message is None and run.completed_at is None


def test_unfinished_stages_are_left_alone(kit: TestKit) -> None:
    run_id = create(kit)
    kit.kernel.dispatch(RunClaimPending())
    first = kit.persistence.get_stage(run_id, "extract")
    assert first is not None and first.status == Status.PENDING
    result = kit.kernel.dispatch(
        RunRerunStages(workflow_run_id=run_id, stage_ids=["extract", "publish"])
    )
    # A pending stage and a stage that never started are not dropped: nothing changes.
    assert result.deleted_stages == [] and result.status == Status.RUNNING
    again = kit.persistence.get_stage(run_id, "extract")
    assert again is not None and again.id == first.id
    assert not [e for e in kit.persistence.list_events(run_id) if "rerun_stages" in e.payload]


def test_later_group_waits_for_earlier_groups(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    kit.kernel.dispatch(RunRerunStages(workflow_run_id=run_id, stage_ids=["extract", "publish"]))
    # Only the first group is reopened; publish's row comes back when its group starts.
    assert kit.persistence.get_stage(run_id, "publish") is None
    extract = kit.persistence.get_stage(run_id, "extract")
    assert extract is not None and extract.status == Status.PENDING
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert CALLS["extract"] == 2 and CALLS["publish"] == 2 and CALLS["combine"] == 1


def test_unknown_stage_is_named_and_nothing_changes(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    with pytest.raises(StageNotFoundError) as err:
        kit.kernel.dispatch(
            RunRerunStages(workflow_run_id=run_id, stage_ids=["summarize", "translate"])
        )
    assert "Stage 'translate' is not part of workflow 'doc'" in str(err.value)
    run = kit.persistence.get_run(run_id)
    assert run is not None and run.status == Status.COMPLETED
    assert len(kit.persistence.list_stages(run_id)) == 5


def test_needs_at_least_one_stage() -> None:
    with pytest.raises(ValidationError, match="stage_ids"):
        RunRerunStages(workflow_run_id="r", stage_ids=[])


def test_dispatch_from_a_dict(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    result = kit.kernel.dispatch(
        {"type": "run.rerunStages", "workflow_run_id": run_id, "stage_ids": ["publish"]}
    )
    assert result.deleted_stages == ["publish"]
