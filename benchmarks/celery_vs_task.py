"""Wall time of concurrent DAG runs on the CeleryExecutor: the workflow against the same DAG
written with plain ``@task``s, in one run of this script, on one cluster.

    .venv/bin/python benchmarks/celery_vs_task.py [--runs 20] [--rounds 1]

The cluster is the Celery suite's (``tests/e2e/celery.py``: :func:`celery_cluster`, with
PostgreSQL from ``tests/postgres_fixtures.py``, Debian's ``redis-server``, api-server,
scheduler, dag-processor, triggerer and two Celery workers running one task at a time; the
engine on its least-privilege role; the fake LLM server as ``llm_openai_default``). Two DAGs
of ``tests/e2e/dags`` do the same work:

- ``e2e_celery_documents``: the workflow ``intake -> [summarize, classify] -> embed ->
  publish`` (``build_dag``; ``embed`` an AI batch stage: the task defers, the triggerer polls
  the batch every second, the task resumes on a worker);
- ``e2e_celery_tasks``: the same five steps as plain ``@task``s, ``embed`` submitting the same
  batch with the openai SDK and polling it every second inside the task.

Each round triggers ``--runs`` runs of one DAG at once and waits for all of them, the DAGs in
alternating order; one warm-up round of each first. Figures: from the first trigger until
the last run ended (the script's clock), and the sum of the task instances' durations.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_workflow_engine.testing.fake_llm import FakeLLMServer  # noqa: E402
from tests.e2e.celery import celery_cluster, start_redis  # noqa: E402
from tests.e2e.cluster import AirflowCluster  # noqa: E402
from tests.postgres_fixtures import _find_bindir, start_postgres  # noqa: E402

WORKFLOW_DAG = "e2e_celery_documents"
TASKS_DAG = "e2e_celery_tasks"
CONF = {"title": "Ops notes", "text": "The Airflow scheduler runs our pipeline code daily."}


def run_round(cluster: AirflowCluster, dag_id: str, runs: int) -> dict[str, float]:
    """Triggers ``runs`` runs of ``dag_id`` at once and waits for all of them."""
    run_ids = [f"bench_{i}_{uuid.uuid4().hex[:6]}" for i in range(runs)]
    started = time.monotonic()
    for run_id in run_ids:
        cluster.trigger(dag_id, CONF, run_id)
    for run_id in run_ids:
        state = cluster.wait_for_run(dag_id, run_id, 60 * runs)["state"]
        if state != "success":
            raise RuntimeError(f"{dag_id} run {run_id} ended {state}; logs in {cluster.home}")
    wall = time.monotonic() - started
    durations = sum(
        float(ti.get("duration") or 0.0)
        for run_id in run_ids
        for ti in cluster.task_instances(dag_id, run_id).values()
    )
    return {"wall": wall, "tasks": durations}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="concurrent DAG runs per round")
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds per DAG")
    args = parser.parse_args(argv)

    bindir = _find_bindir()
    redis_binary = shutil.which("redis-server")
    if bindir is None or redis_binary is None:
        print("needs PostgreSQL (initdb, pg_ctl) and redis-server", file=sys.stderr)
        return 2
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; "
        f"load average at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    postgres = start_postgres(bindir)
    redis = start_redis(redis_binary)
    results: dict[str, list[dict[str, float]]] = {WORKFLOW_DAG: [], TASKS_DAG: []}
    try:
        with (
            FakeLLMServer() as fake,
            tempfile.TemporaryDirectory(prefix="wfe-celery-bench-") as tmp,
            celery_cluster(
                postgres, redis, fake.openai_base_url, Path(tmp), (WORKFLOW_DAG, TASKS_DAG)
            ) as cluster,
        ):
            for r in range(args.rounds + 1):  # round 0 warms up, with one run of each
                order = list(results) if r % 2 == 0 else list(reversed(results))
                for dag_id in order:
                    figures = run_round(cluster, dag_id, args.runs if r else 1)
                    label = "warm-up" if r == 0 else f"round {r}"
                    print(
                        f"  {label:<8} {dag_id:<21} wall {figures['wall']:6.1f} s, "
                        f"task durations {figures['tasks']:7.1f} s",
                        flush=True,
                    )
                    if r:
                        results[dag_id].append(figures)
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(postgres.root, ignore_errors=True)

    def mean(dag_id: str, key: str) -> float:
        rows: list[dict[str, Any]] = results[dag_id]
        return sum(row[key] for row in rows) / len(rows)

    print(f"\n| {args.runs} concurrent runs, 2 Celery workers | workflow | @task | ratio |")
    print("|---|---|---|---|")
    for key, title in (("wall", "wall time"), ("tasks", "sum of task durations")):
        w, t = mean(WORKFLOW_DAG, key), mean(TASKS_DAG, key)
        print(f"| {title} | {w:.1f} s | {t:.1f} s | {w / t:.2f} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
