"""End to end on the CeleryExecutor: Redis, PostgreSQL, api-server, scheduler, dag-processor,
triggerer and two Celery workers (``celery.py``), every engine process on a least-privilege
role (``airflow workflow-engine db grant``; ``airflow db migrate`` ran as the owner).

The ``e2e_documents`` workflow (``intake -> [summarize, classify] -> embed (deferrable batch)
-> publish``) runs as several concurrent DAG runs; each worker runs one task at a time, so the
parallel group's stages land on both workers. Every run completes, Airflow's task instances
name both workers, and the engine has exactly one stage row per stage and no duplicate
annotation. Run alone with ``pytest -m celery``.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.e2e.celery import celery_env, redis_server, start_worker
from tests.e2e.cluster import AirflowCluster, e2e_marks, prepare_cluster, wait_until

pytestmark = [*e2e_marks(timeout=1200, reruns=0), pytest.mark.celery, pytest.mark.postgres]
__all__ = ["redis_server"]  # the fixture, imported so pytest finds it in this module

DAG = "e2e_documents"
WORKFLOW = "e2e-documents"
STAGES = {"intake", "summarize", "classify", "embed", "publish"}
CONF = {"title": "Ops notes", "text": "The Airflow scheduler runs our pipeline code daily."}
RUNS = 6
WORKERS = ("worker-a", "worker-b")
ROLE = "wfe_celery_engine"
SLOW_DAG = "e2e_celery_slow"
SLOW_WORKFLOW = "e2e-celery-slow"
KILL_RUNS = 4


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    """One fake LLM server for the module (the cluster's connection points at it)."""
    with FakeLLMServer() as server:
        yield server
        assert not server.server_errors, server.server_errors[0]


@pytest.fixture(scope="module")
def cluster(
    postgres_server: Any,
    redis_server: Any,
    fake_llm: FakeLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowCluster]:
    database = postgres_server.create_database()
    password = secrets.token_hex(8)
    admin = (
        f"host={postgres_server.host} port={postgres_server.port} "
        f"user={postgres_server.user} password={postgres_server.password} dbname=postgres"
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")
    role_url = (
        f"postgresql+psycopg://{ROLE}:{password}@{postgres_server.host}:"
        f"{postgres_server.port}/{database}"
    )
    home = tmp_path_factory.mktemp("e2e-celery-home")
    env = {
        **celery_env(redis_server),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.celery.worker_hostname",
        "E2E_SLOW_SECONDS": "15",  # time to kill a worker inside a slow stage
    }
    cluster = prepare_cluster(home, postgres_server.url(database), engine_url=role_url, env=env)
    cluster.env["AIRFLOW_CONN_LLM_OPENAI_DEFAULT"] = json.dumps(
        {
            "conn_type": "workflow_engine_llm",
            "password": "test-key",
            "host": fake_llm.openai_base_url,
        }
    )
    try:
        with cluster.explain_failure():
            cluster.migrate()  # as the owner: the engine URL names the role
            cluster.workflow_engine("db", "grant", ROLE)
            cluster.start_processes()
            for name in WORKERS:
                start_worker(cluster, name, {"WFE_WORKER_NAME": name})
            cluster.wait_for_dag(DAG)
            cluster.wait_for_dag(SLOW_DAG)
        yield cluster
    finally:
        cluster.stop()
        postgres_server.drop_database(database)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {ROLE}")


def test_concurrent_runs_spread_over_two_celery_workers_as_the_engine_role(
    cluster: AirflowCluster,
) -> None:
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    run_ids = [f"celery_{i}_{uuid.uuid4().hex[:6]}" for i in range(RUNS)]
    started = time.monotonic()
    with cluster.explain_failure(DAG, run_ids[0]):
        for run_id in run_ids:
            cluster.trigger(DAG, CONF, run_id)
        for run_id in run_ids:
            state = cluster.wait_for_run(DAG, run_id, 900)["state"]
            assert state == "success", (run_id, state)
    wall = time.monotonic() - started
    print(f"\n{RUNS} concurrent runs on 2 Celery workers: {wall:.1f} s")

    hosts: set[str] = set()
    split_groups = 0
    for run_id in run_ids:
        tis = cluster.task_instances(DAG, run_id)
        by_task = {tid: ti.get("hostname") for tid, ti in tis.items()}
        hosts |= {h for h in by_task.values() if h}
        parallel = {h for tid, h in by_task.items() if tid.endswith(("summarize", "classify"))}
        split_groups += len(parallel) == 2
    assert hosts == set(WORKERS), hosts
    assert split_groups >= 1, "no run had its parallel stages on both workers"

    with SqlPersistence(cluster.db_url) as db:
        keys = {r.idempotency_key: r for r in db.list_runs(workflow_id=WORKFLOW, limit=1000)}
        for run_id in run_ids:
            run = keys[f"{DAG}/{run_id}"]
            assert run.status.value == "COMPLETED", run
            stages = db.list_stages(run.id)
            assert sorted(s.stage_id for s in stages) == sorted(STAGES)
            notes = db.list_annotations(run.id)
            assert len({(a.key, a.stage_id, a.idempotency_key) for a in notes}) == len(notes)


def _ledger_rows(cluster: AirflowCluster, dag_run_id: str, stage_id: str) -> int:
    from sqlalchemy import create_engine, func, select

    from airflow_workflow_engine.persistence.sql.tables import ai_calls

    engine = create_engine(cluster.db_url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).where(
                ai_calls.c.dag_run_id == dag_run_id, ai_calls.c.stage_id == stage_id
            )
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_a_sigkilled_worker_s_stages_complete_on_the_other_worker(
    cluster: AirflowCluster, fake_llm: FakeLLMServer
) -> None:
    """SIGKILL worker-a while it runs a slow stage of several concurrent runs: Airflow finds
    the task's heartbeat gone, retries it on worker-b, every run completes; each stage has one
    row, and the ledger has exactly one row per call the fake LLM server answered (the killed
    attempt's call included: it was paid for)."""
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    if "worker-a" not in cluster.processes:  # killed by an earlier try of this test
        start_worker(cluster, "worker-a", {"WFE_WORKER_NAME": "worker-a"})
    run_ids = [f"kill_{i}_{uuid.uuid4().hex[:6]}" for i in range(KILL_RUNS)]
    calls_before = len(fake_llm.requests_to("chat/completions"))
    with cluster.explain_failure(SLOW_DAG, run_ids[0]):
        for run_id in run_ids:
            cluster.trigger(SLOW_DAG, {"text": f"document {run_id}"}, run_id)

        def running_on_a() -> tuple[str, str] | None:
            for run_id in run_ids:
                for tid, ti in cluster.task_instances(SLOW_DAG, run_id).items():
                    on_a = ti.get("state") == "running" and ti.get("hostname") == "worker-a"
                    if on_a and tid.endswith(("slow_a", "slow_b")):
                        return run_id, tid
            return None

        victim = wait_until("worker-a to run a slow stage", running_on_a, 600)

        def paid() -> bool | None:  # the stage's AI call answered and in the ledger
            return _ledger_rows(cluster, victim[0], victim[1].rpartition(".")[2]) > 0 or None

        # Killed inside the stage, in its sleep: after the paid call, before the output.
        wait_until("the slow stage's AI call to be in the ledger", paid, 120)
        cluster.kill("worker-a")
        for run_id in run_ids:
            state = cluster.wait_for_run(SLOW_DAG, run_id, 900)["state"]
            assert state == "success", (run_id, state)

    run_id, task_id = victim
    retried = cluster.task_instances(SLOW_DAG, run_id)[task_id]
    assert retried["try_number"] >= 2 and retried["hostname"] == "worker-b", retried

    answered = len(fake_llm.requests_to("chat/completions")) - calls_before
    with SqlPersistence(cluster.db_url) as db:
        keys = {r.idempotency_key: r for r in db.list_runs(workflow_id=SLOW_WORKFLOW, limit=1000)}
        for rid in run_ids:
            run = keys[f"{SLOW_DAG}/{rid}"]
            assert run.status.value == "COMPLETED", run
            stages = db.list_stages(run.id)
            assert sorted(s.stage_id for s in stages) == ["ask", "publish", "slow_a", "slow_b"]
    ledger_rows = sum(
        _ledger_rows(cluster, rid, stage)
        for rid in run_ids
        for stage in ("ask", "slow_a", "slow_b", "publish")
    )
    # Every answered call has its row (the killed attempt's included), and no row without one.
    assert ledger_rows == answered, (ledger_rows, answered)
    assert answered >= 4 * KILL_RUNS
    print(
        f"\nSIGKILL of worker-a: {KILL_RUNS} runs completed; {answered} calls, {ledger_rows} rows"
    )
