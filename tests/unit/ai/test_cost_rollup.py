"""The AI-cost roll-up table (``wfe_ai_cost_rollup``) on SQLite and PostgreSQL: it equals the
ledger's aggregate after every write, the cost roll-ups read it and answer exactly as the full
scan of the ledger, and concurrent writers to one key lose no update."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, insert, select, text

from airflow_workflow_engine.ai.ledger import LedgerEntry, rollup_entries
from airflow_workflow_engine.ai.sql_ledger import SqlLedger
from airflow_workflow_engine.errors import MigrationsNotAppliedError
from airflow_workflow_engine.persistence.sql.tables import ai_calls, ai_cost_rollup
from tests.backends import BACKEND_MARKS, BACKENDS

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
MODELS = (("openai", "openai:gpt-5-mini"), ("openai", "openai:gpt-5"), ("google", "google:flash"))
DAGS = ("docs", "news", None)

SQL_BACKENDS = [
    pytest.param(name, marks=BACKEND_MARKS.get(name, []), id=name)
    for name in ("sqlite", "postgres")
]


@pytest.fixture(params=SQL_BACKENDS)
def ledger(request: pytest.FixtureRequest) -> Iterator[SqlLedger]:
    with BACKENDS[request.param](request) as store:
        sql_ledger = SqlLedger(store.engine)
        yield sql_ledger
        sql_ledger.close()


def entry(i: int, **fields: Any) -> LedgerEntry:
    """The i-th call of a spread over 4 days (hours apart), 3 models, 3 DAGs (one: none),
    with errors and unknown prices among them."""
    provider, model_key = MODELS[i % len(MODELS)]
    values: dict[str, Any] = {
        "call_type": "text",
        "provider": provider,
        "model_key": model_key,
        "created_at": T0 + timedelta(hours=5 * i, minutes=i),
        "dag_id": DAGS[(i // 2) % len(DAGS)],
        "workflow_run_id": f"r{i % 4}",
        "stage_id": "s",
        "attempt": 1,
        "input_tokens": 100 + i,
        "output_tokens": 10 + i % 7,
        "cached_tokens": i % 3,
        "cost": None if i % 5 == 0 else Decimal(i) / Decimal(1000),
        "status": "error" if i % 6 == 0 else "ok",
    }
    values.update(fields)
    return LedgerEntry(**values)


def seed(ledger: SqlLedger, n: int = 20) -> list[LedgerEntry]:
    entries = [entry(i) for i in range(n)]
    for e in entries:
        ledger.record(e)
    return entries


def table_rows(engine: Engine) -> list[tuple[Any, ...]]:
    t = ai_cost_rollup.c
    with engine.connect() as conn:
        rows = conn.execute(select(ai_cost_rollup).order_by(t.day, t.model_key, t.dag_id))
        return [(*r[:9], round(r.cost, 9), *r[10:]) for r in rows]


def ledger_aggregate(engine: Engine) -> list[tuple[Any, ...]]:
    """What the roll-up table must hold: the ledger grouped by its key, computed in Python."""
    with engine.connect() as conn:
        entries = [SqlLedger._entry(r) for r in conn.execute(select(ai_calls)).mappings()]
    rows = rollup_entries(entries, ("day", "model_key", "provider", "dag_id"))
    return sorted(
        (
            (
                r["day"],
                r["model_key"],
                r["provider"],
                r["dag_id"] or "",
                r.calls,
                r.errors,
                r.input_tokens,
                r.output_tokens,
                r.cached_tokens,
                round(float(r.cost), 9),
                r.unpriced_calls,
            )
            for r in rows
        ),
        key=lambda row: (row[0], row[1], row[3]),
    )


def test_the_table_equals_the_ledger_aggregate_after_every_write(ledger: SqlLedger) -> None:
    assert table_rows(ledger.engine) == []
    for i in range(12):
        ledger.record(entry(i))
        assert table_rows(ledger.engine) == ledger_aggregate(ledger.engine)
    ledger.record(entry(0, id=ledger.entries()[0].id))  # a re-recorded row adds nothing
    assert ledger.mark_failed("r1", "s", 1, "stage failed") > 0
    assert table_rows(ledger.engine) == ledger_aggregate(ledger.engine)
    with ledger.engine.connect() as conn:
        calls = conn.execute(select(func.sum(ai_cost_rollup.c.calls))).scalar_one()
    assert calls == 12


def test_the_ledger_row_and_its_roll_up_commit_together(ledger: SqlLedger) -> None:
    """One transaction: when the roll-up cannot be written, neither is the ledger row."""
    ledger.record(entry(1))
    with ledger.engine.begin() as conn:
        conn.execute(text("ALTER TABLE wfe_ai_cost_rollup RENAME TO wfe_ai_cost_rollup_away"))
    with pytest.raises(MigrationsNotAppliedError, match="wfe_ai_cost_rollup"):
        ledger.record(entry(2))
    with ledger.engine.begin() as conn:
        conn.execute(text("ALTER TABLE wfe_ai_cost_rollup_away RENAME TO wfe_ai_cost_rollup"))
    assert [e.id for e in ledger.entries()] == [entry_id(ledger, 1)]
    assert table_rows(ledger.engine) == ledger_aggregate(ledger.engine)


def entry_id(ledger: SqlLedger, input_tokens_offset: int) -> str:
    [found] = [e.id for e in ledger.entries() if e.input_tokens == 100 + input_tokens_offset]
    return found


def test_rebuild_repairs_rows_written_without_the_roll_up(ledger: SqlLedger) -> None:
    """A worker of an older version wrote ledger rows alone after the migration."""
    seed(ledger, 10)
    old_worker = [entry(i) for i in range(10, 16)]
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(ai_calls),
            [
                {**e.model_dump(), "cost": None if e.cost is None else float(e.cost)}
                for e in old_worker
            ],
        )
    assert table_rows(ledger.engine) != ledger_aggregate(ledger.engine)
    assert ledger.rebuild_rollup() == len(ledger_aggregate(ledger.engine))
    assert table_rows(ledger.engine) == ledger_aggregate(ledger.engine)
    ledger.record(entry(16))  # and it keeps up from there
    assert table_rows(ledger.engine) == ledger_aggregate(ledger.engine)


WINDOWS = [
    (None, None),
    (T0 + timedelta(days=1), None),  # from a UTC midnight
    (None, T0 + timedelta(days=3)),
    (T0 + timedelta(days=1), T0 + timedelta(days=3)),  # whole days only
    (T0 + timedelta(hours=13), None),  # a partial first day
    (None, T0 + timedelta(days=2, hours=7)),  # a partial last day
    (T0 + timedelta(hours=13), T0 + timedelta(days=2, hours=7)),  # both
    (T0 + timedelta(hours=3), T0 + timedelta(hours=20)),  # within one day
    (T0 + timedelta(hours=20), T0 + timedelta(days=1, hours=5)),  # across one midnight
    (datetime(2026, 3, 1, 14, 30), datetime(2026, 3, 3, 9)),  # naive: UTC
    (
        datetime(2026, 3, 2, 1, tzinfo=timezone(timedelta(hours=5))),  # 20:00 UTC on Mar 1
        datetime(2026, 3, 3, 23, tzinfo=timezone(timedelta(hours=-2))),
    ),
]
DIMENSIONS = [
    ("model", "day"),
    ("dag",),
    ("day",),
    (),
    ("provider",),
    ("day", "model", "provider", "dag"),
]


@pytest.mark.parametrize("dag_ids", [None, {"docs"}, {"docs", "news"}, set()])
def test_rollups_from_the_table_equal_the_full_scan(
    ledger: SqlLedger, dag_ids: set[str] | None
) -> None:
    entries = seed(ledger)
    for since, until in WINDOWS:
        for dims in DIMENSIONS:
            fast = ledger.rollup(dims, since=since, until=until, dag_ids=dag_ids)
            scan = ledger.scan_rollup(dims, since=since, until=until, dag_ids=dag_ids)
            assert fast == scan, (dims, since, until)
            lo = since.replace(tzinfo=since.tzinfo or timezone.utc) if since else None
            hi = until.replace(tzinfo=until.tzinfo or timezone.utc) if until else None
            kept = [
                e
                for e in entries
                if (lo is None or e.created_at >= lo)
                and (hi is None or e.created_at < hi)
                and (dag_ids is None or e.dag_id in dag_ids)
            ]
            expected = rollup_entries(kept, tuple(ledger_dims(dims)))
            assert fast == expected, (dims, since, until)


def ledger_dims(dims: tuple[str, ...]) -> list[str]:
    from airflow_workflow_engine.ai.ledger import normalize_group_by

    return list(normalize_group_by(dims))


def test_unknown_prices_and_calls_without_a_dag_survive_the_table(ledger: SqlLedger) -> None:
    for cost in (None, None, Decimal("0.25")):
        ledger.record(entry(0, cost=cost, dag_id=None))
    [row] = ledger.rollup(("dag", "day"))
    assert (row["dag_id"], row["day"], row.calls, row.unpriced_calls, row.cost) == (
        None,
        date(2026, 3, 1),
        3,
        2,
        Decimal("0.25"),
    )


def test_the_cost_rollups_read_the_table(ledger: SqlLedger) -> None:
    """Whole days come from wfe_ai_cost_rollup, not the ledger: emptying the table empties
    them, while roll-ups the table cannot answer (per run) still scan the ledger."""
    seed(ledger)
    with ledger.engine.begin() as conn:
        conn.execute(delete(ai_cost_rollup))
    assert ledger.rollup(("model",)) == []
    assert ledger.rollup(("dag",), since=T0 + timedelta(days=1)) == []
    assert ledger.rollup((), until=T0 + timedelta(days=3)) == []
    assert ledger.rollup(("run",)) != []
    assert ledger.rollup(("model",), workflow_run_id="r1") != []
    # A partial first day is read from the ledger.
    assert ledger.rollup(("model",), since=T0 + timedelta(days=3, hours=1)) != []


@pytest.mark.parametrize("backend", SQL_BACKENDS)
def test_eight_concurrent_writers_to_one_key_lose_no_update(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """8 threads, each with its own engine (own connections and transactions), add calls to
    the same (day, model, provider, DAG) row at once."""
    writers, per_writer = 8, 25
    with BACKENDS[backend](request) as store:
        url = store.engine.url.render_as_string(hide_password=False)
        barrier = threading.Barrier(writers)
        errors: list[BaseException] = []

        def write(w: int) -> None:
            own = SqlLedger(url)
            try:
                barrier.wait()
                for i in range(per_writer):
                    own.record(
                        entry(
                            1,
                            id=f"w{w}-{i}",
                            created_at=T0 + timedelta(seconds=w * per_writer + i),
                            cost=Decimal("0.001") if i % 4 else None,
                            input_tokens=w + i,
                        )
                    )
            except BaseException as err:
                errors.append(err)
            finally:
                own.close()

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert errors == []
        rows = table_rows(store.engine)
        assert rows == ledger_aggregate(store.engine)
        [row] = rows
        assert row[4] == writers * per_writer  # calls
        assert row[10] == writers * ((per_writer + 3) // 4)  # unpriced


def test_an_empty_dag_id_is_no_dag() -> None:
    """The roll-up keys calls without a DAG as ''; the ledger never holds '' itself."""
    assert entry(1, dag_id="").dag_id is None
