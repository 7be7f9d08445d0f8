"""SQL persistence figures on SQLite and PostgreSQL: stage completions, run.create, ledger roll-ups.

    .venv/bin/python benchmarks/persistence.py [--stages 500] [--threads 8]
        [--stages-per-thread 100] [--creates 500] [--ledger-rows 1000000]
        [--backends sqlite,postgres] [--pg-fast] [--floor]

For each database it measures, through a real kernel on ``SqlPersistence``:

* SQL statements and round trips (``airflow_workflow_engine.testing.sql_counter``): per stage
  completion of the timed workload, and per command of one whole 5-stage run (the drive of
  ``benchmarks/kernel_lifecycle.py``: ``run.create`` with an idempotency key,
  ``run.claimPending``, {``job.execute``, ``run.transition``} per stage, ``outbox.flush``);
* a plain SQLAlchemy loop on the same engine, one transaction with one INSERT and one
  UPDATE per completion, run before and after the kernel's single-thread stage completions;
  the ratio of the two rates is issue 11's "within 3x of the practical SQL limit" (>= 0.33);
* with ``--floor``, the floor under that ratio: the exact SQL of one real completion (same
  statements, same two transactions, the parameters it sent, fresh run and row ids) replayed
  without the kernel and the store, through raw DBAPI, ``exec_driver_sql`` and the store's
  prebuilt Core statements, each against the same plain loop;
* stage completions per second: ``job.execute`` of one-stage runs that were created and
  claimed beforehand (not timed), so each timed dispatch is the RUNNING transaction, the
  trivial stage body (one annotation, a small output) and the outcome transaction (stage
  update, annotation, outbox events, cost totals read from the ``SqlLedger``); once from one
  thread, once from ``--threads`` threads that each execute their own runs' jobs;
* ``run.create`` per second, without and with an idempotency key (as Airflow dispatches it);
* the AI cost ledger: synthetic ``wfe_ai_calls`` rows bulk-inserted (``executemany`` in
  50,000-row transactions with a 256 MiB page cache on SQLite, ``COPY`` on PostgreSQL), then
  ``SqlLedger.scan_rollup(("model_key", "day"))`` (the full ``GROUP BY``; the roll-up table is
  ``benchmarks/cost_rollups.py``) over all of them, and over the last 7 days, with
  the indexes the migrations create.

SQLite runs on a file in a temporary directory with the engine's own settings (WAL,
``synchronous=NORMAL``). PostgreSQL runs on a throwaway cluster on 127.0.0.1 (the helpers of
``tests/postgres_fixtures.py``) with PostgreSQL's default durability (``fsync``,
``synchronous_commit`` and ``full_page_writes`` on); ``--pg-fast`` keeps the test fixture's
settings instead (all three off). The cluster is stopped and removed at the end. Progress goes
to stderr, figures to stdout. ``--threads 0``, ``--creates 0`` and ``--ledger-rows 0`` skip
those parts.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    event,
    func,
    select,
    text,
)

from airflow_workflow_engine import WorkflowBuilder, define_stage
from airflow_workflow_engine.ai.sql_ledger import SqlLedger
from airflow_workflow_engine.blob.memory import InMemoryBlobStore
from airflow_workflow_engine.definitions.workflow import Workflow
from airflow_workflow_engine.kernel.commands import JobExecute, RunClaimPending, RunCreate
from airflow_workflow_engine.kernel.kernel import DictRegistry, Kernel, create_kernel
from airflow_workflow_engine.persistence.sql import SqlPersistence, migrate
from airflow_workflow_engine.persistence.sql.engine import BEGIN_MODE_OPTION
from airflow_workflow_engine.persistence.sql.tables import annotations_table
from airflow_workflow_engine.testing.adapters import (
    CollectingEventSink,
    InMemoryJobTransport,
    NoopScheduler,
)
from airflow_workflow_engine.testing.sql_counter import SqlCounter, drive_run, five_stage_workflow

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # for tests.postgres_fixtures
    sys.path.insert(0, str(REPO))

WORKFLOW_ID = "bench-persistence"
STAGE_ID = "only"
#: Columns the synthetic ledger rows fill; the others stay NULL (prompt, response, ...).
LEDGER_COLUMNS = (
    "id",
    "created_at",
    "topic",
    "call_type",
    "provider",
    "model_key",
    "model_id",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost",
    "cost_source",
    "latency_ms",
    "status",
    "error",
    "workflow_run_id",
    "stage_id",
    "attempt",
    "dag_id",
    "task_id",
)
#: (provider, model key, USD per input token, USD per output token)
MODELS = (
    ("openai", "gpt-4.1", 2.0e-6, 8.0e-6),
    ("openai", "gpt-4.1-mini", 0.4e-6, 1.6e-6),
    ("openai", "gpt-4.1-nano", 0.1e-6, 0.4e-6),
    ("openai", "o4-mini", 1.1e-6, 4.4e-6),
    ("openai", "text-embedding-3-small", 0.02e-6, 0.0),
    ("google", "gemini-2.5-pro", 1.25e-6, 10.0e-6),
    ("google", "gemini-2.5-flash", 0.3e-6, 2.5e-6),
    ("google", "gemini-2.5-flash-lite", 0.1e-6, 0.4e-6),
    ("google", "gemini-embedding-001", 0.15e-6, 0.0),
    ("anthropic", "claude-sonnet-4", 3.0e-6, 15.0e-6),
    ("anthropic", "claude-haiku-3.5", 0.8e-6, 4.0e-6),
    ("anthropic", "claude-opus-4", 15.0e-6, 75.0e-6),
)
CALL_TYPES = ("text", "text", "text", "object", "object", "embed", "stream", "batch")
#: SQLAlchemy's storage format for DateTime on SQLite (naive UTC, as UTCDateTime stores it).
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
SQLITE_LOAD_CACHE_KIB = 256 * 1024


# -- output --------------------------------------------------------------------------------


class Progress:
    """Prints ``label: done/total`` to stderr at most every ``every`` seconds, then a last line."""

    def __init__(self, label: str, total: int, every: float = 2.0) -> None:
        self.label = label
        self.total = total
        self.every = every
        self.done = 0
        self._start = time.perf_counter()
        self._last = self._start
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.perf_counter()
            if now - self._last >= self.every and self.done < self.total:
                self._last = now
                self._print(now)

    def _print(self, now: float) -> None:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        elapsed = now - self._start
        print(
            f"  .. {self.label}: {self.done:,}/{self.total:,} ({pct:.0f}%, {elapsed:.0f} s)",
            file=sys.stderr,
            flush=True,
        )

    def finish(self) -> None:
        self._print(time.perf_counter())


def step(message: str) -> None:
    print(f"-- {message}", file=sys.stderr, flush=True)


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return f"load average {os.getloadavg()[0]:.2f}"
    except OSError:
        return "load average unknown"


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def percentile_ms(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    index = min(len(ordered) - 1, round(q * (len(ordered) - 1)))
    return 1000.0 * ordered[index]


# -- the workflow and the kernel -----------------------------------------------------------


class Doc(BaseModel):
    text: str


def _only(ctx: Any) -> dict[str, str]:
    ctx.annotate("bench.length", len(ctx.input.text))
    return {"text": ctx.input.text.upper()}


def build_workflow() -> Workflow:
    only = define_stage(id=STAGE_ID, input=Doc, output=Doc, execute=_only)
    builder = WorkflowBuilder(WORKFLOW_ID, "Persistence bench", None, input=Doc, output=Doc)
    return builder.pipe(only).build()


def build_kernel(store: SqlPersistence, workflow: Workflow) -> Kernel:
    """A kernel on ``store`` and a ``SqlLedger`` sharing its pool, as the provider builds it;
    the system clock; the other ports in memory. Phase 3 reads the ledger's totals."""
    return create_kernel(
        persistence=store,
        ledger=SqlLedger(store.engine),
        blob_store=InMemoryBlobStore(),
        job_transport=InMemoryJobTransport(),
        event_sink=CollectingEventSink(),
        scheduler=NoopScheduler(),
        registry=DictRegistry([workflow]),
    )


