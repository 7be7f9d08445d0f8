"""End-to-end runs through the kernel: groups, outputs, events, blobs."""

from __future__ import annotations

from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    RunClaimPending,
    RunCreate,
    RunTransition,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit
from tests.workflows import CALLS, DOC_INPUT


def create(kit: TestKit, workflow_id: str = "doc", **fields: object) -> str:
    fields.setdefault("input", DOC_INPUT)
    result = kit.kernel.dispatch(RunCreate(workflow_id=workflow_id, **fields))  # type: ignore[arg-type]
    return str(result.workflow_run_id)


def test_four_group_workflow_with_parallel_group(kit: TestKit) -> None:
    run_id = create(kit, config={"summarize": {"max_words": 3}})
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)

    assert run.status == Status.COMPLETED
    assert run.output == {
        "url": f"https://example.invalid/{run_id}",
        "headline": "Report: one two three (long)",
    }
    assert run.completed_at is not None and run.started_at is not None
    stages = kit.persistence.list_stages(run_id)
    assert [(s.stage_id, s.execution_group, s.status) for s in stages] == [
        ("extract", 0, Status.COMPLETED),
        ("summarize", 1, Status.COMPLETED),
        ("classify", 1, Status.COMPLETED),
        ("combine", 2, Status.COMPLETED),
        ("publish", 3, Status.COMPLETED),
    ]
    by_id = {s.stage_id: s for s in stages}
    assert by_id["summarize"].output == {"summary": "one two three"}
    assert by_id["classify"].output == {"label": "long", "confidence": 0.9}
    assert by_id["classify"].metrics["rules"] == 1
    assert by_id["extract"].progress == 0.5
    assert all(s.attempt == 1 for s in stages)


def test_parallel_group_output_is_keyed_by_stage_id(kit: TestKit) -> None:
    seen: dict[str, object] = {}
    from tests.workflows import HOOKS

    HOOKS["combine"] = lambda ctx: seen.update(input=ctx.input, context=dict(ctx.workflow_context))
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    parallel_input = seen["input"]
    assert parallel_input.summarize.summary == "one two three four five"  # type: ignore[attr-defined]
    assert parallel_input.classify.label == "long"  # type: ignore[attr-defined]
    context = seen["context"]
    assert set(context) == {"extract", "summarize", "classify"}  # type: ignore[arg-type]
    assert type(context["classify"]).__name__ == "Label"  # type: ignore[index]


def test_events_are_gap_free_and_ordered(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    events = kit.persistence.list_events(run_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    types = [e.type for e in events]
    assert types[0] == "workflow:created"
    assert types[1] == "workflow:started"
    assert types[-1] == "workflow:completed"
    assert types.count("stage:started") == 5
    assert types.count("stage:completed") == 5
    assert "stage:progress" in types and "log" in types and "annotation:created" in types
    completed = events[-1]
    assert completed.payload["output"]["headline"].startswith("Report:")


def test_manual_dispatch_like_the_seed_testing_guide(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}})
    claimed = kit.kernel.dispatch(RunClaimPending(worker_id="w1"))
    assert [c.workflow_run_id for c in claimed.claimed] == [run_id]
    job = kit.job_transport.dequeue("w1")
    assert job is not None and job.stage_id == "flaky"
    result = kit.kernel.dispatch(
        JobExecute(workflow_run_id=job.workflow_run_id, stage_id=job.stage_id)
    )
    assert result.outcome == "completed" and result.output == {"ok": True}
    transition = kit.kernel.dispatch(RunTransition(workflow_run_id=run_id))
    assert transition.action == "completed"
    assert kit.persistence.get_run(run_id).status == Status.COMPLETED  # type: ignore[union-attr]


def test_duplicate_delivery_of_completed_stage_does_not_rerun_body(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert CALLS["summarize"] == 1
    again = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="summarize"))
    assert again.replayed is True
    assert again.outcome == "completed"
    assert again.output == {"summary": "one two three four five"}
    assert CALLS["summarize"] == 1


