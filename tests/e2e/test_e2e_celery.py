"""End to end on the CeleryExecutor: Redis, PostgreSQL, api-server, scheduler, dag-processor,
triggerer and two Celery workers (``celery.py``), every engine process on a least-privilege
role (``airflow workflow-engine db grant``; ``airflow db migrate`` ran as the owner).

- 20 concurrent DAG runs of ``e2e_celery_documents`` (``intake -> [summarize, classify] ->
  embed (AI batch through the openai SDK, deferrable) -> publish``); each worker runs one task
  at a time, so the parallel group's stages land on both workers; ``embed`` defers, the
  triggerer polls the fake server's batch, and the task resumes on a worker. Every run
  completes, Airflow's task instances name both workers, the engine has exactly one stage row
  per stage and no duplicate annotation, one batch per run and a ledger row per request.
- SIGKILL of a worker and of its task processes (each in a process group of its own) inside a
  stage, right after its paid model call: every run completes on retry on the other worker,
  the retry reuses the recorded answer (the fake server answered each call once), and the
  ledger has one row per answered call.

Run alone with ``pytest -m celery``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_workflow_engine.testing.fake_llm import FakeLLMServer
from tests.e2e.celery import WORKERS, celery_cluster, redis_server, start_worker
from tests.e2e.cluster import AirflowCluster, e2e_marks, wait_until

pytestmark = [*e2e_marks(timeout=1200, reruns=0), pytest.mark.celery, pytest.mark.postgres]
__all__ = ["redis_server"]  # the fixture, imported so pytest finds it in this module

DAG = "e2e_celery_documents"
WORKFLOW = "e2e-celery-documents"
STAGES = {"intake", "summarize", "classify", "embed", "publish"}
CONF = {"title": "Ops notes", "text": "The Airflow scheduler runs our pipeline code daily."}
RUNS = 20
BATCH_REQUESTS = 2  # per run: embed's requests
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
    home = tmp_path_factory.mktemp("e2e-celery-home")
    env = {"E2E_SLOW_SECONDS": "8"}  # time to kill a worker inside a slow stage
    with celery_cluster(
        postgres_server, redis_server, fake_llm.openai_base_url, home, (DAG, SLOW_DAG), env=env
    ) as cluster:
        yield cluster


def test_concurrent_runs_spread_over_two_celery_workers_as_the_engine_role(
    cluster: AirflowCluster, fake_llm: FakeLLMServer
) -> None:
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    run_ids = [f"celery_{i}_{uuid.uuid4().hex[:6]}" for i in range(RUNS)]
    batches_before = fake_llm.batches_created["openai"]
    started = time.monotonic()
    with cluster.explain_failure(DAG, run_ids[0]):
        for run_id in run_ids:
            cluster.trigger(DAG, CONF, run_id)
        for run_id in run_ids:
            state = cluster.wait_for_run(DAG, run_id, 1200)["state"]
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
        embed = next(ti for tid, ti in tis.items() if tid.endswith("embed"))
        # Deferred to the triggerer and resumed on a worker, in one try.
        assert embed["try_number"] == 1 and embed["hostname"] in WORKERS, embed
        assert _deferred(cluster, run_id, embed["task_id"]), embed
    assert hosts == set(WORKERS), hosts
    assert split_groups >= 1, "no run had its parallel stages on both workers"
    # One provider batch per run, polled (by the triggerer) until done.
    assert fake_llm.batches_created["openai"] - batches_before == RUNS
    polls = fake_llm.requests_to("/batches/batch_", method="GET")
    assert len({r.path for r in polls}) >= RUNS, len(polls)

    with SqlPersistence(cluster.db_url) as db:
        keys = {r.idempotency_key: r for r in db.list_runs(workflow_id=WORKFLOW, limit=1000)}
        for run_id in run_ids:
            run = keys[f"{DAG}/{run_id}"]
            assert run.status.value == "COMPLETED", run
            stages = db.list_stages(run.id)
            assert sorted(s.stage_id for s in stages) == sorted(STAGES)
            notes = db.list_annotations(run.id)
            assert len({(a.key, a.stage_id, a.idempotency_key) for a in notes}) == len(notes)
            assert [a.key for a in notes if a.stage_id == "embed"].count("ai.batch") == 1
            assert _ledger_rows(cluster, run_id, "embed") == BATCH_REQUESTS


def _deferred(cluster: AirflowCluster, run_id: str, task_id: str) -> bool:
    """Whether the task's log shows it deferred (the triggerer ran its trigger) and resumed."""
    logs = cluster.home / "logs" / f"dag_id={DAG}" / f"run_id={run_id}" / f"task_id={task_id}"
    text = "".join(p.read_text(errors="replace") for p in logs.glob("attempt=*.log"))
    deferred = text.find("Pausing task as DEFERRED")
    return deferred >= 0 and "::group::Pre Execute" in text[deferred:]


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
    """SIGKILL worker-a and its task processes while a slow stage sleeps after its answered
    model call: Airflow finds the task's heartbeat gone, retries it on worker-b, every run
    completes; the killed attempt never finished (the retry is the stage's second attempt),
    the retry reused the recorded answer, so the fake LLM server answered each of the
    workflow's calls exactly once and the ledger has exactly one row per answered call; each
    stage has one row and no annotation is duplicated."""
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    if "worker-a" not in cluster.processes:  # killed by an earlier try of this test
        start_worker(cluster, "worker-a", {"WFE_WORKER_NAME": "worker-a"})
    run_ids = [f"kill_{i}_{uuid.uuid4().hex[:6]}" for i in range(KILL_RUNS)]
    calls_before = len(fake_llm.requests_to("chat/completions"))
    started = time.monotonic()
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
        killed_at = time.monotonic()
        task_processes = cluster.kill("worker-a")
        # The task process was in a group of its own: killed with the worker, not left behind.
        assert task_processes, "worker-a had no task process outside its process group"
        for run_id in run_ids:
            state = cluster.wait_for_run(SLOW_DAG, run_id, 900)["state"]
            assert state == "success", (run_id, state)
    recovered = time.monotonic() - killed_at

    run_id, task_id = victim
    stage_id = task_id.rpartition(".")[2]
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
            notes = db.list_annotations(run.id)
            assert len({(a.key, a.stage_id, a.idempotency_key) for a in notes}) == len(notes)
            if rid == run_id:
                # The killed attempt never finished: the stage completed in a later attempt.
                victim_stage = next(s for s in stages if s.stage_id == stage_id)
                assert victim_stage.attempt >= 2, victim_stage
    ledger_rows = sum(
        _ledger_rows(cluster, rid, stage)
        for rid in run_ids
        for stage in ("ask", "slow_a", "slow_b", "publish")
    )
    # Every answered call has its row (the killed attempt's included), and no row without one;
    # the retry paid for nothing already answered: one call per stage per run.
    assert ledger_rows == answered, (ledger_rows, answered)
    assert answered == 4 * KILL_RUNS, (answered, 4 * KILL_RUNS)
    print(
        f"\nSIGKILL of worker-a and {len(task_processes)} task process(es): {KILL_RUNS} runs "
        f"completed {recovered:.1f} s after the kill, in {recovered + killed_at - started:.1f} s; "
        f"{answered} calls answered, {ledger_rows} ledger rows"
    )