def prepare_runs(kernel: Kernel, count: int, tag: str, progress: Progress) -> list[str]:
    """Creates and claims ``count`` runs: each has its stage row PENDING and a job queued."""
    run_ids = []
    for i in range(count):
        created = kernel.dispatch(RunCreate(workflow_id=WORKFLOW_ID, input={"text": f"{tag} {i}"}))
        kernel.dispatch(RunClaimPending(workflow_run_id=created.workflow_run_id))
        run_ids.append(created.workflow_run_id)
        progress.add()
    return run_ids


def execute_stages(kernel: Kernel, run_ids: list[str], progress: Progress | None) -> list[float]:
    """Dispatches ``job.execute`` for each run's stage; returns each dispatch's latency."""
    latencies = []
    for run_id in run_ids:
        start = time.perf_counter()
        result = kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id=STAGE_ID))
        latencies.append(time.perf_counter() - start)
        if result.outcome != "completed":
            raise RuntimeError(f"stage of run {run_id} ended {result.outcome}: {result.error}")
        if progress is not None:
            progress.add()
    return latencies


# -- measurements --------------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    version: str = ""
    notes: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)

    def put(self, name: str, value: str) -> None:
        self.values[name] = value
        print(f"  {name}: {value}", flush=True)


def count_annotations(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(annotations_table)).scalar_one())


