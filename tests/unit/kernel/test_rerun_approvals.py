"""A rerun voids the approvals that depended on the stages it reruns (memory, SQLite, PostgreSQL).

The ``doc`` workflow is extract -> (summarize, classify) -> combine -> publish; the approval
point is between combine and publish, as an ``ApprovalSensor`` placed there would be.
"""

from __future__ import annotations

from datetime import timezone

from airflow_workflow_engine.conventions import Actor
from airflow_workflow_engine.kernel.approvals import (
    REVISION_REPLACED_SINCE,
    REVISION_STAGE_IDS,
    approval_state,
    latest_approval,
)
from airflow_workflow_engine.kernel.commands import RunRerunFrom, RunRerunStages
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.driver import step
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create


def _decide(kit: TestKit, run_id: str, status: str, who: str, stage_id: str | None = None) -> None:
    kit.clock.advance(60)
    attributes = {"approval.status": status, "approval.approver": who, "approval.comment": who}
    if stage_id:
        attributes["approval.stage_id"] = stage_id
    kit.kernel.annotations.attach(
        run_id, actor=Actor(kind="user", id=who), attributes=attributes, idempotency_key=who
    )
    kit.clock.advance(60)


def _until_approval_point(kit: TestKit) -> str:
    """Runs the doc workflow up to combine (the stages before the approval point)."""
    run_id = create(kit)
    while (rec := kit.persistence.get_stage(run_id, "combine")) is None or rec.status not in (
        Status.COMPLETED,
        Status.FAILED,
    ):
        assert step(kit.kernel, kit.job_transport)
    return run_id


def _decision(kit: TestKit, run_id: str, stage_id: str | None = None) -> str | None:
    found = latest_approval(kit.persistence.list_annotations(run_id), stage_id=stage_id)
    return None if found is None else f"{found.status}:{found.approver}"


def test_rerun_before_the_approval_point_voids_it_and_a_fresh_one_counts(kit: TestKit) -> None:
    run_id = _until_approval_point(kit)
    _decide(kit, run_id, "approved", "alice")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED and _decision(kit, run_id) == "approved:alice"

    # An Airflow clear of summarize and downstream: its output changes, alice never saw it.
    kit.kernel.dispatch(
        RunRerunStages(
            workflow_run_id=run_id,
            stage_ids=["summarize", "combine", "publish"],
            reason="cleared in Airflow",
        )
    )
    state = approval_state(kit.persistence.list_annotations(run_id))
    assert state.decision is None
    ((old, rerun),) = state.voided
    assert old.approver == "alice" and rerun.stage_ids == {"summarize", "combine", "publish"}
    assert "awaits a new approval" in state.waiting_message()
    assert "approved by alice" in state.waiting_message()

    _decide(kit, run_id, "approved", "bob")
    assert _decision(kit, run_id) == "approved:bob"
    # Provenance is append-only: alice's approval and the rerun's revision are both kept.
    notes = kit.persistence.list_annotations(run_id)
    assert [n.value for n in notes if n.key == "approval.approver"] == ["alice", "bob"]
    (stages,) = [n for n in notes if n.key == REVISION_STAGE_IDS]
    assert stages.value == ["summarize", "combine", "publish"]
    assert stages.actor.kind == "system"
    assert [n.key for n in notes if n.key.startswith("revision.")] == [
        REVISION_STAGE_IDS,
        REVISION_REPLACED_SINCE,
        "revision.reason",
    ]


def test_rerun_after_the_approval_point_keeps_it(kit: TestKit) -> None:
    run_id = _until_approval_point(kit)
    _decide(kit, run_id, "approved", "alice")
    run_to_completion(kit.kernel, kit.job_transport, run_id)

    kit.kernel.dispatch(RunRerunStages(workflow_run_id=run_id, stage_ids=["publish"]))
    # publish finished after alice approved: what she approved is unchanged.
    assert _decision(kit, run_id) == "approved:alice"
    assert approval_state(kit.persistence.list_annotations(run_id)).voided == ()


def test_rerun_from_voids_a_rejection_too(kit: TestKit) -> None:
    run_id = _until_approval_point(kit)
    _decide(kit, run_id, "rejected", "bob")
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert _decision(kit, run_id) == "rejected:bob"

    result = kit.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="extract"))
    assert result.deleted_stages
    assert _decision(kit, run_id) is None  # the new attempt waits for a fresh decision
    notes = kit.persistence.list_annotations(run_id)
    assert {n.key: n.value for n in notes}["revision.from_stage_id"] == "extract"


def test_a_stage_approval_is_voided_only_by_a_rerun_of_its_stage(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    _decide(kit, run_id, "approved", "carol", stage_id="classify")
    _decide(kit, run_id, "approved", "dana", stage_id="summarize")

    kit.kernel.dispatch(RunRerunStages(workflow_run_id=run_id, stage_ids=["summarize"]))
    assert _decision(kit, run_id, "classify") == "approved:carol"
    assert _decision(kit, run_id, "summarize") is None
    # The run-wide view: carol's stands (her stage was not rerun); dana's is voided.
    assert _decision(kit, run_id) == "approved:carol"


def test_a_rerun_of_nothing_finished_writes_no_revision(kit: TestKit) -> None:
    run_id = create(kit)
    _decide(kit, run_id, "approved", "alice")
    kit.kernel.dispatch(RunRerunStages(workflow_run_id=run_id, stage_ids=["publish"]))
    notes = kit.persistence.list_annotations(run_id)
    assert not [n for n in notes if n.key.startswith("revision.")]
    assert _decision(kit, run_id) == "approved:alice"


def test_a_pending_request_waits_until_a_decision_and_is_no_decision(kit: TestKit) -> None:
    """``approval.status`` = ``pending`` (a ``WorkflowApprovalOperator`` asking) says since
    when the run waits; it decides nothing, and a decision after it ends the wait."""
    from airflow_workflow_engine.kernel.approvals import awaiting_since

    run_id = _until_approval_point(kit)
    assert awaiting_since(kit.persistence.list_annotations(run_id)) is None
    _decide(kit, run_id, "pending", "airflow")
    notes = kit.persistence.list_annotations(run_id)
    asked = next(n.created_at for n in notes if n.value == "pending")
    assert awaiting_since(notes) == asked.replace(tzinfo=asked.tzinfo or timezone.utc)
    assert _decision(kit, run_id) is None
    _decide(kit, run_id, "rejected", "bob")
    assert awaiting_since(kit.persistence.list_annotations(run_id)) is None
    assert _decision(kit, run_id) == "rejected:bob"
    # Asked again (after a rerun voided it, say): waiting again, the old rejection still there.
    _decide(kit, run_id, "pending", "airflow-again")
    assert awaiting_since(kit.persistence.list_annotations(run_id)) is not None
