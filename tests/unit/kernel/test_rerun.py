"""``run.rerunFrom``: keep earlier groups, drop the rest (rows and blobs), run again."""

from __future__ import annotations

import pytest

from airflow_workflow_engine.errors import InvalidTransitionError, StageNotFoundError
from airflow_workflow_engine.kernel.commands import RunClaimPending, RunRerunFrom
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create
from tests.workflows import CALLS, HOOKS


def test_rerun_from_middle_group(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    kit.blob_store.put(f"runs/{run_id}/stages/combine/draft.txt", b"old")
    kit.blob_store.put(f"runs/{run_id}/stages/extract/keep.txt", b"keep")
    before = {s.stage_id: s for s in kit.persistence.list_stages(run_id)}

    seen: dict[str, object] = {}
    HOOKS["combine"] = lambda ctx: seen.update(parallel=ctx.input, attempt=ctx.attempt)
    result = kit.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="combine"))
    assert result.from_group == 2
    assert result.deleted_stages == ["combine", "publish"]
    assert result.deleted_blobs == 1
    assert not kit.blob_store.has(f"runs/{run_id}/stages/combine/draft.txt")
    assert kit.blob_store.has(f"runs/{run_id}/stages/extract/keep.txt")
    running = kit.persistence.get_run(run_id)
    assert running is not None and running.status == Status.RUNNING and running.output is None

    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert CALLS["extract"] == 1 and CALLS["summarize"] == 1 and CALLS["classify"] == 1
    assert CALLS["combine"] == 2 and CALLS["publish"] == 2
    # The rerun stage's input is the previous group's persisted output.
    parallel = seen["parallel"]
    assert parallel.summarize.summary == before["summarize"].output["summary"]  # type: ignore[attr-defined,index]
    # Attempts keep counting across reruns.
    assert seen["attempt"] == 2
    after = {s.stage_id: s for s in kit.persistence.list_stages(run_id)}
    assert after["extract"].id == before["extract"].id
    assert after["combine"].id != before["combine"].id and after["combine"].attempt == 2
    started = [e for e in kit.persistence.list_events(run_id) if e.type == "workflow:started"]
    assert started[-1].payload["rerun_from"] == "combine"


def test_rerun_from_first_stage_uses_run_input(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    kit.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="extract"))
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED and CALLS["extract"] == 2


def test_rerun_failed_run_after_fix(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"non_retryable": True}})
    assert run_to_completion(kit.kernel, kit.job_transport, run_id).status == Status.FAILED
    kit.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="flaky"))
    run = kit.persistence.get_run(run_id)
    assert run is not None and run.status == Status.RUNNING and run.error_message is None


def test_rerun_unknown_stage(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    with pytest.raises(StageNotFoundError) as err:
        kit.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="translate"))
    assert "Stage 'translate' is not part of workflow 'doc'" in str(err.value)
    assert "extract, summarize, classify, combine, publish" in str(err.value)


@pytest.mark.parametrize("claim", [False, True])
def test_rerun_needs_a_finished_run(kit: TestKit, claim: bool) -> None:
    run_id = create(kit)
    if claim:
        kit.kernel.dispatch(RunClaimPending())
    state = "RUNNING" if claim else "PENDING"
    with pytest.raises(InvalidTransitionError, match=f"Illegal run transition {state} -> RUNNING"):
        kit.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="combine"))
    assert len(kit.persistence.list_stages(run_id)) == (1 if claim else 0)


def test_rerun_needs_earlier_groups_completed(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"non_retryable": True}})
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    from airflow_workflow_engine.kernel.commands import RunRerunFrom as R

    # 'flaky' is the only stage: rerunning from it is fine, but nothing later exists.
    result = kit.kernel.dispatch(R(workflow_run_id=run_id, from_stage_id="flaky"))
    assert result.deleted_stages == ["flaky"]
