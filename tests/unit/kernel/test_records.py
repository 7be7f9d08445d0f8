"""Record helpers on the hot path: ``evolve`` copies like ``model_copy``, ``new_id`` is a UUID4."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_workflow_engine.kernel.records import Job, OutboxEvent, RunRecord, StageRecord, new_id
from airflow_workflow_engine.kernel.status import Status

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_evolve_is_model_copy_with_update() -> None:
    run = RunRecord(
        id="r1", workflow_id="w", workflow_name="W", created_at=NOW, updated_at=NOW, priority=3
    )
    changes = {"status": Status.RUNNING, "event_sequence": 4, "stage_attempts": {"a": 1}}
    fast, slow = run.evolve(**changes), run.model_copy(update=changes)
    assert fast == slow
    assert fast.__dict__ == slow.__dict__
    assert list(fast.__dict__) == list(slow.__dict__)  # field order, so repr and dumps agree
    assert fast.__pydantic_fields_set__ == slow.__pydantic_fields_set__
    assert fast.model_dump() == slow.model_dump()
    assert repr(fast) == repr(slow)
    # A copy: the original is untouched, and the copy is still frozen.
    assert run.status == Status.PENDING and run.event_sequence == 0
    try:
        fast.status = Status.FAILED  # type: ignore[misc]
    except Exception as exc:
        assert "frozen" in str(exc).lower()
    else:
        raise AssertionError("an evolved record must stay frozen")


def test_evolve_without_changes_and_on_other_records() -> None:
    stage = StageRecord(
        id="s1",
        workflow_run_id="r1",
        stage_id="a",
        stage_name="A",
        stage_number=0,
        execution_group=0,
        created_at=NOW,
        updated_at=NOW,
    )
    assert stage.evolve() == stage and stage.evolve() is not stage
    event = OutboxEvent(id="e1", workflow_run_id="r1", sequence=1, type="t", occurred_at=NOW)
    published = event.evolve(published_at=NOW)
    assert published == event.model_copy(update={"published_at": NOW})
    assert event.published_at is None


def test_new_id_is_a_random_uuid4_in_hex() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in list(ids)[:200]:
        parsed = uuid.UUID(hex=value)
        assert len(value) == 32 and parsed.hex == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


# -- trusted construction ------------------------------------------------------------------


def _samples() -> list[tuple[type[Any], dict[str, Any]]]:
    at = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    return [
        (
            OutboxEvent,
            {
                "id": "e1",
                "workflow_run_id": "r1",
                "sequence": 3,
                "type": "stage:started",
                "payload": {"stage_id": "a", "attempt": 1},
                "causation_id": None,
                "occurred_at": at,
            },
        ),
        (
            StageRecord,
            {
                "id": "s1",
                "workflow_run_id": "r1",
                "stage_id": "a",
                "stage_name": "A",
                "stage_number": 0,
                "execution_group": 0,
                "config": {"k": 1},
                "created_at": at,
                "updated_at": at,
            },
        ),
        (
            Job,
            {
                "job_id": "j1",
                "workflow_run_id": "r1",
                "workflow_id": "w",
                "stage_id": "a",
                "priority": 7,
                "payload": {},
                "max_attempts": 3,
                "available_at": None,
            },
        ),
    ]


@pytest.mark.parametrize(("record_type", "values"), _samples())
def test_a_trusted_record_is_the_validated_one(
    record_type: type[Any], values: dict[str, Any]
) -> None:
    trusted = record_type.trusted(**values)
    validated = record_type(**values)
    assert trusted == validated
    assert repr(trusted) == repr(validated)
    assert trusted.model_dump(mode="json") == validated.model_dump(mode="json")
    assert trusted.model_fields_set == validated.model_fields_set
    assert record_type.model_validate(trusted.model_dump()) == trusted


def test_trusted_records_get_their_own_default_containers() -> None:
    at = datetime(2026, 12, 5, tzinfo=timezone.utc)
    fields = {"id": "s", "workflow_run_id": "r", "stage_id": "a", "stage_name": "A"}
    fields |= {"stage_number": 0, "execution_group": 0, "created_at": at, "updated_at": at}
    one, two = StageRecord.trusted(**fields), StageRecord.trusted(**fields)
    assert one.metrics == {} and one.metrics is not two.metrics
