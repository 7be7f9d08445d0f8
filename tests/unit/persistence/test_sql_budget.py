"""How many SQL statements and round trips the kernel costs on SQLite and PostgreSQL.

Counts, not times: ``SqlCounter`` listens to the engine (statements through a cursor; on
PostgreSQL also psycopg's BEGIN, each COMMIT/ROLLBACK that sends something, and pool pings).
The workload is ``benchmarks/kernel_lifecycle.py``'s: a 5-stage run (``stage1 -> [stage2a ||
stage2b] -> stage3 -> stage4``) driven by ``run.create`` (with an idempotency key, as Airflow
dispatches it), ``run.claimPending``, {``job.execute``, ``run.transition``} per stage and
``outbox.flush``, on ``SqlPersistence`` with a ``SqlLedger`` sharing its engine (as the
provider builds the kernel). Issue 11's budget: at most 12 statements per stage of a whole
run; at most 15 round trips per stage completion (``job.execute``) on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_workflow_engine.ai.sql_ledger import SqlLedger
from airflow_workflow_engine.blob.memory import InMemoryBlobStore
from airflow_workflow_engine.kernel.kernel import DictRegistry, create_kernel
from airflow_workflow_engine.persistence.sql import SqlPersistence, migrate
from airflow_workflow_engine.testing.adapters import (
    CollectingEventSink,
    InMemoryJobTransport,
    NoopScheduler,
)
from airflow_workflow_engine.testing.sql_counter import SqlCounter, drive_run, five_stage_workflow

pytest_plugins = ["tests.postgres_fixtures"]

STAGES = 5
#: Issue 11's target is 12 per stage (60 per run). Measured: PostgreSQL 50; SQLite 57 (an
#: event is one INSERT, with migration 0005's trigger, except the 7 that also change run
#: columns: an UPDATE ... RETURNING and the INSERT). The outcome transaction reads the AI
#: totals with the run (5 statements less on both). Before: 55 and 68; originally 163.
STATEMENTS_PER_STAGE = {"sqlite": 11.4, "postgresql": 10.0}
#: Issue 11's target (measured: 11; before this change 37).
ROUND_TRIPS_PER_COMPLETION = 15


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlPersistence]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wfe.db'}"
        migrate(url)
    else:
        server = request.getfixturevalue("postgres_server")
        name = server.create_database_from("migrated", migrate)
        request.addfinalizer(lambda: server.drop_database(name))
        url = server.url(name)
    with SqlPersistence(url) as sql_store:
        yield sql_store


def _counted_run(store: SqlPersistence) -> tuple[SqlCounter, Any]:
    queue = InMemoryJobTransport()
    sink = CollectingEventSink()
    kernel = create_kernel(
        persistence=store,
        ledger=SqlLedger(store.engine),
        blob_store=InMemoryBlobStore(),
        job_transport=queue,
        event_sink=sink,
        scheduler=NoopScheduler(),
        registry=DictRegistry([five_stage_workflow()]),
    )
    # A first run warms the pool (its connections' first-use queries are not the budget's).
    drive_run(kernel, queue, SqlCounter(store.engine), "bench", {"x": 0}, idempotency_key="k0")
    sink.events.clear()
    with SqlCounter(store.engine, keep_sql=True) as counter:
        run_id = drive_run(kernel, queue, counter, "bench", {"x": 0}, idempotency_key="k1")
    run = kernel.require_run(run_id)
    # The semantics the counts must not cost: a finished run, every event published once,
    # with gap-free sequences.
    assert run.status.value == "COMPLETED" and run.output == {"x": 4}
    events = store.list_events(run_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert all(e.published_at is not None for e in events)
    assert sorted(e.id for e in sink.events) == sorted(e.id for e in events)
    return counter, kernel


def test_statements_per_stage_of_a_whole_run(store: SqlPersistence) -> None:
    counter, _ = _counted_run(store)
    per_stage = counter.total.statements / STAGES
    detail = {label: c.statements for label, c in counter.by_label.items()}
    assert per_stage <= STATEMENTS_PER_STAGE[store.engine.dialect.name], detail
    # Every event of the run is one INSERT (PostgreSQL; on SQLite too when it changes no
    # other run column, else an UPDATE ... RETURNING and an INSERT); never a read-back of the
    # sequence.
    assert not any("SELECT wfe_workflow_runs.event_sequence" in s for s in counter.total.sql)
    inserts = [s for s in counter.total.sql if "INSERT INTO wfe_outbox_events" in s]
    assert len(inserts) == 13
    if store.engine.dialect.name == "sqlite":
        bumps = [s for s in counter.total.sql if s.startswith("UPDATE wfe_workflow_runs")]
        assert sum("event_sequence=(wfe_workflow_runs" in s for s in bumps) == 7
    # outbox.flush marks the run's 13 events published in one statement.
    assert counter.by_label["outbox.flush"].statements == 2


@pytest.mark.postgres
@pytest.mark.parametrize(
    "store", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_round_trips_per_stage_completion_on_postgres(store: SqlPersistence) -> None:
    counter, _ = _counted_run(store)
    completions = counter.by_label["job.execute"]
    per_completion = completions.round_trips / STAGES
    assert per_completion <= ROUND_TRIPS_PER_COMPLETION, completions
    # No pool ping on a hot connection, no transaction of the ledger's own: 2 per stage.
    assert completions.transactions == 2 * STAGES
    # The outcome transaction's AI totals come with its read of the run, never on their own.
    assert completions.sql
    assert not any(s.startswith("SELECT sum(wfe_ai_calls.cost)") for s in completions.sql)
