"""Annotations: buffered with the stage outcome, kept per attempt, dropped with ghosts."""

from __future__ import annotations

import pytest

from airflow_workflow_engine.conventions import Approval, Trigger
from airflow_workflow_engine.errors import RunNotFoundError
from airflow_workflow_engine.kernel.commands import AnnotationSpec, RunCreate
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create
from tests.workflows import DOC_INPUT


def test_stage_annotations_are_persisted_with_actor_and_attempt(kit: TestKit) -> None:
    run_id = create(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    rows = kit.kernel.annotations.list(run_id, key_prefix="decision.")
    assert {(r.key, r.value, r.actor.kind, r.actor.id, r.stage_id, r.attempt) for r in rows} == {
        ("decision.outcome", "long", "stage", "classify", "classify", 1),
        ("decision.confidence", 0.9, "agent", "classifier-v1", "classify", 1),
    }
    by_actor = kit.kernel.annotations.list(run_id, actor_id="classifier-v1")
    assert [r.key for r in by_actor] == ["decision.confidence"]


def test_failing_attempts_keep_their_annotations(kit: TestKit) -> None:
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 2}})
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status.value == "COMPLETED"
    rows = kit.kernel.annotations.list(run_id, key_prefix="attempt.")
    assert sorted((r.value, r.attempt) for r in rows) == [(1, 1), (2, 2), (3, 3)]


def test_run_create_annotations_and_external_attach(kit: TestKit) -> None:
    result = kit.kernel.dispatch(
        RunCreate(
            workflow_id="doc",
            input=DOC_INPUT,
            annotations=[
                AnnotationSpec(
                    actor={"kind": "system", "id": "airflow"},  # type: ignore[arg-type]
                    attributes={str(Trigger.source): "schedule", str(Trigger.dag_id): "doc"},
                )
            ],
        )
    )
    run_id = result.workflow_run_id
    written = kit.kernel.annotations.attach(
        run_id,
        actor={"kind": "user", "id": "alice@example.com"},
        attributes={str(Approval.status): Approval.APPROVED, str(Approval.comment): "ok"},
        idempotency_key="review-1",
    )
    assert len(written) == 2
    duplicate = kit.kernel.annotations.attach(
        run_id,
        actor={"kind": "user", "id": "alice@example.com"},
        attributes={str(Approval.status): Approval.REJECTED},
        idempotency_key="review-1",
    )
    assert duplicate == []
    approvals = kit.kernel.annotations.list(run_id, key_prefix="approval.")
    assert {(a.key, a.value) for a in approvals} == {
        ("approval.status", "approved"),
        ("approval.comment", "ok"),
    }
    triggers = kit.kernel.annotations.list(run_id, key_prefix="trigger.")
    assert {a.actor.id for a in triggers} == {"airflow"}
    types = [e.type for e in kit.persistence.list_events(run_id)]
    assert types.count("annotation:created") == 4


def test_attach_to_unknown_run(kit: TestKit) -> None:
    with pytest.raises(RunNotFoundError):
        kit.kernel.annotations.attach(
            "nope", actor={"kind": "user", "id": "x"}, attributes={"a": 1}
        )
