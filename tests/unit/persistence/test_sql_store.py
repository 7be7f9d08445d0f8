"""SqlPersistence against the Persistence port, on SQLite and on a real PostgreSQL server.

The in-memory store is the reference: parity tests run the same calls on both and compare.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from airflow_workflow_engine.blob.memory import InMemoryBlobStore
from airflow_workflow_engine.definitions.annotations import Actor
from airflow_workflow_engine.errors import (
    DatabaseUnavailableError,
    IdempotencyInProgressError,
    MigrationsNotAppliedError,
    RunNotFoundError,
)
from airflow_workflow_engine.kernel.records import (
    AnnotationRecord,
    LogRecord,
    RunRecord,
    StageRecord,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.persistence.memory import InMemoryPersistence
from airflow_workflow_engine.persistence.sql import SqlPersistence, migrate
from airflow_workflow_engine.persistence.sql.engine import make_engine, normalize_url
from airflow_workflow_engine.testing.kit import create_test_kernel
from airflow_workflow_engine.testing.sql_counter import SqlCounter

pytest_plugins = ["tests.postgres_fixtures"]

T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc)
CEST = timezone(timedelta(hours=2))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_run(run_id: str, **fields: Any) -> RunRecord:
    values: dict[str, Any] = {
        "id": run_id,
        "workflow_id": "wf",
        "workflow_name": "Workflow",
        "created_at": T0,
        "updated_at": T0,
    }
    return RunRecord(**(values | fields))


def make_stage(run_id: str, stage_id: str, number: int = 0, **fields: Any) -> StageRecord:
    values: dict[str, Any] = {
        "id": f"{run_id}:{stage_id}",
        "workflow_run_id": run_id,
        "stage_id": stage_id,
        "stage_name": stage_id.title(),
        "stage_number": number,
        "execution_group": number,
        "created_at": T0,
        "updated_at": T0,
    }
    return StageRecord(**(values | fields))


def make_log(log_id: str, run_id: str, stage_id: str | None = None, **fields: Any) -> LogRecord:
    values: dict[str, Any] = {
        "id": log_id,
        "workflow_run_id": run_id,
        "stage_id": stage_id,
        "level": "INFO",
        "message": f"message {log_id}",
        "created_at": T0,
    }
    return LogRecord(**(values | fields))


def make_annotation(ann_id: str, run_id: str, key: str, **fields: Any) -> AnnotationRecord:
    values: dict[str, Any] = {
        "id": ann_id,
        "workflow_run_id": run_id,
        "stage_id": None,
        "key": key,
        "value": {"v": ann_id},
        "actor": Actor(kind="user", id="alice"),
        "created_at": T0,
    }
    return AnnotationRecord(**(values | fields))


# -- fixtures -----------------------------------------------------------------------------

POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


def _fresh_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool) -> str:
    """A new database: empty, or migrated (copied from a template migrated once)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'wfe.db'}"
        if migrated:
            migrate(url)
        return url
    server = request.getfixturevalue("postgres_server")
    name = (
        server.create_database_from("migrated", migrate) if migrated else server.create_database()
    )
    request.addfinalizer(lambda: server.drop_database(name))
    return str(server.url(name))


@pytest.fixture(params=["sqlite", POSTGRES])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database (not migrated)."""
    return _fresh_url(request.param, request, tmp_path, migrated=False)


@pytest.fixture(params=["sqlite", POSTGRES])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlPersistence]:
    """A SqlPersistence on a fresh, migrated database."""
    url = _fresh_url(request.param, request, tmp_path, migrated=True)
    with SqlPersistence(url) as sql_store:
        yield sql_store


@pytest.fixture(params=["memory", "sqlite", POSTGRES])
def either(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The reference store and the SQL stores, for tests that must hold for all of them."""
    if request.param == "memory":
        yield InMemoryPersistence()
        return
    url = _fresh_url(request.param, request, tmp_path, migrated=True)
    with SqlPersistence(url) as sql_store:
        yield sql_store


# -- runs ---------------------------------------------------------------------------------


def test_run_round_trip_keeps_every_field(store: SqlPersistence) -> None:
    run = make_run(
        "r1",
        status=Status.RUNNING,
        input={"doc": "ünïcødé ✓", "n": [1, 2.5, None, True], "nested": {"a": {"b": []}}},
        output=["x", {"y": 1}],
        config={"stage": {"temperature": 0.2}},
        priority=9,
        total_cost=1.25,
        total_tokens=12_345_678_901,
        error_message="boom",
        idempotency_key="dag/run",
        started_at=at(1),
        completed_at=at(2),
        event_sequence=3,
        stage_attempts={"a": 2},
    )
    store.insert_run(run)
    assert store.get_run("r1") == run
    assert store.get_run("missing") is None


def test_datetimes_come_back_aware_utc(store: SqlPersistence) -> None:
    local = datetime(2025, 6, 1, 14, 0, 0, 5, tzinfo=CEST)
    naive = datetime(2025, 6, 1, 12, 0, 0, 5)  # taken as UTC
    store.insert_run(make_run("r1", created_at=local, updated_at=naive, started_at=local))
    got = store.get_run("r1")
    assert got is not None
    for value in (got.created_at, got.updated_at, got.started_at):
        assert value is not None
        assert value.utcoffset() == timedelta(0)
        assert value == datetime(2025, 6, 1, 12, 0, 0, 5, tzinfo=timezone.utc)


