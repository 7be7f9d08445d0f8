"""Record helpers on the hot path: ``evolve`` copies like ``model_copy``, ``new_id`` is a UUID4."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from airflow_workflow_engine.kernel.records import OutboxEvent, RunRecord, StageRecord, new_id
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