def test_priority_orders_claims(kit: TestKit) -> None:
    low = create(kit, priority=1)
    high = create(kit, priority=9)
    claimed = kit.kernel.dispatch(RunClaimPending(max_runs=1))
    assert [c.workflow_run_id for c in claimed.claimed] == [high]
    claimed = kit.kernel.dispatch(RunClaimPending(max_runs=5))
    assert [c.workflow_run_id for c in claimed.claimed] == [low]


def test_large_output_goes_to_blob_store_and_reads_back(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="big")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED and run.output == {"ok": True}
    raw = kit.persistence.get_stage(run_id, "big")
    assert raw is not None and raw.output is None
    assert raw.output_ref == f"runs/{run_id}/stages/big/output.json"
    resolved = {s.stage_id: s for s in kit.kernel.list_stages(run_id)}
    assert resolved["big"].output == {"blob": "x" * 300_000}
    assert kit.blob_store.has(f"runs/{run_id}/stages/big/artifact.txt")


def test_blob_stored_output_is_loaded_by_the_kernel(kit: TestKit) -> None:
    """The store returns the raw row; the kernel reads the output back from the blob store,
    for a duplicate delivery's replay too."""
    run_id = create(kit, workflow_id="big")
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    raw = kit.persistence.get_stage(run_id, "big")
    assert raw is not None and raw.output is None
    assert kit.persistence.list_stages(run_id)[0].output is None
    loaded = kit.kernel.load_output(raw)
    assert loaded.output == {"blob": "x" * 300_000} and loaded.output_ref == raw.output_ref
    again = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="big"))
    assert again.replayed and again.output == {"blob": "x" * 300_000}
    assert again.output_ref == raw.output_ref


def test_run_create_is_validated_before_anything_is_written(kit: TestKit) -> None:
    import pytest

    from airflow_workflow_engine.errors import (
        ConfigValidationError,
        InputValidationError,
        WorkflowNotFoundError,
    )

    with pytest.raises(InputValidationError) as bad_input:
        kit.kernel.dispatch(RunCreate(workflow_id="doc", input={"title": "x", "body": ""}))
    assert "input for workflow 'doc'" in str(bad_input.value)
    assert "body" in str(bad_input.value)
    assert bad_input.value.fields == ["body"]

    with pytest.raises(InputValidationError, match="title: Field required"):
        kit.kernel.dispatch(RunCreate(workflow_id="doc", input={"body": "b"}))

    with pytest.raises(ConfigValidationError) as bad_config:
        kit.kernel.dispatch(
            RunCreate(workflow_id="doc", input=DOC_INPUT, config={"summarize": {"max_words": 0}})
        )
    assert "stage 'summarize'" in str(bad_config.value)
    assert bad_config.value.fields == ["summarize.max_words"]

    with pytest.raises(ConfigValidationError, match="unknown stage"):
        kit.kernel.dispatch(RunCreate(workflow_id="doc", input=DOC_INPUT, config={"nope": {}}))

    with pytest.raises(WorkflowNotFoundError, match="'missing' is not in the registry"):
        kit.kernel.dispatch(RunCreate(workflow_id="missing", input=DOC_INPUT))

    from airflow_workflow_engine.kernel.status import Status as S

    assert kit.persistence.list_runs(status=S.PENDING) == []
    assert kit.persistence.list_unpublished_events() == []


def test_dispatch_accepts_dicts_with_type(kit: TestKit) -> None:
    result = kit.kernel.dispatch(
        {"type": "run.create", "workflow_id": "doc", "input": DOC_INPUT, "priority": 3}
    )
    run = kit.persistence.get_run(result.workflow_run_id)
    assert run is not None and run.priority == 3 and run.status == Status.PENDING


def test_unknown_command_type_is_a_validation_error(kit: TestKit) -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"run\.explode"):
        kit.kernel.dispatch({"type": "run.explode"})


def test_workflow_output_mismatch_fails_run_naming_field(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="bad-wf-output")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert "output of workflow 'bad-wf-output'" in (run.error_message or "")
    assert "something_else" in (run.error_message or "")
