"""Load times of the UI pages with 10,000 workflow runs (with stages) and 1M ledger rows.

    .venv/bin/python benchmarks/ui_pages.py [--runs 10000] [--stages 4] [--ledger-rows 1000000]
        [--days 90] [--loads 9] [--backends sqlite,postgres] [--pg-bindir DIR]

For each database:

1. the engine's tables at revision 0003; ``--runs`` completed workflow runs of 25 DAGs (keys
   ``"dag_<n>/scheduled__<time>"``), each with ``--stages`` stages, two annotations and
   three outbox events; ``--ledger-rows`` ledger rows over ``--days`` days spread over those
   runs (12 models; the generator's columns and bulk loaders of ``benchmarks/persistence.py``);
2. ``migrate()`` to the newest revision (0004 backfills the cost roll-up table), ``ANALYZE``;
3. the pages' real FastAPI app (``create_app()``, what the plugin mounts on Airflow's
   api-server) behind Airflow's simple auth manager, called through Starlette's
   ``TestClient`` with a real JWT: each page is loaded once to warm up, then ``--loads``
   times; p50 and p95 of the wall time per load, with the response size.

Pages: the runs list (first page, a page in the middle, filtered by DAG, by status), a run page
(a run with about ``ledger rows / runs`` AI calls), a DAG run's page, the costs page (30 and
90 days, by DAG), and the JSON of the runs list and of a run. Target: every page < 1 s.
What the api-server adds in front (routing, the auth middleware) is not in these figures.
Progress goes to stderr, figures to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # for benchmarks.persistence and tests.postgres_fixtures
    sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, insert, text  # noqa: E402

from airflow_workflow_engine.persistence.sql import migrate  # noqa: E402
from airflow_workflow_engine.persistence.sql.engine import make_engine  # noqa: E402
from airflow_workflow_engine.persistence.sql.tables import (  # noqa: E402
    annotations_table,
    outbox_events,
    workflow_runs,
    workflow_stages,
)
from benchmarks.persistence import (  # noqa: E402
    CALL_TYPES,
    MODELS,
    Progress,
    _insert_postgres,
    _insert_sqlite,
    chunks,
    load_average,
    percentile_ms,
    postgres_database,
    sqlite_database,
    step,
)

DAGS = 25
STAGE_IDS = ("extract", "classify", "summarize", "review", "embed", "publish", "archive", "notify")


def _run_rows(count: int, stages: int, days: int, now: datetime) -> Iterator[dict[str, Any]]:
    rng = random.Random(11)
    span = days * 86_400
    for n in range(count):
        created = now - timedelta(seconds=span * (count - n) / count)
        dag = f"dag_{n % DAGS}"
        stage_ids = STAGE_IDS[:stages]
        yield {
            "id": f"run-{n:06d}",
            "workflow_id": dag,
            "workflow_name": dag,
            "status": "COMPLETED" if rng.random() < 0.9 else "FAILED",
            "input": {"document": f"doc {n}", "words": rng.randint(100, 5000)},
            "output": {s: {"ok": True, "n": n} for s in stage_ids},
            "config": {},
            "priority": 0,
            "total_cost": 0.0,
            "total_tokens": 0,
            "error_message": None,
            "idempotency_key": f"{dag}/scheduled__{created.isoformat()}",
            "created_at": created,
            "updated_at": created + timedelta(seconds=90),
            "started_at": created + timedelta(seconds=1),
            "completed_at": created + timedelta(seconds=90),
            "event_sequence": 3,
            "stage_attempts": {s: 1 for s in stage_ids},
        }


def _children(run: dict[str, Any], stages: int) -> tuple[list[Any], list[Any], list[Any]]:
    start = run["started_at"]
    stage_rows = [
        {
            "id": f"{run['id']}-{stage_id}",
            "workflow_run_id": run["id"],
            "stage_id": stage_id,
            "stage_name": stage_id,
            "stage_number": i,
            "execution_group": i,
            "status": "COMPLETED",
            "attempt": 1,
            "output": {"ok": True, "summary": "x" * 200},
            "config": None,
            "metrics": {"ai_cost": 0.0012, "ai_tokens": 1500},
            "created_at": run["created_at"],
            "updated_at": run["completed_at"],
            "started_at": start + timedelta(seconds=20 * i),
            "completed_at": start + timedelta(seconds=20 * i + 15),
        }
        for i, stage_id in enumerate(STAGE_IDS[:stages])
    ]
    notes = [
        {
            "id": f"{run['id']}-note-{key}",
            "workflow_run_id": run["id"],
            "stage_id": STAGE_IDS[0],
            "key": key,
            "value": value,
            "actor_kind": "system",
            "actor_id": "bench",
            "attempt": 1,
            "created_at": run["completed_at"],
        }
        for key, value in (("decision.outcome", "ok"), ("source.kind", "pdf"))
    ]
    events = [
        {
            "id": f"{run['id']}-event-{seq}",
            "workflow_run_id": run["id"],
            "sequence": seq,
            "type": kind,
            "payload": {},
            "occurred_at": run["created_at"] + timedelta(seconds=seq),
            "published_at": run["created_at"] + timedelta(seconds=seq + 1),
            "retry_count": 0,
        }
        for seq, kind in enumerate(("workflow:created", "workflow:started", "workflow:completed"))
    ]
    return stage_rows, notes, events


def fill_runs(engine: Engine, count: int, stages: int, days: int, now: datetime) -> list[Any]:
    step(f"inserting {count:,} workflow runs with {stages} stages each")
    progress = Progress("runs", count)
    runs: list[Any] = []
    batch = 1_000
    rows = list(_run_rows(count, stages, days, now))
    for i in range(0, count, batch):
        part = rows[i : i + batch]
        stage_rows: list[Any] = []
        notes: list[Any] = []
        events: list[Any] = []
        for run in part:
            s, a, e = _children(run, stages)
            stage_rows += s
            notes += a
            events += e
        with engine.begin() as conn:
            conn.execute(insert(workflow_runs), part)
            conn.execute(insert(workflow_stages), stage_rows)
            conn.execute(insert(annotations_table), notes)
            conn.execute(insert(outbox_events), events)
        progress.add(len(part))
        runs += [(r["id"], r["workflow_id"], r["idempotency_key"], r["created_at"]) for r in part]
    progress.finish()
    return runs


def _ledger_rows(count: int, runs: list[Any], stages: int) -> Iterator[tuple[Any, ...]]:
    """The columns of ``benchmarks.persistence.LEDGER_COLUMNS``, each call in its run's
    90 seconds."""
    rng = random.Random(7)
    for _ in range(count):
        run_id, dag_id, _key, created = runs[rng.randrange(len(runs))]
        provider, model, price_in, price_out = MODELS[rng.randrange(len(MODELS))]
        stage = STAGE_IDS[rng.randrange(stages)]
        error = rng.random() < 0.02
        tokens_in = rng.randint(50, 8_000)
        tokens_out = 0 if error else rng.randint(0, 1_500)
        unpriced = rng.random() < 0.01
        yield (
            f"{rng.getrandbits(128):032x}",
            created + timedelta(seconds=rng.random() * 90),
            stage,
            CALL_TYPES[rng.randrange(len(CALL_TYPES))],
            provider,
            model,
            f"{model}-2025-01-01",
            tokens_in,
            tokens_out,
            rng.randint(0, tokens_in // 2) if rng.random() < 0.3 else 0,
            None if unpriced else tokens_in * price_in + tokens_out * price_out,
            None if unpriced else "estimated",
            rng.randint(80, 20_000),
            "error" if error else "ok",
            "RateLimitError: 429" if error else None,
            run_id,
            stage,
            1,
            dag_id,
            stage,
        )


def fill_ledger(engine: Engine, count: int, runs: list[Any], stages: int) -> None:
    step(f"inserting {count:,} ledger rows over those runs")
    load = _insert_postgres if engine.dialect.name == "postgresql" else _insert_sqlite
    progress = Progress("ledger rows", count)
    raw = engine.raw_connection()
    try:
        for chunk in chunks(_ledger_rows(count, runs, stages), 50_000):
            load(raw, chunk)
            progress.add(len(chunk))
    finally:
        raw.close()
    progress.finish()
    step("the runs' totals from their ledger rows")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE wfe_workflow_runs SET total_cost = COALESCE((SELECT SUM(cost) FROM "
                "wfe_ai_calls c WHERE c.workflow_run_id = wfe_workflow_runs.id), 0), "
                "total_tokens = COALESCE((SELECT SUM(input_tokens + output_tokens) FROM "
                "wfe_ai_calls c WHERE c.workflow_run_id = wfe_workflow_runs.id), 0)"
            )
        )


def _app_client(url: str) -> Any:
    """The pages' app as the plugin mounts it, for a logged-in admin.

    Airflow's own check of the JWT (and of its revoked-token table in Airflow's metadata
    database) is replaced by the admin user: it is the api-server's per-request cost, not the
    pages', and needs no Airflow database here."""
    os.environ["AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN"] = url
    os.environ.pop("AIRFLOW_CONN_WORKFLOW_ENGINE_DEFAULT", None)
    os.environ.setdefault(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    os.environ.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from airflow_workflow_engine.host.links import URL_PREFIX
    from airflow_workflow_engine.plugins.ui.app import create_app
    from airflow_workflow_engine.plugins.ui.reader import close_reader

    close_reader()
    create_auth_manager()
    app = create_app()
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(
        username="admin", role="admin"
    )
    root = FastAPI()  # mounted under its prefix, as Airflow's api-server mounts it
    root.mount(URL_PREFIX, app)
    return TestClient(root, base_url=f"http://127.0.0.1{URL_PREFIX}")


def time_pages(client: Any, runs: list[Any], loads: int) -> list[tuple[str, float, float, int]]:
    middle_run, middle_dag, middle_key, _ = runs[len(runs) // 2]
    newest_run = runs[-1][0]
    dag_run = middle_key.split("/", 1)[1]
    pages = [
        ("runs list", "/runs"),
        ("runs list, page 200", "/runs?offset=5000"),
        ("runs list, one DAG", f"/runs?dag_id={middle_dag}"),
        ("runs list, FAILED", "/runs?status=FAILED"),
        ("run page", f"/runs/{middle_run}"),
        ("run page (newest)", f"/runs/{newest_run}"),
        ("DAG run's page", f"/dags/{middle_dag}/runs/{dag_run}"),
        ("costs page (30 days)", "/costs"),
        ("costs page (90 days, by DAG)", "/costs?days=90&by=dag"),
        ("API runs list", "/api/runs"),
        ("API run", f"/api/runs/{middle_run}"),
        ("API costs", "/api/costs"),
    ]
    figures = []
    for name, path in pages:
        answer = client.get(path)  # warm-up (and the check that the page works)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:500]}")
        times = []
        for _ in range(loads):
            start = time.perf_counter()
            answer = client.get(path)
            times.append(time.perf_counter() - start)
            assert answer.status_code == 200, (path, answer.status_code)
        p50 = 1000.0 * statistics.median(times)
        figures.append((name, p50, percentile_ms(times, 0.95), len(answer.content)))
        print(f"  {name:32} p50 {p50:7.0f} ms  p95 {figures[-1][2]:7.0f} ms", file=sys.stderr)
    return figures


def bench(name: str, url: str, version: str, args: argparse.Namespace) -> None:
    print(f"\n{name}: {version}", flush=True)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    migrate(url, "0003")
    engine = make_engine(url)
    try:
        runs = fill_runs(engine, args.runs, args.stages, args.days, now)
        fill_ledger(engine, args.ledger_rows, runs, args.stages)
    finally:
        engine.dispose()
    step("migrate() to the newest revision (backfills the cost roll-up table), ANALYZE")
    start = time.perf_counter()
    migrate(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    print(f"  migrate + ANALYZE: {time.perf_counter() - start:.1f} s")
    client = _app_client(url)
    step(f"loading each page {args.loads} times")
    figures = time_pages(client, runs, args.loads)
    client.close()
    print(f"  {load_average()}")
    print("\n| page | p50 ms | p95 ms | bytes |")
    print("|---|---|---|---|")
    for page, p50, p95, size in figures:
        print(f"| {page} | {p50:.0f} | {p95:.0f} | {size:,} |")
    slow = [page for page, _p50, p95, _ in figures if p95 >= 1000]
    print(f"  target < 1 s: {'missed by ' + ', '.join(slow) if slow else 'met'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--stages", type=int, default=4, help="stages per run (at most 8)")
    parser.add_argument("--ledger-rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90, help="days the runs span")
    parser.add_argument("--loads", type=int, default=9, help="timed loads per page")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-bindir", default=None, help="directory of initdb and pg_ctl")
    args = parser.parse_args()
    if not 1 <= args.stages <= len(STAGE_IDS):
        parser.error(f"--stages must be 1 to {len(STAGE_IDS)}")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(backends) - {"sqlite", "postgres"}:
        parser.error("--backends takes sqlite and/or postgres")
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="wfe-bench-ui-"))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, {platform.system()} "
        f"{platform.release()}, python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}; {args.runs:,} runs x {args.stages} stages, "
        f"{args.ledger_rows:,} ledger rows; {load_average()}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    total = time.perf_counter()
    for backend in backends:
        if backend == "sqlite":
            with sqlite_database() as (url, version):
                bench("SQLite", url, version, args)
        else:
            with postgres_database(True, args.pg_bindir) as (url, version):
                bench("PostgreSQL", url, version, args)
    print(f"\ntotal time: {time.perf_counter() - total:.0f} s, {load_average()}")


if __name__ == "__main__":
    main()