def bench_single_writer(store: SqlPersistence, kernel: Kernel, n: int, figures: Figures) -> float:
    step(f"{figures.backend}: preparing {n:,} runs (create + claim, not timed)")
    progress = Progress("prepared", n)
    run_ids = prepare_runs(kernel, n, "single", progress)
    progress.finish()
    before = count_annotations(store.engine)
    step(f"{figures.backend}: job.execute x {n:,}, one thread")
    progress = Progress("stages completed", n)
    start = time.perf_counter()
    latencies = execute_stages(kernel, run_ids, progress)
    elapsed = time.perf_counter() - start
    progress.finish()
    assert count_annotations(store.engine) - before == n, "an annotation went missing"
    figures.put(
        "stage completions/s, 1 thread",
        f"{per_second(n, elapsed):,.0f} ({n:,} stages in {elapsed:.2f} s; "
        f"p50 {percentile_ms(latencies, 0.5):.1f} ms, p95 {percentile_ms(latencies, 0.95):.1f} ms)",
    )
    return per_second(n, elapsed)


# -- statements, round trips and the plain loop ----------------------------------------------


def bench_counts(store: SqlPersistence, kernel: Kernel, figures: Figures) -> None:
    """Statements and round trips per command: one stage completion of the timed workload,
    and one whole 5-stage run (the drive of benchmarks/kernel_lifecycle.py)."""
    step(f"{figures.backend}: counting statements and round trips")
    run_ids = prepare_runs(kernel, 11, "counted", Progress("prepared", 11))
    execute_stages(kernel, run_ids[:1], Progress("warm", 1))
    with SqlCounter(store.engine) as counter, counter.label("job.execute"):
        execute_stages(kernel, run_ids[1:], Progress("counted", 10))
    one = counter.by_label["job.execute"]
    figures.put(
        "per stage completion (job.execute, 1 annotation)",
        f"{one.statements / 10:.1f} statements, {one.round_trips / 10:.1f} round trips, "
        f"{one.transactions / 10:.1f} transactions",
    )
    queue = InMemoryJobTransport()
    five = create_kernel(
        persistence=store,
        ledger=SqlLedger(store.engine),
        blob_store=InMemoryBlobStore(),
        job_transport=queue,
        event_sink=CollectingEventSink(),
        scheduler=NoopScheduler(),
        registry=DictRegistry([five_stage_workflow()]),
    )
    drive_run(five, queue, SqlCounter(store.engine), "bench", {"x": 0}, idempotency_key="warm")
    with SqlCounter(store.engine) as counter:
        run_id = drive_run(five, queue, counter, "bench", {"x": 0}, idempotency_key="counted")
    assert five.require_run(run_id).output == {"x": 4}
    total = counter.total
    figures.put(
        "whole 5-stage run, per stage",
        f"{total.statements / 5:.1f} statements, {total.round_trips / 5:.1f} round trips "
        f"({total.statements} and {total.round_trips} per run, {total.transactions} transactions)",
    )
    for label, c in counter.by_label.items():
        times = 5 if label in ("job.execute", "run.transition") else 1
        each = (
            f", {c.statements / times:.1f} / {c.round_trips / times:.1f} each" if times > 1 else ""
        )
        figures.put(
            f"  {label} (x{times})",
            f"{c.statements} statements, {c.round_trips} round trips{each}",
        )


PLAIN = Table(
    "bench_plain_stages",
    MetaData(),
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("output", JSON),
    Column("updated_at", DateTime(timezone=True)),
)
PLAIN_EVENTS = Table(
    "bench_plain_events",
    MetaData(),
    Column("id", String(32), primary_key=True),
    Column("stage_id", String(32), nullable=False),
    Column("type", String(32), nullable=False),
    Column("payload", JSON),
)


