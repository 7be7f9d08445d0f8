"""AI-cost roll-ups over 1M ledger rows: the roll-up table against the full scan, and what
keeping the roll-up table costs each ledger write, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/cost_rollups.py [--ledger-rows 1000000] [--days 90]
        [--repeats 7] [--writes 2000] [--backends sqlite,postgres] [--pg-fast]

For each database:

1. the tables at revision 0003 (no roll-up table yet), ``--ledger-rows`` synthetic
   ``wfe_ai_calls`` rows over ``--days`` days (12 models, 25 DAGs; the generator and bulk
   loaders of ``benchmarks/persistence.py``: ``executemany`` on SQLite, ``COPY`` on
   PostgreSQL);
2. ``migrate()`` to revision 0004, whose upgrade creates ``wfe_ai_cost_rollup`` and backfills
   it from those rows (timed), then ``ANALYZE``;
3. the three roll-ups the cost page and ``airflow workflow-engine costs`` show: by model and
   day, by DAG, by day over the last 30 days (``since = now - 30 days``, so 29 whole days from
   the table and the partial first day from the ledger); each answered by
   ``SqlLedger.rollup`` (the roll-up table) and ``SqlLedger.scan_rollup`` (the full
   ``GROUP BY`` over the ledger, as before 0004), checked equal, timed as the median of
   ``--repeats`` runs after one warm-up; the roll-up table's CPU time in this process is
   printed too (on SQLite that is all of the query; a loaded machine inflates wall time);
4. the cost per ledger write: ``--writes`` ``SqlLedger.record`` calls (one transaction each,
   the roll-up upsert included) against the same number of plain ledger inserts in the same
   transaction wrapper (what ``record`` did before 0004), alternated write by write on the
   1M-row table; the ratio of the medians.

Targets (issue 11): each roll-up < 50 ms on PostgreSQL and < 150 ms on SQLite; the added cost
per write <= 15%. PostgreSQL runs with its default durability unless ``--pg-fast``. Progress
goes to stderr, figures to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text
from sqlalchemy.dialects import postgresql, sqlite

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # for benchmarks.persistence and tests.postgres_fixtures
    sys.path.insert(0, str(REPO))

from airflow_workflow_engine.ai.ledger import LedgerEntry, RollupRow  # noqa: E402
from airflow_workflow_engine.ai.sql_ledger import SqlLedger  # noqa: E402
from airflow_workflow_engine.persistence.sql import current_revision, migrate  # noqa: E402
from airflow_workflow_engine.persistence.sql.engine import make_engine  # noqa: E402
from airflow_workflow_engine.persistence.sql.tables import ai_calls  # noqa: E402
from benchmarks.persistence import (  # noqa: E402
    MODELS,
    Progress,
    _insert_postgres,
    _insert_sqlite,
    chunks,
    ledger_rows,
    load_average,
    postgres_database,
    sqlite_database,
    step,
)

TARGET_MS = {"sqlite": 150.0, "postgresql": 50.0}
TARGET_WRITE_RATIO = 1.15


def load(engine: Engine, count: int, days: int, now: datetime) -> float:
    step(f"{engine.dialect.name}: loading {count:,} ledger rows")
    insert_chunk = _insert_postgres if engine.dialect.name == "postgresql" else _insert_sqlite
    progress = Progress("ledger rows", count)
    start = time.perf_counter()
    raw = engine.raw_connection()
    try:
        for chunk in chunks(ledger_rows(count, days, now), 50_000):
            insert_chunk(raw, chunk)
            progress.add(len(chunk))
    finally:
        raw.close()
    progress.finish()
    return time.perf_counter() - start


def analyze(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def median_ms(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """``(result, median wall ms, median CPU ms of this process)``: on a loaded machine the
    CPU time moves less than the wall time (on SQLite it is all of the query's work)."""
    result = fn()  # warm-up (and the result to compare)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return result, statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def new_entry(i: int, now: datetime) -> LedgerEntry:
    provider, model, price_in, price_out = MODELS[i % len(MODELS)]
    return LedgerEntry(
        id=uuid.uuid4().hex,
        created_at=now + timedelta(microseconds=i),
        call_type="text",
        provider=provider,
        model_key=model,
        input_tokens=500,
        output_tokens=100,
        cost=None if i % 50 == 0 else Decimal(repr(500 * price_in + 100 * price_out)),
        status="ok",
        workflow_run_id=f"bench-{i % 100}",
        stage_id="summarize",
        attempt=1,
        dag_id=f"dag_{i % 25}",
        task_id="summarize",
    )


def write_costs(ledger: SqlLedger, writes: int) -> tuple[float, float]:
    """Median µs of a ``record`` (ledger row + roll-up upsert) and of a plain ledger insert,
    alternating one and the other so that the machine's load drifts over both alike."""
    plain = (
        postgresql.insert(ai_calls).on_conflict_do_nothing()
        if ledger.engine.dialect.name == "postgresql"
        else sqlite.insert(ai_calls).on_conflict_do_nothing()
        if ledger.engine.dialect.name == "sqlite"
        else insert(ai_calls)
    )

    def insert_only(entry: LedgerEntry) -> None:
        # SqlLedger.record before revision 0004: the ledger row alone, same transaction helper.
        values = entry.model_dump()
        values["cost"] = None if entry.cost is None else float(entry.cost)
        with ledger._tx(write=True) as conn:
            conn.execute(plain, values)

    now = datetime.now(timezone.utc)
    entries = [new_entry(i, now) for i in range(2 * writes + 100)]
    for entry in entries[:100]:  # warm up both paths (prepared statements, caches)
        (ledger.record if entry.model_key < "m" else insert_only)(entry)
    timings: dict[bool, list[float]] = {True: [], False: []}
    for i, entry in enumerate(entries[100:]):
        with_rollup = (i // 2 + i) % 2 == 0  # ABBA order: neither always goes first
        write = ledger.record if with_rollup else insert_only
        start = time.perf_counter()
        write(entry)
        timings[with_rollup].append((time.perf_counter() - start) * 1e6)
    return statistics.median(timings[True]), statistics.median(timings[False])


def compare(label: str, fast: list[RollupRow], scan: list[RollupRow]) -> Decimal:
    """Asserts the two roll-ups agree; returns the largest cost difference. Costs are float
    sums in the database, whose last bits depend on the order of the additions."""
    assert len(fast) == len(scan), f"{label}: {len(fast)} groups, the full scan {len(scan)}"
    drift = Decimal(0)
    for a, b in zip(fast, scan, strict=True):
        assert a.model_copy(update={"cost": b.cost}) == b, f"{label}: {a} != {b}"
        drift = max(drift, abs(a.cost - b.cost))
        assert drift <= abs(b.cost) * Decimal("1e-9"), f"{label}: cost {a.cost} != {b.cost}"
    return drift


QUERIES: list[tuple[str, tuple[str, ...], bool]] = [
    ("by model and day", ("model_key", "day"), False),
    ("by DAG", ("dag_id",), False),
    ("by day, last 30 days", ("day",), True),
]


def bench(url: str, version: str, args: argparse.Namespace) -> list[str]:
    lines = [f"### {version}"]
    engine = make_engine(url)
    dialect = engine.dialect.name
    try:
        migrate(engine, "0003")
        now = datetime.now(timezone.utc)
        seconds = load(engine, args.ledger_rows, args.days, now)
        lines.append(f"- {args.ledger_rows:,} ledger rows loaded in {seconds:.1f} s")
        analyze(engine)
        step(f"{dialect}: migrate to 0004 (creates and backfills wfe_ai_cost_rollup)")
        start = time.perf_counter()
        migrate(engine)
        backfill = time.perf_counter() - start
        assert current_revision(engine) == "0004"
        analyze(engine)
        with engine.connect() as conn:
            groups = conn.execute(text("SELECT count(*) FROM wfe_ai_cost_rollup")).scalar_one()
        lines.append(
            f"- migration 0004 (create + backfill): {backfill:.1f} s, {groups:,} roll-up rows"
        )
        ledger = SqlLedger(engine)
        drift = Decimal(0)
        lines.append("")
        lines.append(
            "| roll-up | roll-up table (ms) | its client CPU (ms) | full scan (ms) | speed-up "
            "| target |"
        )
        lines.append("|---|---|---|---|---|---|")
        for label, dims, last_30 in QUERIES:
            since = now - timedelta(days=30) if last_30 else None
            step(f"{dialect}: {label}, median of {args.repeats}")
            fast, fast_ms, fast_cpu = median_ms(
                lambda d=dims, s=since: ledger.rollup(d, since=s), args.repeats
            )
            scan, scan_ms, _ = median_ms(
                lambda d=dims, s=since: ledger.scan_rollup(d, since=s), args.repeats
            )
            drift = max(drift, compare(label, fast, scan))
            target = TARGET_MS[dialect]
            verdict = "met" if fast_ms < target else "MISSED"
            lines.append(
                f"| {label} ({len(fast):,} groups) | {fast_ms:.1f} | {fast_cpu:.1f} | "
                f"{scan_ms:.1f} | "
                f"{scan_ms / fast_ms:.0f}x | < {target:.0f} ms: {verdict} |"
            )
        lines.append("")
        step(f"{dialect}: {args.writes} ledger writes with and without the roll-up upsert")
        with_us, without_us = write_costs(ledger, args.writes)
        ratio = with_us / without_us
        verdict = "met" if ratio <= TARGET_WRITE_RATIO else "MISSED"
        lines.append(
            f"- per ledger write: {with_us:.0f} µs with the roll-up upsert, {without_us:.0f} µs "
            f"without: x{ratio:.2f} ({(ratio - 1) * 100:+.0f}%; target <= +15%: {verdict})"
        )
        lines.append(
            "- same groups, calls, errors, tokens and unpriced calls from the roll-up table as "
            f"from the full scan; costs within ${float(drift):.1e} (float sums in another order)"
        )
    finally:
        engine.dispose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--ledger-rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90, help="days the ledger rows span")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per query")
    parser.add_argument("--writes", type=int, default=2000, help="ledger writes, each way")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--pg-fast",
        action="store_true",
        help="PostgreSQL with fsync, synchronous_commit and full_page_writes off (as in tests)",
    )
    parser.add_argument("--pg-bindir", default=None, help="directory of initdb and pg_ctl")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")

    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(
        f"machine: {machine}, {os.cpu_count()} cpus, {platform.system()} {platform.release()}, "
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {load_average()}"
    )
    total = time.perf_counter()
    for backend in backends:
        if backend == "sqlite":
            with sqlite_database() as (url, version):
                lines = bench(url, version, args)
        else:
            with postgres_database(args.pg_fast, args.pg_bindir) as (url, version):
                lines = bench(url, version, args)
        print("\n".join(lines), flush=True)
    print(f"\ntotal time: {time.perf_counter() - total:.0f} s, {load_average()}")


if __name__ == "__main__":
    main()