def test_json_null_and_scalars_round_trip(store: SqlPersistence) -> None:
    for i, value in enumerate([None, 0, "", "text", 1.5, [], {}, [None], {"k": None}]):
        store.insert_run(make_run(f"r{i}", input=value, output=value))
        got = store.get_run(f"r{i}")
        assert got is not None
        assert (got.input, got.output) == (value, value)


def test_pydantic_values_are_stored_as_json(store: SqlPersistence) -> None:
    store.insert_run(make_run("r1", output={"actor": Actor(kind="user", id="u"), "at": T0}))
    got = store.get_run("r1")
    assert got is not None
    assert got.output == {
        "actor": {"kind": "user", "id": "u", "version": None},
        "at": T0.isoformat().replace("+00:00", "Z"),
    }


def test_insert_run_twice_raises(either: Any) -> None:
    either.insert_run(make_run("r1"))
    with pytest.raises(ValueError, match="run r1 exists"):
        either.insert_run(make_run("r1", workflow_id="other"))
    assert either.get_run("r1").workflow_id == "wf"


def test_update_run(either: Any) -> None:
    either.insert_run(make_run("r1"))
    updated = either.update_run("r1", status=Status.RUNNING, started_at=at(5), output={"o": 1})
    assert updated.status == Status.RUNNING
    assert updated.started_at == at(5)
    assert either.get_run("r1") == updated
    assert either.update_run("r1") == updated
    with pytest.raises(RunNotFoundError):
        either.update_run("missing", status=Status.RUNNING)


def test_update_run_rejects_unknown_fields(store: SqlPersistence) -> None:
    store.insert_run(make_run("r1"))
    with pytest.raises(ValueError, match="no field"):
        store.update_run("r1", colour="blue")


def test_list_runs_order_filters_and_limit(either: Any) -> None:
    either.insert_run(make_run("b", priority=5, created_at=at(1)))
    either.insert_run(make_run("a", priority=5, created_at=at(1)))
    either.insert_run(make_run("Z", priority=5, created_at=at(1)))
    either.insert_run(make_run("c", priority=9, created_at=at(3)))
    either.insert_run(make_run("d", priority=5, created_at=at(0), status=Status.RUNNING))
    either.insert_run(make_run("e", priority=1, created_at=at(0), workflow_id="other"))
    assert [r.id for r in either.list_runs()] == ["c", "d", "Z", "a", "b", "e"]
    assert [r.id for r in either.list_runs(limit=2)] == ["c", "d"]
    assert [r.id for r in either.list_runs(status=Status.RUNNING)] == ["d"]
    assert [r.id for r in either.list_runs(workflow_id="other")] == ["e"]
    assert either.list_runs(status=Status.FAILED, workflow_id="wf") == []


def test_get_run_by_idempotency_key(either: Any) -> None:
    either.insert_run(make_run("old", idempotency_key="dag/run_1", created_at=at(1)))
    either.insert_run(make_run("new", idempotency_key="dag/run_1", created_at=at(2)))
    either.insert_run(make_run("other", idempotency_key="dag/run_2", created_at=at(3)))
    either.insert_run(make_run("none", created_at=at(4)))
    found = either.get_run_by_idempotency_key("dag/run_1")
    assert found is not None and found.id == "new"  # the newest of the same key
    assert either.get_run_by_idempotency_key("dag/run_2").id == "other"
    assert either.get_run_by_idempotency_key("dag/run_3") is None
    either.update_run("new", status=Status.RUNNING)
    assert either.get_run_by_idempotency_key("dag/run_1").status == Status.RUNNING
    # A rolled-back insert leaves no key behind.
    with pytest.raises(RuntimeError), either.transaction():
        either.insert_run(make_run("gone", idempotency_key="dag/run_9", created_at=at(5)))
        assert either.get_run_by_idempotency_key("dag/run_9").id == "gone"
        raise RuntimeError("stop")
    assert either.get_run_by_idempotency_key("dag/run_9") is None