def bench_plain_loop(engine: Engine, n: int, figures: Figures) -> float:
    """The practical limit: per completion one transaction with one INSERT (an event) and one
    UPDATE (the stage row), SQLAlchemy Core on the same engine."""
    step(f"{figures.backend}: plain SQLAlchemy loop, INSERT + UPDATE x {n:,}")
    for table in (PLAIN, PLAIN_EVENTS):
        table.create(engine, checkfirst=True)
    ids = [f"{i:032x}" for i in range(n)]
    with engine.begin() as conn:
        conn.execute(PLAIN.insert(), [{"id": i, "status": "RUNNING"} for i in ids])
    insert_event = PLAIN_EVENTS.insert()
    start = time.perf_counter()
    for i in ids:
        with engine.begin() as conn:
            conn.execute(
                insert_event, {"id": f"e{i[1:]}", "stage_id": i, "type": "completed", "payload": {}}
            )
            conn.execute(
                PLAIN.update()
                .where(PLAIN.c.id == i)
                .values(
                    status="COMPLETED", output={"text": i}, updated_at=datetime.now(timezone.utc)
                )
            )
    elapsed = time.perf_counter() - start
    for table in (PLAIN_EVENTS, PLAIN):
        table.drop(engine)
    rate = per_second(n, elapsed)
    figures.put("plain INSERT + UPDATE loop/s, 1 thread", f"{rate:,.0f} ({n:,} in {elapsed:.2f} s)")
    return rate


# -- the floor: the same SQL without the kernel and the store -------------------------------

_HEX_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Captured:
    """One stage completion's SQL as the engine saw it, one list per transaction.

    ``driver``: ``(sql, parameters)`` as sent to the DBAPI cursor (SQLite's ``BEGIN
    IMMEDIATE`` included); ``core``: ``(statement, parameters)`` as given to
    ``Connection.execute`` (SQLAlchemy objects and Python values)."""

    run_id: str
    driver: list[list[tuple[str, Any]]] = field(default_factory=list)
    core: list[list[tuple[Any, dict[str, Any]]]] = field(default_factory=list)


def capture_completion(store: SqlPersistence, kernel: Kernel, run_id: str) -> Captured:
    """Dispatches ``job.execute`` for ``run_id`` and records its statements."""
    engine = store.engine
    got = Captured(run_id, [[]], [[]])

    def on_execute(conn: Any, elem: Any, multi: Any, params: Any, options: Any) -> None:
        del conn, options
        got.core[-1].append((elem, dict(params or (multi[0] if multi else {}))))

    # SQLAlchemy's event signature, positional.
    def on_cursor(conn: Any, cursor: Any, sql: str, params: Any, ctx: Any, many: bool) -> None:  # noqa: PLR0917
        del conn, cursor, ctx
        assert not many, "a completion sends no executemany"
        got.driver[-1].append((sql, params))

    def on_commit(conn: Any) -> None:
        del conn
        got.driver.append([])
        got.core.append([])

    listeners = [
        ("before_execute", on_execute),
        ("before_cursor_execute", on_cursor),
        ("commit", on_commit),
    ]
    for name, fn in listeners:
        event.listen(engine, name, fn)
    try:
        execute_stages(kernel, [run_id], None)
    finally:
        for name, fn in listeners:
            event.remove(engine, name, fn)
    got.driver = [tx for tx in got.driver if tx]
    got.core = [tx for tx in got.core if tx]
    if len(got.driver) != 2 or len(got.core) != 2:
        raise RuntimeError(f"expected 2 transactions, got {len(got.driver)}")
    return got


def _template(params: Any, run_id: str) -> Callable[[str], Any]:
    """``params`` for another run: its run id in place of ``run_id``, fresh 32-hex ids (event
    and annotation ids) in place of the others; everything else as captured."""
    if isinstance(params, dict):
        keys = list(params)
        values = [params[k] for k in keys]
    else:
        keys = []
        values = list(params)
    run_at = [i for i, v in enumerate(values) if v == run_id]
    new_at = [
        i
        for i, v in enumerate(values)
        if isinstance(v, str) and v != run_id and _HEX_ID.fullmatch(v)
    ]

    def make(run: str) -> Any:
        out = list(values)
        for i in run_at:
            out[i] = run
        for i in new_at:
            out[i] = uuid.uuid4().hex
        return dict(zip(keys, out, strict=True)) if keys else tuple(out)

    return make


def _floor_raw(store: SqlPersistence, got: Captured, run_ids: list[str]) -> float:
    """The captured SQL through the DBAPI connection itself (one connection held)."""
    txs = [[(sql, _template(p, got.run_id)) for sql, p in tx] for tx in got.driver]
    raw = store.engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        assert dbapi is not None
        start = time.perf_counter()
        for run in run_ids:
            for tx in txs:
                cursor = dbapi.cursor()
                for sql, make in tx:
                    cursor.execute(sql, make(run))
                    if cursor.description is not None:
                        cursor.fetchall()
                cursor.close()
                dbapi.commit()
        elapsed = time.perf_counter() - start
    finally:
        raw.close()
    return elapsed


