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
from tests.e2e.cluster import AirflowCluster, e2e_marks

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
    cluster = AirflowCluster.create(home, postgres_server.url(database), engine_url=role_url)
    cluster.env.update(celery_env(redis_server))
    cluster.env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "tests.e2e.celery.worker_hostname"
    cluster.env["E2E_SLOW_SECONDS"] = "15"  # time to kill a worker inside a slow stage
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