@pytest.mark.postgres
def test_ordering_ignores_the_database_locale(request: pytest.FixtureRequest) -> None:
    """Ties are broken by code point, as in Python, even under a linguistic collation."""
    server = request.getfixturevalue("postgres_server")
    try:
        name = server.create_database(options="LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    except Exception as err:  # a server built without ICU
        pytest.skip(f"no ICU collations: {err}")
    request.addfinalizer(lambda: server.drop_database(name))
    url = server.url(name)
    migrate(url)
    memory = InMemoryPersistence()
    with SqlPersistence(url) as sql_store:
        for p in (memory, sql_store):
            for run_id in ("b", "a-2", "Z", "a_1", "é", "A"):
                p.insert_run(make_run(run_id))
                p.insert_stage(make_stage("r", run_id, status=Status.SUSPENDED))
        expected = [r.id for r in memory.list_runs()]
        assert expected == ["A", "Z", "a-2", "a_1", "b", "é"]
        assert [r.id for r in sql_store.list_runs()] == expected
        assert [s.stage_id for s in sql_store.list_stages("r")] == expected
        due = sql_store.list_due_suspended_stages(at(0), limit=100)
        assert [s.stage_id for s in due] == expected


def test_get_run_for_update_inside_a_transaction(store: SqlPersistence) -> None:
    store.insert_run(make_run("r1"))
    with store.transaction():
        run = store.get_run("r1", for_update=True)
        assert run is not None
        store.update_run("r1", priority=run.priority + 1)
    assert store.get_run("r1", for_update=True).priority == 6  # type: ignore[union-attr]


# -- stages -------------------------------------------------------------------------------


def test_stage_round_trip_and_duplicates(either: Any) -> None:
    stage = make_stage(
        "r1",
        "extract",
        2,
        status=Status.SUSPENDED,
        attempt=3,
        output={"text": "hi"},
        config={"model": "m"},
        suspended_state={"batch": "b1"},
        resume_state={"k": 1},
        poll_interval=30.0,
        next_poll_at=at(60),
        max_wait_until=at(3600),
        metrics={"tokens": 10},
        progress=0.5,
        progress_message="halfway",
        error_message=None,
        started_at=at(1),
    )
    either.insert_stage(stage)
    assert either.get_stage("r1", "extract") == stage
    assert either.get_stage("r1", "nope") is None
    with pytest.raises(ValueError, match="exists"):
        either.insert_stage(make_stage("r1", "extract", 7))


def test_list_stages_order_and_blob_outputs(either: Any) -> None:
    blobs = InMemoryBlobStore()
    blobs.put("runs/r1/stages/big/output.json", json.dumps({"big": [1, 2, 3]}).encode())
    # The store returns raw rows; the kernel, which holds the blob store, loads the outputs.
    kernel = create_test_kernel([], persistence=either, blob_store=blobs).kernel
    either.insert_stage(make_stage("r1", "b", 1))
    either.insert_stage(make_stage("r1", "a", 1))
    either.insert_stage(make_stage("r1", "first", 0))
    either.insert_stage(make_stage("r1", "big", 2, output_ref="runs/r1/stages/big/output.json"))
    either.insert_stage(make_stage("r2", "other", 0))
    assert [s.stage_id for s in either.list_stages("r1")] == ["first", "a", "b", "big"]
    resolved = kernel.list_stages("r1")[-1]
    assert resolved.output == {"big": [1, 2, 3]}
    assert resolved.output_ref == "runs/r1/stages/big/output.json"
    assert either.list_stages("r1")[-1].output is None
    assert either.get_stage("r1", "big").output is None


def test_get_run_with_stages_is_get_run_and_list_stages_in_one(either: Any) -> None:
    assert either.get_run_with_stages("missing") == (None, [])
    either.insert_run(make_run("r1"))
    assert either.get_run_with_stages("r1") == (either.get_run("r1"), [])
    either.insert_run(make_run("r2"))
    for number, sid in [(2, "c"), (0, "b"), (0, "a"), (1, "d")]:
        either.insert_stage(make_stage("r1", sid, number, config={"n": number}))
    either.insert_stage(make_stage("r2", "x"))
    either.update_stage("r1", "d", output={"big": True}, output_ref=None, progress=0.5)
    with either.transaction():
        run, stages = either.get_run_with_stages("r1", for_update=True)
    assert run == either.get_run("r1")
    assert stages == either.list_stages("r1")
    assert [s.stage_id for s in stages] == ["a", "b", "d", "c"]


def test_update_and_delete_stages(either: Any) -> None:
    either.insert_stage(make_stage("r1", "a", 0))
    either.insert_stage(make_stage("r1", "b", 1))
    updated = either.update_stage("r1", "a", status=Status.COMPLETED, output={"x": 1})
    assert updated.status == Status.COMPLETED
    assert either.get_stage("r1", "a") == updated
    with pytest.raises(KeyError):
        either.update_stage("r1", "zzz", status=Status.RUNNING)
    assert either.delete_stages("r1", ["a", "a", "missing"]) == 1
    assert either.delete_stages("r1", []) == 0
    assert [s.stage_id for s in either.list_stages("r1")] == ["b"]


def test_due_suspended_stages(either: Any) -> None:
    now = at(100)
    either.insert_stage(make_stage("r2", "late", status=Status.SUSPENDED, next_poll_at=at(50)))
    either.insert_stage(make_stage("r1", "early", status=Status.SUSPENDED, next_poll_at=at(10)))
    either.insert_stage(make_stage("r1", "never", status=Status.SUSPENDED, next_poll_at=None))
    either.insert_stage(make_stage("r1", "future", status=Status.SUSPENDED, next_poll_at=at(500)))
    either.insert_stage(make_stage("r1", "running", status=Status.RUNNING, next_poll_at=at(1)))
    either.insert_stage(make_stage("r1", "exact", status=Status.SUSPENDED, next_poll_at=now))
    due = either.list_due_suspended_stages(now)
    assert [(s.workflow_run_id, s.stage_id) for s in due] == [
        ("r1", "early"),
        ("r2", "late"),
        ("r1", "exact"),
        ("r1", "never"),
    ]
    assert len(either.list_due_suspended_stages(now, limit=2)) == 2
    assert [s.stage_id for s in either.list_due_suspended_stages(now, workflow_run_id="r2")] == [
        "late"
    ]
    assert [s.stage_id for s in either.list_due_suspended_stages(now, stage_id="exact")] == [
        "exact"
    ]
    # A zone other than UTC compares by instant.
    assert len(either.list_due_suspended_stages(now.astimezone(CEST))) == 4
    assert either.earliest_suspended_poll_at() == at(10)


def test_earliest_suspended_poll_at_empty(either: Any) -> None:
    assert either.earliest_suspended_poll_at() is None
    either.insert_stage(make_stage("r1", "s", status=Status.SUSPENDED, next_poll_at=None))
    assert either.earliest_suspended_poll_at() is None


# -- logs ---------------------------------------------------------------------------------


def test_logs_keep_insertion_order(either: Any) -> None:
    either.insert_logs([make_log("z", "r1", "s1", created_at=at(5)), make_log("a", "r1")])
    either.insert_logs([make_log("m", "r1", "s1", created_at=at(1), fields={"k": [1]})])
    either.insert_logs([make_log("x", "r2")])
    either.insert_logs([])
    assert [log.id for log in either.list_logs("r1")] == ["z", "a", "m"]
    assert [log.id for log in either.list_logs("r1", "s1")] == ["z", "m"]
    assert either.list_logs("r1", "s1")[1].fields == {"k": [1]}
    # The same id again replaces the row, in place.
    either.insert_logs([make_log("z", "r1", "s1", message="replaced", attempt=2)])
    logs = either.list_logs("r1")
    assert [log.id for log in logs] == ["z", "a", "m"]
    assert (logs[0].message, logs[0].attempt) == ("replaced", 2)


# -- outbox -------------------------------------------------------------------------------


def test_append_event_sequences_and_missing_run(either: Any) -> None:
    either.insert_run(make_run("r1"))
    either.insert_run(make_run("r2"))
    e1 = either.append_event("r1", "run.created", {"a": 1}, occurred_at=at(1))
    e2 = either.append_event("r1", "stage.started", {}, occurred_at=at(2), causation_id="c")
    e3 = either.append_event("r2", "run.created", {}, occurred_at=at(0))
    assert (e1.sequence, e2.sequence, e3.sequence) == (1, 2, 1)
    assert either.get_run("r1").event_sequence == 2
    assert either.list_events("r1") == [e1, e2]
    assert e2.causation_id == "c"
    with pytest.raises(RunNotFoundError):
        either.append_event("missing", "x", {}, occurred_at=at(0))


def test_append_event_can_change_the_run_in_the_same_write(either: Any) -> None:
    either.insert_run(make_run("r1"))
    either.append_event("r1", "a", {}, occurred_at=at(1))
    event = either.append_event(
        "r1",
        "b",
        {"x": 1},
        occurred_at=at(2),
        run_changes={"status": Status.RUNNING, "stage_attempts": {"s": 2}, "updated_at": at(3)},
    )
    assert event.sequence == 2
    run = either.get_run("r1")
    assert (run.status, run.stage_attempts, run.updated_at) == (Status.RUNNING, {"s": 2}, at(3))
    assert run.event_sequence == 2
    assert [r.id for r in either.list_runs(status=Status.RUNNING)] == ["r1"]  # status index
    with pytest.raises(RunNotFoundError):
        either.append_event("missing", "x", {}, occurred_at=at(0), run_changes={"priority": 1})


@pytest.mark.parametrize("revision", ["0004", "head"])
def test_sqlite_events_with_and_without_the_sequence_trigger(tmp_path: Path, revision: str) -> None:
    """Migration 0005's trigger makes an SQLite event one INSERT; a database without it
    (older schema) gets the UPDATE ... RETURNING and INSERT, with the same sequences."""
    url = f"sqlite:///{tmp_path / 'wfe.db'}"
    migrate(url, revision=revision)
    with SqlPersistence(url) as sql_store:
        sql_store.insert_run(make_run("r1"))
        sql_store.append_event("r1", "a", {}, occurred_at=at(1))  # looks the trigger up
        with SqlCounter(sql_store.engine, keep_sql=True) as counter:
            e2 = sql_store.append_event("r1", "b", {"x": 1}, occurred_at=at(2))
            e3 = sql_store.append_event(
                "r1", "c", {}, occurred_at=at(3), run_changes={"priority": 1}
            )
            e4 = sql_store.append_event("r1", "d", {}, occurred_at=at(4))
        assert (e2.sequence, e3.sequence, e4.sequence) == (2, 3, 4)
        assert [e.sequence for e in sql_store.list_events("r1")] == [1, 2, 3, 4]
        run = sql_store.get_run("r1")
        assert run is not None and (run.event_sequence, run.priority) == (4, 1)
        # Plain events: one INSERT with the trigger, else two; with run changes: two.
        assert counter.total.statements == (4 if revision == "head" else 6), counter.total.sql
        with pytest.raises(RunNotFoundError):
            sql_store.append_event("missing", "x", {}, occurred_at=at(0))
        assert len(sql_store.list_events("missing")) == 0


def test_append_event_refuses_unknown_run_fields(store: SqlPersistence) -> None:
    store.insert_run(make_run("r1"))
    with pytest.raises(ValueError, match="no field"):
        store.append_event("r1", "a", {}, occurred_at=at(1), run_changes={"nope": 1})
    assert store.list_events("r1") == []


def test_outbox_publish_failure_dlq_requeue(either: Any) -> None:
    either.insert_run(make_run("r1"))
    either.insert_run(make_run("r0"))
    e1 = either.append_event("r1", "a", {}, occurred_at=at(2))
    e2 = either.append_event("r1", "b", {}, occurred_at=at(2))
    e3 = either.append_event("r0", "c", {}, occurred_at=at(2))
    e4 = either.append_event("r0", "d", {}, occurred_at=at(1))
    assert [e.id for e in either.list_unpublished_events()] == [e4.id, e3.id, e1.id, e2.id]
    assert [e.id for e in either.list_unpublished_events(limit=1)] == [e4.id]
    either.mark_event_published(e4.id, at(10))
    either.record_event_failure(e1.id, "timeout", 1, None)
    either.record_event_failure(e2.id, "gone", 5, at(11))
    either.record_event_failure(e3.id, "gone", 5, at(12))
    assert [e.id for e in either.list_unpublished_events()] == [e1.id]
    failed = either.list_unpublished_events()[0]
    assert (failed.last_error, failed.retry_count, failed.dlq_at) == ("timeout", 1, None)
    assert [e.id for e in either.list_dlq_events()] == [e3.id, e2.id]
    assert [e.id for e in either.list_dlq_events(limit=1)] == [e3.id]
    assert either.list_events("r0")[1].published_at == at(10)
    assert either.requeue_dlq_events([e2.id]) == 1
    assert either.requeue_dlq_events([]) == 0
    requeued = either.list_events("r1")[1]
    assert (requeued.dlq_at, requeued.retry_count, requeued.last_error) == (None, 0, "gone")
    assert [e.id for e in either.list_dlq_events()] == [e3.id]
    with pytest.raises(KeyError):
        either.mark_event_published("missing", at(1))
    with pytest.raises(KeyError):
        either.record_event_failure("missing", "x", 1, None)
    with pytest.raises(KeyError):
        either.requeue_dlq_events([e3.id, "missing"])
    assert [e.id for e in either.list_dlq_events()] == [e3.id]  # nothing half-done


def test_mark_events_published_is_one_batch_all_or_nothing(either: Any) -> None:
    either.insert_run(make_run("r1"))
    events = [either.append_event("r1", f"e{i}", {}, occurred_at=at(i)) for i in range(3)]
    either.mark_events_published([events[0].id, events[2].id], at(10))
    assert [e.id for e in either.list_unpublished_events()] == [events[1].id]
    assert [e.published_at for e in either.list_events("r1")] == [at(10), None, at(10)]
    either.mark_events_published([], at(11))
    with pytest.raises(KeyError):
        either.mark_events_published([events[1].id, "missing"], at(12))
    assert [e.id for e in either.list_unpublished_events()] == [events[1].id]  # nothing half-done


# -- idempotency --------------------------------------------------------------------------


def test_idempotency_claim_complete_replay_release(either: Any) -> None:
    exp = at(60)
    assert either.acquire_idempotency("k", "run.create", now=at(0), expires_at=exp) is None
    with pytest.raises(IdempotencyInProgressError):
        either.acquire_idempotency("k", "run.create", now=at(1), expires_at=exp)
    # Another command type is another key.
    assert either.acquire_idempotency("k", "job.execute", now=at(1), expires_at=exp) is None
    either.complete_idempotency("k", "run.create", {"workflowRunId": "r1"})
    replay = either.acquire_idempotency("k", "run.create", now=at(2), expires_at=exp)
    assert replay is not None
    assert (replay.state, replay.result, replay.expires_at) == (
        "completed",
        {"workflowRunId": "r1"},
        None,
    )
    assert replay.created_at == at(0)
    either.release_idempotency("k", "run.create")
    either.release_idempotency("k", "run.create")  # releasing twice is fine
    assert either.acquire_idempotency("k", "run.create", now=at(3), expires_at=exp) is None
    with pytest.raises(KeyError):
        either.complete_idempotency("nope", "run.create", None)


def test_idempotency_takes_over_an_expired_claim(either: Any) -> None:
    assert either.acquire_idempotency("k", "c", now=at(0), expires_at=at(10)) is None
    with pytest.raises(IdempotencyInProgressError):
        either.acquire_idempotency("k", "c", now=at(9), expires_at=at(20))
    assert either.acquire_idempotency("k", "c", now=at(10), expires_at=at(30)) is None
    with pytest.raises(IdempotencyInProgressError):
        either.acquire_idempotency("k", "c", now=at(29), expires_at=at(40))


def test_idempotency_claim_survives_a_rolled_back_transaction(store: SqlPersistence) -> None:
    """The claim is committed on its own connection (PostgreSQL); on SQLite, the single
    writer, it is a savepoint of the open transaction and rolls back with it."""
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_run(make_run("r1"))
        assert store.acquire_idempotency("k", "c", now=at(0), expires_at=at(60)) is None
        raise RuntimeError("handler failed")
    assert store.get_run("r1") is None
    if store.engine.dialect.name == "postgresql":
        with pytest.raises(IdempotencyInProgressError):
            store.acquire_idempotency("k", "c", now=at(1), expires_at=at(60))
    else:
        assert store.acquire_idempotency("k", "c", now=at(1), expires_at=at(60)) is None


# -- annotations --------------------------------------------------------------------------


def test_annotations_dedupe_filter_and_order(either: Any) -> None:
    assert either.insert_annotation(make_annotation("1", "r1", "Decision.outcome"))
    assert either.insert_annotation(
        make_annotation("2", "r1", "decision.x", idempotency_key="i", stage_id="s", attempt=2)
    )
    assert either.insert_annotation(make_annotation("3", "r1", "Decision.outcome"))
    assert not either.insert_annotation(
        make_annotation("4", "r1", "decision.x", idempotency_key="i", value="dup")
    )
    assert either.insert_annotation(make_annotation("5", "r1", "decision.y", idempotency_key="i"))
    assert either.insert_annotation(make_annotation("6", "r2", "decision.x", idempotency_key="i"))
    assert either.insert_annotation(
        make_annotation("7", "r1", "100%_done", actor=Actor(kind="agent", id="bot", version="2"))
    )
    assert [a.id for a in either.list_annotations("r1")] == ["1", "2", "3", "5", "7"]
    assert [a.id for a in either.list_annotations("r1", key_prefix="decision.")] == ["2", "5"]
    assert [a.id for a in either.list_annotations("r1", key_prefix="100%_")] == ["7"]
    assert [a.id for a in either.list_annotations("r1", key_prefix="100%X")] == []
    assert [a.id for a in either.list_annotations("r1", actor_id="bot")] == ["7"]
    assert either.list_annotations("r1", key_prefix="Decision", actor_id="bot") == []
    second = either.list_annotations("r1")[1]
    assert second == make_annotation(
        "2", "r1", "decision.x", idempotency_key="i", stage_id="s", attempt=2
    )
    assert either.list_annotations("r1", actor_id="bot")[0].actor.version == "2"


def test_duplicate_annotation_keeps_the_transaction_usable(store: SqlPersistence) -> None:
    with store.transaction():
        store.insert_annotation(make_annotation("1", "r1", "k", idempotency_key="i"))
        assert not store.insert_annotation(make_annotation("2", "r1", "k", idempotency_key="i"))
        with pytest.raises(ValueError, match="exists"):
            store.insert_run(make_run("r1"))
            store.insert_run(make_run("r1"))
        store.insert_stage(make_stage("r1", "s"))
    assert [a.id for a in store.list_annotations("r1")] == ["1"]
    assert store.get_run("r1") is not None
    assert store.get_stage("r1", "s") is not None


# -- transactions -------------------------------------------------------------------------


def _write_everything(p: Any) -> None:
    p.insert_run(make_run("r1"))
    p.insert_stage(make_stage("r1", "s"))
    p.insert_logs([make_log("l1", "r1")])
    p.append_event("r1", "run.created", {}, occurred_at=at(0))
    p.insert_annotation(make_annotation("a1", "r1", "k"))
    p.update_run("r1", status=Status.RUNNING)


def test_rolled_back_transaction_leaves_nothing_written(either: Any) -> None:
    with pytest.raises(RuntimeError, match="stop"), either.transaction():
        _write_everything(either)
        assert either.get_run("r1").status == Status.RUNNING  # reads see our own writes
        raise RuntimeError("stop")
    assert either.get_run("r1") is None
    assert either.list_stages("r1") == []
    assert either.list_logs("r1") == []
    assert either.list_events("r1") == []
    assert either.list_unpublished_events() == []
    assert either.list_annotations("r1") == []


def test_committed_transaction_writes_everything(either: Any) -> None:
    with either.transaction():
        _write_everything(either)
    assert either.get_run("r1").event_sequence == 1
    assert len(either.list_stages("r1")) == len(either.list_logs("r1")) == 1


def test_nested_transactions_join_the_outer_one(either: Any) -> None:
    with pytest.raises(RuntimeError), either.transaction():
        either.insert_run(make_run("r1"))
        with either.transaction():
            either.insert_run(make_run("r2"))
        raise RuntimeError("outer fails")
    assert either.get_run("r1") is None
    assert either.get_run("r2") is None

    with either.transaction():
        either.insert_run(make_run("r1"))
        with pytest.raises(RuntimeError), either.transaction():
            either.insert_run(make_run("r2"))
            raise RuntimeError("inner fails, outer catches it")
    # Only the outermost block commits or rolls back: the inner write stays.
    assert either.get_run("r1") is not None
    assert either.get_run("r2") is not None


def test_unpublished_listing_follows_publish_dlq_requeue_and_rollback(either: Any) -> None:
    either.insert_run(make_run("r1"))
    either.insert_run(make_run("r0"))
    e1 = either.append_event("r1", "a", {}, occurred_at=at(1))
    e2 = either.append_event("r0", "b", {}, occurred_at=at(2))
    e3 = either.append_event("r1", "c", {}, occurred_at=at(3))

    def pending(run_id: str | None = None) -> list[str]:
        return [e.id for e in either.list_unpublished_events(workflow_run_id=run_id)]

    either.mark_event_published(e1.id, at(10))
    either.record_event_failure(e3.id, "gone", 5, at(11))  # dead-lettered
    assert pending() == [e2.id]
    assert pending("r1") == []
    assert either.requeue_dlq_events([e3.id]) == 1
    assert pending() == [e2.id, e3.id]
    assert pending("r1") == [e3.id]
    with pytest.raises(RuntimeError), either.transaction():  # rolled back: still pending
        either.mark_event_published(e3.id, at(12))
        either.record_event_failure(e2.id, "gone", 5, at(12))
        either.append_event("r0", "d", {}, occurred_at=at(0))
        raise RuntimeError("boom")
    assert pending() == [e2.id, e3.id]
    assert pending("r0") == [e2.id]
    with pytest.raises(RuntimeError), either.transaction():  # a rolled-back requeue
        either.record_event_failure(e3.id, "gone", 5, at(13))
        either.requeue_dlq_events([e3.id])
        raise RuntimeError("boom")
    assert pending() == [e2.id, e3.id]
    either.mark_event_published(e2.id, at(14))
    either.mark_event_published(e3.id, at(14))
    assert pending() == []


def test_memory_unpublished_index_holds_exactly_the_pending_events() -> None:
    # The flush reads only this index (not every event ever written), so it must be exact.
    mem = InMemoryPersistence()
    mem.insert_run(make_run("r1"))
    events = [mem.append_event("r1", str(i), {}, occurred_at=at(i)) for i in range(4)]
    mem.mark_event_published(events[0].id, at(10))
    mem.record_event_failure(events[1].id, "gone", 5, at(10))
    mem.record_event_failure(events[2].id, "timeout", 1, None)
    assert set(mem._unpublished) == {events[2].id, events[3].id}
    with pytest.raises(RuntimeError), mem.transaction():
        mem.requeue_dlq_events([events[1].id])
        mem.record_event_failure(events[3].id, "gone", 5, at(11))
        raise RuntimeError("boom")
    assert set(mem._unpublished) == {events[2].id, events[3].id}
    mem.requeue_dlq_events([events[1].id])
    assert set(mem._unpublished) == {e.id for e in events[1:]}


def test_a_failing_call_outside_a_transaction_writes_nothing(either: Any) -> None:
    with pytest.raises(RunNotFoundError):
        either.append_event("missing", "x", {}, occurred_at=at(0))
    assert either.list_unpublished_events() == []


def test_uncommitted_writes_are_invisible_to_other_threads(store: SqlPersistence) -> None:
    seen: list[RunRecord | None] = []
    with store.transaction():
        store.insert_run(make_run("r1"))
        reader = threading.Thread(target=lambda: seen.append(store.get_run("r1")))
        reader.start()
        reader.join(timeout=30)
    assert seen == [None]
    assert store.get_run("r1") is not None


def test_transactions_are_per_thread(store: SqlPersistence) -> None:
    store.insert_run(make_run("shared"))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with store.transaction():
                store.insert_run(make_run(f"r{i}"))
                store.append_event("shared", "tick", {"i": i}, occurred_at=at(i))
                if i % 2:
                    raise RuntimeError("odd workers roll back")
        except RuntimeError:
            pass
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(r.id for r in store.list_runs()) == ["r0", "r2", "r4", "shared"]
    assert [e.sequence for e in store.list_events("shared")] == [1, 2, 3]
    assert sorted(e.payload["i"] for e in store.list_events("shared")) == [0, 2, 4]


# -- concurrency --------------------------------------------------------------------------


def _in_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_parallel_appends_get_gap_free_sequences(store: SqlPersistence) -> None:
    store.insert_run(make_run("r1"))
    per_thread = 5

    def append(i: int) -> list[int]:
        sequences = []
        for j in range(per_thread):
            if j % 2:
                with store.transaction():
                    e = store.append_event("r1", "e", {"i": i}, occurred_at=at(j))
            else:
                e = store.append_event("r1", "e", {"i": i}, occurred_at=at(j))
            sequences.append(e.sequence)
        return sequences

    results = _in_threads(8, append)
    assert not [r for r in results if isinstance(r, BaseException)], results
    returned = sorted(s for r in results for s in r)
    assert returned == list(range(1, 8 * per_thread + 1))
    assert [e.sequence for e in store.list_events("r1")] == returned
    assert store.get_run("r1").event_sequence == 8 * per_thread  # type: ignore[union-attr]


def test_parallel_claims_of_one_key_have_one_winner(store: SqlPersistence) -> None:
    results = _in_threads(
        8, lambda i: store.acquire_idempotency("key", "run.create", now=at(0), expires_at=at(60))
    )
    assert results.count(None) == 1, results
    losers = [r for r in results if r is not None]
    assert all(isinstance(r, IdempotencyInProgressError) for r in losers), losers
    store.complete_idempotency("key", "run.create", {"ok": True})
    replays = _in_threads(
        8, lambda i: store.acquire_idempotency("key", "run.create", now=at(1), expires_at=at(60))
    )
    assert all(r is not None and r.result == {"ok": True} for r in replays), replays


def _claim_in_process(url: str, barrier: Any, results: Any) -> None:
    """Runs in a spawned process: claims the key once the others are ready too."""
    with SqlPersistence(url) as proc_store:
        barrier.wait(timeout=60)
        try:
            got = proc_store.acquire_idempotency("key", "c", now=at(0), expires_at=at(60))
            results.put("won" if got is None else "replayed")
        except IdempotencyInProgressError:
            results.put("in_progress")
        except BaseException as err:
            results.put(f"error: {err!r}")


@pytest.mark.postgres
def test_processes_racing_for_a_key_have_one_winner(postgres_url: str) -> None:
    migrate(postgres_url)
    ctx = multiprocessing.get_context("spawn")
    count = 4
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(postgres_url, barrier, results))
        for _ in range(count)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(outcomes) == ["in_progress"] * (count - 1) + ["won"], outcomes