def _begin_mode(store: SqlPersistence) -> dict[str, Any]:
    """The execution options of the store's write transactions (SQLite: BEGIN IMMEDIATE)."""
    return {BEGIN_MODE_OPTION: "IMMEDIATE"} if store.engine.dialect.name == "sqlite" else {}


def _replay_pooled(
    store: SqlPersistence,
    txs: list[list[tuple[Any, Callable[[str], Any]]]],
    run_ids: list[str],
    send: Callable[[Connection, Any, Any], Any],
) -> float:
    """Replays ``txs`` for each run, a pooled connection and transaction per transaction as
    the store opens them; ``send(conn, statement, parameters)`` executes one statement."""
    engine, options = store.engine, _begin_mode(store)
    start = time.perf_counter()
    for run in run_ids:
        for tx in txs:
            with engine.connect() as conn:
                conn.execution_options(**options)
                with conn.begin():
                    for statement, make in tx:
                        result = send(conn, statement, make(run))
                        if result.returns_rows:
                            result.all()
    return time.perf_counter() - start


def _floor_driver_sql(store: SqlPersistence, got: Captured, run_ids: list[str]) -> float:
    """The captured SQL through ``Connection.exec_driver_sql`` (no compilation, no type
    processing)."""
    txs = [
        [(sql, _template(p, got.run_id)) for sql, p in tx if not sql.startswith("BEGIN")]
        for tx in got.driver
    ]
    return _replay_pooled(store, txs, run_ids, Connection.exec_driver_sql)


def _floor_core(store: SqlPersistence, got: Captured, run_ids: list[str]) -> float:
    """The store's own prebuilt statements through ``Connection.execute`` with the Python
    values the store passed (compiled-cache lookups, bind and result processors); no record
    building."""
    txs = [[(elem, _template(p, got.run_id)) for elem, p in tx] for tx in got.core]
    return _replay_pooled(store, txs, run_ids, Connection.execute)


FLOORS: dict[str, Callable[[SqlPersistence, Captured, list[str]], float]] = {
    "raw DBAPI": _floor_raw,
    "exec_driver_sql": _floor_driver_sql,
    "Core, prebuilt": _floor_core,
}


def _check_replayed(store: SqlPersistence, run_id: str, events: int) -> None:
    stage = store.get_stage(run_id, STAGE_ID)
    assert stage is not None and stage.status.value == "COMPLETED", stage
    sequences = [e.sequence for e in store.list_events(run_id)]
    assert sequences == list(range(1, events + 1)), sequences


def bench_floor(
    store: SqlPersistence, kernel: Kernel, n: int, plain: list[float], figures: Figures
) -> None:
    """The floor: one completion's exact SQL (same statements, same two transactions, the
    parameters one real completion sent, with fresh run and row ids) replayed ``n`` times
    without the kernel and the store, three ways, against the plain loop."""
    step(f"{figures.backend}: floor, preparing {3 * n + 1:,} runs (create + claim, not timed)")
    progress = Progress("prepared", 3 * n + 1)
    run_ids = prepare_runs(kernel, 3 * n + 1, "floor", progress)
    progress.finish()
    got = capture_completion(store, kernel, run_ids[0])
    events = len(store.list_events(run_ids[0]))
    statements = sum(not sql.startswith("BEGIN") for tx in got.driver for sql, _ in tx)
    figures.put(
        "floor: statements replayed per completion",
        f"{statements} in {len(got.driver)} transactions",
    )
    rates = {}
    for i, (name, replay) in enumerate(FLOORS.items()):
        batch = run_ids[1 + i * n : 1 + (i + 1) * n]
        step(f"{figures.backend}: floor, {name} x {n:,}")
        elapsed = replay(store, got, batch)
        _check_replayed(store, batch[-1], events)
        rates[name] = per_second(n, elapsed)
    plain.append(bench_plain_loop(store.engine, n, figures))
    mean = statistics.mean(plain)
    for name, rate in rates.items():
        figures.put(
            f"floor: {name} completions/s",
            f"{rate:,.0f} (/ plain loop: {rate / mean:.2f}; {1e6 / rate:,.0f} us each)",
        )


def bench_concurrent(
    store: SqlPersistence, kernel: Kernel, threads: int, per_thread: int, figures: Figures
) -> None:
    total = threads * per_thread
    step(
        f"{figures.backend}: {threads} threads prepare {per_thread:,} runs each (not timed), "
        "then execute their own runs' jobs"
    )
    prepared = Progress("prepared", total)
    executed = Progress("stages completed", total)
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            run_ids = prepare_runs(kernel, per_thread, f"thread {index}", prepared)
        except BaseException as err:
            errors.append(err)
            run_ids = []
        ready.wait()
        go.wait()
        try:
            latencies[index] = execute_stages(kernel, run_ids, executed)
        except BaseException as err:
            errors.append(err)

    before = count_annotations(store.engine)
    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()
    prepared.finish()
    start = time.perf_counter()
    go.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    executed.finish()
    if errors:
        raise RuntimeError(f"{len(errors)} thread(s) failed; first: {errors[0]!r}") from errors[0]
    assert count_annotations(store.engine) - before == total, "an annotation went missing"
    flat = [x for per in latencies for x in per]
    figures.put(
        f"stage completions/s, {threads} threads",
        f"{per_second(total, elapsed):,.0f} ({total:,} stages in {elapsed:.2f} s; "
        f"p50 {percentile_ms(flat, 0.5):.1f} ms, p95 {percentile_ms(flat, 0.95):.1f} ms)",
    )


def bench_run_create(kernel: Kernel, n: int, figures: Figures) -> None:
    for keyed in (False, True):
        what = "run.create with idempotency key" if keyed else "run.create"
        step(f"{figures.backend}: {what} x {n:,}, one thread")
        progress = Progress(what, n)
        start = time.perf_counter()
        for i in range(n):
            key = f"bench_dag/run_{i}" if keyed else None
            kernel.dispatch(
                RunCreate(workflow_id=WORKFLOW_ID, input={"text": f"doc {i}"}, idempotency_key=key)
            )
            progress.add()
        elapsed = time.perf_counter() - start
        progress.finish()
        figures.put(f"{what}/s", f"{per_second(n, elapsed):,.0f} ({n:,} in {elapsed:.2f} s)")


# -- the ledger ----------------------------------------------------------------------------