# -- errors -------------------------------------------------------------------------------


def _unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_postgres_names_the_database_not_the_password() -> None:
    url = f"postgresql://alice:s3cr3t-pw@127.0.0.1:{_unused_port()}/enginedb?connect_timeout=5"
    store = SqlPersistence(url)
    with pytest.raises(DatabaseUnavailableError) as info:
        store.get_run("r1")
    message = str(info.value)
    assert "enginedb" in message
    assert "127.0.0.1" in message
    assert "refused" in message.lower()
    assert "s3cr3t-pw" not in message
    assert info.value.retryable
    with pytest.raises(DatabaseUnavailableError):
        with store.transaction():
            pass
    with pytest.raises(DatabaseUnavailableError):
        migrate(url)


def test_unreachable_sqlite_file(tmp_path: Path) -> None:
    store = SqlPersistence(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(DatabaseUnavailableError, match=r"x\.db"):
        store.list_runs()


def test_missing_tables_say_how_to_migrate(db_url: str) -> None:
    store = SqlPersistence(db_url)
    with pytest.raises(MigrationsNotAppliedError) as info:
        store.insert_run(make_run("r1"))
    message = str(info.value)
    assert "wfe_workflow_runs" in message
    assert "airflow db migrate" in message
    assert "persistence.sql.migrate(url)" in message
    with pytest.raises(MigrationsNotAppliedError):
        store.check_schema()
    with pytest.raises(MigrationsNotAppliedError), store.transaction():
        store.list_stages("r1")
    migrate(db_url)
    store.check_schema()
    store.insert_run(make_run("r1"))
    store.close()


def test_create_tables_migrates(db_url: str) -> None:
    with SqlPersistence(db_url, create_tables=True) as created:
        created.check_schema()
        created.insert_run(make_run("r1"))
        assert created.get_run("r1") is not None


def test_database_errors_roll_back_and_are_typed(store: SqlPersistence) -> None:
    from airflow_workflow_engine.persistence.sql import DatabaseOperationError

    with pytest.raises(DatabaseOperationError) as info, store.transaction():
        store.insert_run(make_run("r1"))
        conn = store._current()
        assert conn is not None
        conn.execute(text("INSERT INTO wfe_workflow_runs (id) VALUES ('r2')"))  # NOT NULLs
    assert "wfe_workflow_runs" in str(info.value)
    assert not info.value.retryable  # a constraint violation will not heal by retrying
    assert store.get_run("r1") is None


# -- construction -------------------------------------------------------------------------


def test_urls_are_normalised() -> None:
    for raw in ("postgres://u:p@h/db", "postgresql://u:p@h/db"):
        assert normalize_url(raw).drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:////tmp/x.db").drivername == "sqlite"
    with pytest.raises(ValueError, match="in-memory SQLite"):
        make_engine("sqlite://")
    store = SqlPersistence("postgres://u:secret@h:1/db")
    assert "secret" not in repr(store)
    assert store.engine.url.drivername == "postgresql+psycopg"


def test_an_engine_can_be_passed_and_is_not_disposed(db_url: str) -> None:
    engine = create_engine(normalize_url(db_url))
    migrate(engine)
    with SqlPersistence(engine) as from_engine:
        from_engine.insert_run(make_run("r1"))
    with engine.connect() as conn:  # still usable
        assert conn.execute(text("SELECT count(*) FROM wfe_workflow_runs")).scalar_one() == 1
    assert "wfe_workflow_runs" in inspect(engine).get_table_names()
    engine.dispose()


def test_importing_the_package_does_not_import_sqlalchemy() -> None:
    code = (
        "import sys, airflow_workflow_engine.persistence.sql as s\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'\n"
        "assert 'alembic' not in sys.modules, 'alembic imported'\n"
        "assert callable(s.migrate) and s.SqlPersistence\n"
        "import airflow_workflow_engine.persistence.sql.migrate as m\n"
        "assert callable(s.migrate) and m.HEAD_REVISION\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.postgres
def test_a_pooled_connection_killed_while_idle_is_replaced(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping on every checkout any more: a connection is pinged only after sitting idle,
    and one the server dropped meanwhile is replaced instead of failing the call."""
    from airflow_workflow_engine.persistence.sql import engine as engine_module

    url = _fresh_url("postgres", request, tmp_path, migrated=True)
    with SqlPersistence(url) as store:
        store.insert_run(make_run("r1"))
        with store.engine.connect() as conn:  # the pool's only connection so far
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.dispose()
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        run = store.get_run("r1")
        assert run is not None and run.id == "r1"
        store.update_run("r1", priority=7)
        assert store.get_run("r1").priority == 7  # type: ignore[union-attr]