def ledger_rows(count: int, days: int, now: datetime, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Synthetic calls over the last ``days`` days: 12 models, 20,000 runs, 2% errors."""
    rng = random.Random(seed)
    run_ids = [f"{rng.getrandbits(128):032x}" for _ in range(20_000)]
    stages = ("extract", "classify", "summarize", "review", "embed")
    span = days * 86_400
    for _ in range(count):
        provider, model, price_in, price_out = MODELS[rng.randrange(len(MODELS))]
        stage = stages[rng.randrange(len(stages))]
        error = rng.random() < 0.02
        tokens_in = rng.randint(50, 8_000)
        tokens_out = 0 if error else rng.randint(0, 1_500)
        cost = tokens_in * price_in + tokens_out * price_out
        unpriced = rng.random() < 0.01
        yield (
            f"{rng.getrandbits(128):032x}",
            now - timedelta(seconds=rng.random() * span),
            stage,
            CALL_TYPES[rng.randrange(len(CALL_TYPES))],
            provider,
            model,
            f"{model}-2025-01-01",
            tokens_in,
            tokens_out,
            rng.randint(0, tokens_in // 2) if rng.random() < 0.3 else 0,
            None if unpriced else cost,
            None if unpriced else "estimated",
            rng.randint(80, 20_000),
            "error" if error else "ok",
            "RateLimitError: 429" if error else None,
            run_ids[rng.randrange(len(run_ids))],
            stage,
            1 if rng.random() < 0.95 else 2,
            f"dag_{rng.randrange(25)}",
            stage,
        )


def chunks(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _insert_sqlite(raw: Any, chunk: list[tuple[Any, ...]]) -> None:
    columns = ", ".join(LEDGER_COLUMNS)
    marks = ", ".join("?" for _ in LEDGER_COLUMNS)
    rows = [(r[0], r[1].strftime(SQLITE_DATETIME), *r[2:]) for r in chunk]
    cursor = raw.cursor()
    try:
        # The engine's connections run in autocommit mode and BEGIN explicitly.
        cursor.execute("BEGIN IMMEDIATE")
        cursor.executemany(f"INSERT INTO wfe_ai_calls ({columns}) VALUES ({marks})", rows)
        cursor.execute("COMMIT")
    finally:
        cursor.close()


def _insert_postgres(raw: Any, chunk: list[tuple[Any, ...]]) -> None:
    columns = ", ".join(LEDGER_COLUMNS)
    cursor = raw.cursor()
    try:
        with cursor.copy(f"COPY wfe_ai_calls ({columns}) FROM STDIN") as copy:
            for row in chunk:
                copy.write_row(row)
        raw.commit()
    finally:
        cursor.close()


def fill_ledger(engine: Engine, count: int, days: int, now: datetime, figures: Figures) -> None:
    step(f"{figures.backend}: inserting {count:,} synthetic wfe_ai_calls rows")
    insert = _insert_postgres if engine.dialect.name == "postgresql" else _insert_sqlite
    progress = Progress("ledger rows", count)
    insert_seconds = 0.0
    wall = time.perf_counter()
    raw = engine.raw_connection()
    sqlite = engine.dialect.name == "sqlite"
    try:
        if sqlite:
            # A bigger page cache while loading (SQLite's default is 2 MiB): with random ids
            # every index page is touched, and the default cache makes the load 3x slower.
            raw.cursor().execute(f"PRAGMA cache_size = -{SQLITE_LOAD_CACHE_KIB}")
        for chunk in chunks(ledger_rows(count, days, now), 50_000):
            start = time.perf_counter()
            insert(raw, chunk)
            insert_seconds += time.perf_counter() - start
            progress.add(len(chunk))
    finally:
        if sqlite:  # the connection goes back to the pool: the roll-ups get the default
            raw.cursor().execute("PRAGMA cache_size = -2000")
        raw.close()
    wall = time.perf_counter() - wall
    progress.finish()
    figures.put(
        "ledger rows inserted/s",
        f"{per_second(count, insert_seconds):,.0f} ({count:,} rows in {insert_seconds:.1f} s of "
        f"inserts; {wall - insert_seconds:.1f} s more generating them)",
    )


#: Hand-written equivalents of SqlLedger.rollup(("model_key", "day")), for the query plan.
PLAN_SQL = {
    "sqlite": (
        "EXPLAIN QUERY PLAN SELECT model_key, date(created_at), count(*), sum(input_tokens), "
        "sum(output_tokens), sum(cost) FROM wfe_ai_calls GROUP BY model_key, date(created_at)"
    ),
    "postgresql": (
        "EXPLAIN SELECT model_key, to_char(timezone('UTC', created_at), 'YYYY-MM-DD'), "
        "count(*), sum(input_tokens), sum(output_tokens), sum(cost) FROM wfe_ai_calls "
        "GROUP BY 1, 2"
    ),
}


def print_plan(engine: Engine) -> None:
    sql = PLAN_SQL.get(engine.dialect.name)
    if sql is None:
        return
    with engine.connect() as conn:
        rows = conn.execute(text(sql)).all()
    lines = [str(r[-1]) if engine.dialect.name == "sqlite" else str(r[0]) for r in rows]
    print("  plan of the GROUP BY model_key, day query:")
    for line in lines:
        print(f"    {line}")


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """``(result, first seconds, best seconds)`` of ``repeats`` calls."""
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times[0], min(times)


def bench_ledger(engine: Engine, count: int, days: int, repeats: int, figures: Figures) -> None:
    now = datetime.now(timezone.utc)
    fill_ledger(engine, count, days, now, figures)
    if engine.dialect.name == "postgresql":
        step(f"{figures.backend}: ANALYZE wfe_ai_calls (autovacuum would, after such a load)")
        with engine.begin() as conn:
            conn.execute(text("ANALYZE wfe_ai_calls"))
    ledger = SqlLedger(engine)
    step(f"{figures.backend}: rollup by model and day, {repeats} times")
    rows, first, best = timed(lambda: ledger.scan_rollup(("model_key", "day")), repeats)
    calls = sum(r.calls for r in rows)
    assert calls == count, f"the roll-up counted {calls:,} calls, expected {count:,}"
    figures.put(
        f"rollup by model and day over {count:,} rows",
        f"{best:.2f} s best of {repeats} (first {first:.2f} s; {len(rows):,} groups)",
    )
    week = now - timedelta(days=7)
    rows, first, best = timed(lambda: ledger.scan_rollup(("model_key", "day"), since=week), repeats)
    figures.put(
        "rollup by model and day, last 7 days",
        f"{best:.3f} s best of {repeats} (first {first:.3f} s; "
        f"{sum(r.calls for r in rows):,} rows, {len(rows):,} groups)",
    )
    print_plan(engine)


# -- the databases -------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[tuple[str, str]]:
    directory = Path(tempfile.mkdtemp(prefix="wfe-bench-sqlite-"))
    try:
        yield f"sqlite:///{directory / 'engine.db'}", f"SQLite {sqlite3.sqlite_version}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def postgres_database(fast: bool, bindir: str | None) -> Iterator[tuple[str, str]]:
    from tests.postgres_fixtures import PostgresServer, _find_bindir, start_postgres

    class DurableServer(PostgresServer):
        """The fixture's server with PostgreSQL's default durability settings."""

        def start(self) -> None:
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-c port={self.port}",
                    f"-c unix_socket_directories={self.root}",
                    "-c max_connections=200",
                ]
            )
            log = str(self.root / "server.log")
            result = self._pg_ctl("-l", log, "-o", options, "-w", "-t", "60", "start")
            if result.returncode != 0:
                raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()}")

    found = Path(bindir) if bindir else _find_bindir()
    if found is None:
        raise RuntimeError("no PostgreSQL binaries found: pass --pg-bindir or install postgresql")
    step(f"starting a throwaway PostgreSQL cluster ({found})")
    server = start_postgres(found)
    try:
        if not fast:
            server.stop()
            server = DurableServer(
                server.bindir, server.root, server.port, server.password, server.run_as
            )
            server.start()
        name = server.create_database("wfe_bench")
        url = server.url(name)
        import psycopg

        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo) as conn:
            settings = {
                key: conn.execute(f"SHOW {key}").fetchone()[0]  # type: ignore[index]
                for key in ("server_version", "fsync", "synchronous_commit", "full_page_writes")
            }
        version = (
            f"PostgreSQL {settings['server_version']} (fsync={settings['fsync']}, "
            f"synchronous_commit={settings['synchronous_commit']}, "
            f"full_page_writes={settings['full_page_writes']})"
        )
        yield url, version
    finally:
        step("stopping the PostgreSQL cluster")
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def bench_backend(name: str, url: str, version: str, args: argparse.Namespace) -> Figures:
    figures = Figures(name, version)
    print(f"\n{name}: {version}", flush=True)
    step(f"{name}: migrate(url)")
    migrate(url)
    store = SqlPersistence(url)
    try:
        kernel = build_kernel(store, build_workflow())
        bench_counts(store, kernel, figures)
        # Interleaved (plain, kernel, plain): the machine's load moves both alike.
        plain = [bench_plain_loop(store.engine, args.stages, figures)]
        ours = bench_single_writer(store, kernel, args.stages, figures)
        plain.append(bench_plain_loop(store.engine, args.stages, figures))
        figures.put(
            "stage completions / plain loop",
            f"{ours / statistics.mean(plain):.2f} (target >= 0.33; plain {plain[0]:,.0f} and "
            f"{plain[1]:,.0f}/s)",
        )
        if args.floor:
            bench_floor(store, kernel, args.stages, plain, figures)
        if args.threads > 0:
            bench_concurrent(store, kernel, args.threads, args.stages_per_thread, figures)
        if args.creates > 0:
            bench_run_create(kernel, args.creates, figures)
        if args.ledger_rows > 0:
            bench_ledger(store.engine, args.ledger_rows, args.days, args.repeats, figures)
    finally:
        store.close()
    return figures


def print_summary(results: list[Figures]) -> None:
    if not results:
        return
    names = list(results[0].values)
    print("\n| figure | " + " | ".join(r.backend for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names:
        cells = [r.values.get(name, "") for r in results]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", type=int, default=500, help="single-writer stages")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--stages-per-thread", type=int, default=100)
    parser.add_argument("--creates", type=int, default=500, help="run.create dispatches, each way")
    parser.add_argument("--ledger-rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90, help="days the ledger rows span")
    parser.add_argument("--repeats", type=int, default=3, help="timed roll-ups per query")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--pg-fast",
        action="store_true",
        help="PostgreSQL with fsync, synchronous_commit and full_page_writes off (as in tests)",
    )
    parser.add_argument("--pg-bindir", default=None, help="directory of initdb and pg_ctl")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also replay one completion's exact SQL without the kernel and the store "
        "(raw DBAPI, exec_driver_sql, prebuilt Core) against the plain loop",
    )
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")

    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(
        f"machine: {machine}, {os.cpu_count()} cpus, {platform.system()} {platform.release()}, "
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{load_average()}"
    )
    results = []
    total = time.perf_counter()
    for backend in backends:
        if backend == "sqlite":
            with sqlite_database() as (url, version):
                results.append(bench_backend("SQLite", url, version, args))
        else:
            with postgres_database(args.pg_fast, args.pg_bindir) as (url, version):
                results.append(bench_backend("PostgreSQL", url, version, args))
    print_summary(results)
    print(f"\ntotal time: {time.perf_counter() - total:.0f} s, {load_average()}")


if __name__ == "__main__":
    main()
