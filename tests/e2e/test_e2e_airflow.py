"""End to end: the real ``airflow scheduler``, ``dag-processor``, ``triggerer`` and
``api-server`` on PostgreSQL, driven through the REST API like a user would.

One cluster per module (see ``cluster.py``): Airflow's metadata and the engine's ``wfe_``
tables in one PostgreSQL database of the throwaway test cluster, the LocalExecutor, DAGs
from ``tests/e2e/dags``. Each test triggers the ``e2e-documents`` workflow
(``intake -> [summarize, classify] -> embed (deferrable batch) -> publish``) with a conf and
checks that Airflow's view (REST: DAG run, task instances, XCom) and the engine's rows
(runs, stages, outputs, annotations, the AI ledger) agree.

Without ``airflow`` the module is skipped; without PostgreSQL too, except under ``CI=true``
(where the ``postgres_server`` fixture fails instead).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import AirflowCluster, e2e_marks, running_cluster, wait_until

pytestmark = e2e_marks(timeout=480)


DAG = "e2e_documents"
HOLD_DAG = "e2e_documents_hold"
WORKFLOW = "e2e-documents"
STAGES = ["intake", "summarize", "classify", "embed", "publish"]
CONF = {
    "title": "Ops notes",
    "text": "The Airflow scheduler runs our pipeline code after every deploy.",
}
#: How long a DAG run may take (they take ~30 s on a 2-core machine).
RUN_TIMEOUT = 300


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(
    postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowCluster]:
    """A migrated, running Airflow on a fresh PostgreSQL database; stopped at the end."""
    database = postgres_server.create_database()
    home = tmp_path_factory.mktemp("e2e-airflow-home")
    try:
        with running_cluster(home, postgres_server.url(database), (DAG, HOLD_DAG)) as cluster:
            yield cluster
    finally:
        postgres_server.drop_database(database)


@dataclass
class Run:
    """One finished DAG run: Airflow's view (REST) and the engine's rows."""

    dag_id: str
    run_id: str
    dag_run: dict[str, Any]
    tis: dict[str, dict[str, Any]]
    kernel_run: Any
    stages: dict[str, Any]
    annotations: list[Any]


def store(cluster: AirflowCluster) -> Any:
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    return SqlPersistence(cluster.db_url)


def kernel_run(cluster: AirflowCluster, dag_id: str, run_id: str) -> Any:
    """The engine's workflow run of a DAG run (by its idempotency key), or ``None``."""
    with store(cluster) as db:
        runs = db.list_runs(workflow_id=WORKFLOW, limit=1000)
    return next((r for r in runs if r.idempotency_key == f"{dag_id}/{run_id}"), None)


def evidence(cluster: AirflowCluster, workflow_run_id: str, folder: str) -> list[dict[str, Any]]:
    """The marker files ``embed`` wrote under ``folder/`` (see ``e2e_workflows.py``)."""
    scope = embed_blobs(cluster, workflow_run_id)
    return [json.loads(scope.get(key)) for key in scope.list(f"{folder}/")]


def embed_blobs(cluster: AirflowCluster, workflow_run_id: str) -> Any:
    from airflow_workflow_engine.blob.local import LocalBlobStore
    from airflow_workflow_engine.blob.scoped import ScopedBlobStore, stage_prefix

    return ScopedBlobStore(
        LocalBlobStore(Path(cluster.home) / "blobs"), stage_prefix(workflow_run_id, "embed")
    )


def finished_run(cluster: AirflowCluster, dag_id: str, run_id: str) -> Run:
    dag_run = cluster.wait_for_run(dag_id, run_id, RUN_TIMEOUT)
    run = kernel_run(cluster, dag_id, run_id)
    assert run is not None, f"no workflow run with idempotency key {dag_id}/{run_id}"
    with store(cluster) as db:
        stages = {s.stage_id: s for s in db.list_stages(run.id)}
        notes = db.list_annotations(run.id)
    return Run(dag_id, run_id, dag_run, cluster.task_instances(dag_id, run_id), run, stages, notes)


@pytest.fixture(scope="module")
def documents_run(cluster: AirflowCluster) -> Run:
    """``e2e_documents`` triggered through the REST API with a conf, run to the end."""
    run_id = f"e2e_docs_{uuid.uuid4().hex[:8]}"
    with cluster.explain_failure(DAG, run_id):
        created = cluster.trigger(DAG, CONF, run_id)
        assert created["dag_run_id"] == run_id and created["conf"] == CONF
        return finished_run(cluster, DAG, run_id)


# -- tests --------------------------------------------------------------------------------


def test_db_migrate_puts_engine_tables_beside_airflows(cluster: AirflowCluster) -> None:
    from sqlalchemy import create_engine, inspect

    from airflow_workflow_engine.persistence.sql.migrate import HEAD_REVISION, current_revision
    from airflow_workflow_engine.persistence.sql.tables import metadata

    engine = create_engine(cluster.db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"dag_run", "task_instance", "trigger", "alembic_version"} <= tables  # Airflow's
    assert set(metadata.tables) <= tables  # ours, in the same database
    assert current_revision(cluster.db_url) == HEAD_REVISION
    assert "wfe_alembic_version" in tables


def test_rest_triggered_run_agrees_with_kernel(cluster: AirflowCluster, documents_run: Run) -> None:
    r = documents_run
    with cluster.explain_failure(r.dag_id, r.run_id):
        # Airflow's view.
        assert r.dag_run["state"] == "success"
        assert r.dag_run["conf"] == CONF
        assert r.dag_run["triggered_by"] == "rest_api"
        assert {t: ti["state"] for t, ti in r.tis.items()} == dict.fromkeys(STAGES, "success")
        assert {t: ti["try_number"] for t, ti in r.tis.items()} == dict.fromkeys(STAGES, 1)

        # The engine's view of the same run.
        run = r.kernel_run
        assert run.status.value == "COMPLETED"
        assert run.input == {**CONF, "language": "en"}
        assert run.config["embed"] == {"polls_needed": 2, "poll_interval": 1.0, "hold": False}
        assert {s: rec.status.value for s, rec in r.stages.items()} == dict.fromkeys(
            STAGES, "COMPLETED"
        )
        # A task try is a stage attempt.
        assert {s: rec.attempt for s, rec in r.stages.items()} == {
            t: ti["try_number"] for t, ti in r.tis.items()
        }
        assert {s: rec.execution_group for s, rec in r.stages.items()} == {
            "intake": 0,
            "summarize": 1,
            "classify": 1,
            "embed": 2,
            "publish": 3,
        }
        stage_out = {s: rec.output for s, rec in r.stages.items()}
        assert stage_out["intake"]["word_count"] == len(CONF["text"].split())
        assert stage_out["classify"] == {"category": "engineering", "hits": 5}
        assert stage_out["embed"]["batch_id"] == f"batch-{run.id[:8]}"
        assert run.output == stage_out["publish"]
        assert run.output["title"] == CONF["title"]
        assert run.output["category"] == "engineering"
        assert run.output["dimensions"] == 2

        # Each task's XCom summary (what the UI shows) matches the stage row.
        for task_id, ti in r.tis.items():
            summary = cluster.xcom(r.dag_id, r.run_id, task_id)
            rec = r.stages[task_id]
            assert summary["workflow_run_id"] == run.id
            assert summary["stage_id"] == task_id
            assert summary["status"] == rec.status.value
            assert summary["attempt"] == ti["try_number"] == rec.attempt
            if rec.output_ref is None:
                assert json.loads(summary["output_preview"]) == rec.output
        assert cluster.xcom(r.dag_id, r.run_id, "publish")["run_status"] == "COMPLETED"

        # Annotations: who triggered it (the REST user), the stages' own notes.
        notes = {(a.stage_id, a.key): a.value for a in r.annotations}
        assert notes[(None, "trigger.source")] == "airflow"
        assert notes[(None, "trigger.dag_id")] == r.dag_id
        assert notes[(None, "trigger.dag_run_id")] == r.run_id
        assert notes[(None, "trigger.user")] == r.dag_run["triggering_user_name"] == "admin"
        # The stage ran in a real task process: Airflow hid its own database from it.
        assert notes[("intake", "e2e.airflow_sql_alchemy_conn")] == "airflow-db-not-allowed:///"
        assert notes[("intake", "e2e.language")] == "en"
        assert notes[("classify", "decision.outcome")] == stage_out["classify"]["category"]
        assert notes[("publish", "e2e.published")] is True

        # The batch was submitted once, and polled from the triggerer (not the task).
        submissions = evidence(cluster, run.id, "submissions")
        polls = evidence(cluster, run.id, "polls")
        assert len(submissions) == 1
        assert len(polls) >= 2
        triggerer = cluster.processes["triggerer"].pid
        assert {p["pgid"] for p in polls} == {triggerer}
        assert submissions[0]["pgid"] != triggerer


def test_ai_calls_are_in_the_ledger(cluster: AirflowCluster, documents_run: Run) -> None:
    """``summarize`` and ``classify`` called the mock model through ``ctx.ai``: one ledger row
    each, labelled with the DAG, the task and the try, rolled up into the stage and run rows."""
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    r = documents_run
    with cluster.explain_failure(r.dag_id, r.run_id):
        ledger = SqlLedger(cluster.db_url)
        try:
            entries = ledger.entries(r.kernel_run.id)
        finally:
            ledger.close()
        by_stage = {str(e.stage_id): e for e in entries}
        assert len(entries) == 2 and set(by_stage) == {"summarize", "classify"}
        for stage_id, entry in by_stage.items():
            assert entry.provider == "mock" and entry.status == "ok"
            assert entry.dag_id == r.dag_id
            assert entry.dag_run_id == r.run_id
            assert entry.task_id == stage_id
            assert entry.attempt == r.tis[stage_id]["try_number"] == 1
            assert entry.total_tokens > 0
            assert r.stages[stage_id].metrics.get("ai_tokens") == entry.total_tokens
        assert by_stage["summarize"].model_key == "mock:e2e-summarizer"
        assert by_stage["classify"].model_key == "mock:e2e-classifier"
        assert r.stages["summarize"].output["summary"] == by_stage["summarize"].response
        notes = {(a.stage_id, a.key): a.value for a in r.annotations}
        assert notes[("classify", "decision.rationale")] == by_stage["classify"].response
        assert r.kernel_run.total_tokens == sum(e.total_tokens for e in entries)


def ledger_stages(cluster: AirflowCluster, workflow_run_id: str) -> list[str]:
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    ledger = SqlLedger(cluster.db_url)
    try:
        return sorted(str(e.stage_id) for e in ledger.entries(workflow_run_id))
    finally:
        ledger.close()


def test_clear_completed_stage_reruns_it_and_downstream(cluster: AirflowCluster) -> None:
    """Clearing ``summarize`` (with downstream) in the UI reruns summarize, embed and publish;
    its parallel sibling ``classify`` and ``intake`` keep their rows."""
    run_id = f"e2e_clear_{uuid.uuid4().hex[:8]}"
    with cluster.explain_failure(DAG, run_id):
        cluster.trigger(DAG, CONF, run_id)
        first = finished_run(cluster, DAG, run_id)
        assert first.dag_run["state"] == "success"

        cleared = cluster.clear(DAG, run_id, ["summarize"])
        assert cleared == ["embed", "publish", "summarize"]
        second = finished_run(cluster, DAG, run_id)

        assert second.dag_run["state"] == "success"
        assert {t: ti["state"] for t, ti in second.tis.items()} == dict.fromkeys(STAGES, "success")
        tries = {t: ti["try_number"] for t, ti in second.tis.items()}
        assert tries == {"intake": 1, "classify": 1, "summarize": 2, "embed": 2, "publish": 2}
        # The same workflow run (one per DAG run), completed again.
        assert second.kernel_run.id == first.kernel_run.id
        assert second.kernel_run.status.value == "COMPLETED"
        # Rerun stages have new rows at the new try; the others are the same rows.
        for sid in ("intake", "classify"):
            assert second.stages[sid].id == first.stages[sid].id
            assert second.stages[sid].attempt == 1
        for sid in ("summarize", "embed", "publish"):
            assert second.stages[sid].id != first.stages[sid].id
            assert second.stages[sid].attempt == 2 == tries[sid]
        # summarize called the model again; classify did not.
        assert ledger_stages(cluster, first.kernel_run.id) == [
            "classify",
            "summarize",
            "summarize",
        ]
        # A rerun batch stage submits a new batch (the rerun dropped the old one's files).
        assert len(evidence(cluster, first.kernel_run.id, "submissions")) == 1
        with store(cluster) as db:
            events = db.list_events(first.kernel_run.id)
        reruns = [e.payload for e in events if "rerun_stages" in e.payload]
        assert len(reruns) == 1, reruns
        assert reruns[0]["rerun_stages"] == ["summarize", "embed", "publish"]
        assert "cleared in Airflow" in reruns[0]["reason"]
        assert [e.type for e in events].count("workflow:completed") == 2


def test_cli_rerun_from_a_stage_and_report(cluster: AirflowCluster) -> None:
    """``airflow workflow-engine rerun --from-stage embed`` clears embed and publish; the
    scheduler reruns them and the CLI's run and cost reports agree with the engine."""
    run_id = f"e2e_cli_{uuid.uuid4().hex[:8]}"
    with cluster.explain_failure(DAG, run_id):
        cluster.trigger(DAG, CONF, run_id)
        first = finished_run(cluster, DAG, run_id)
        assert first.dag_run["state"] == "success"

        out = cluster.workflow_engine("rerun", DAG, run_id, "--from-stage", "embed", "-y").stdout
        assert "Cleared 2 task instance(s)" in out, out
        second = finished_run(cluster, DAG, run_id)

        assert second.dag_run["state"] == "success"
        tries = {t: ti["try_number"] for t, ti in second.tis.items()}
        assert tries == {"intake": 1, "summarize": 1, "classify": 1, "embed": 2, "publish": 2}
        assert second.kernel_run.status.value == "COMPLETED"
        for sid in ("intake", "summarize", "classify"):
            assert second.stages[sid].id == first.stages[sid].id
        assert second.stages["embed"].attempt == second.stages["publish"].attempt == 2

        shown = json.loads(
            cluster.workflow_engine("runs", "show", DAG, run_id, "-o", "json").stdout
        )
        assert json.dumps(shown).count(first.kernel_run.id) >= 1
        assert "COMPLETED" in json.dumps(shown)
        costs = cluster.workflow_engine("costs", "--dag-id", DAG, "--run-id", run_id).stdout
        assert "mock:e2e-summarizer" in costs and "mock:e2e-classifier" in costs


def test_cli_backfill_rerun_waits_one_at_a_time_and_sums_up(cluster: AirflowCluster) -> None:
    """``backfill-rerun --wait --max-active 1`` over two DAG runs with logical dates: the real
    scheduler reruns ``publish`` in the first run before the second is cleared, the progress
    bar ends full and the summary names both; the state file is gone afterwards."""
    tag = uuid.uuid4().hex[:6]
    dates = ("2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")
    run_ids = [f"e2e_backfill_{tag}_{i}" for i in (1, 2)]
    for run_id, when in zip(run_ids, dates, strict=True):
        body = {"dag_run_id": run_id, "logical_date": when, "conf": CONF}
        cluster.api("POST", f"/dags/{DAG}/dagRuns", body)
    with cluster.explain_failure(DAG, run_ids[1]):
        for run_id in run_ids:
            assert finished_run(cluster, DAG, run_id).dag_run["state"] == "success"
        out = cluster.workflow_engine(
            "backfill-rerun",
            DAG,
            "--from-stage",
            "publish",
            "--start-date",
            "2026-01-01",
            "--end-date",
            "2026-01-02",
            "--wait",
            "--max-active",
            "1",
            "--poll-interval",
            "1",
            "-y",
        ).stdout
        first_done = out.index(f"[1/2] {run_ids[0]}: rerun finished (success)")
        second_cleared = out.index(f"[2/2] {run_ids[1]}: cleared 1 task(s)")
        assert first_done < second_cleared, out  # --max-active 1
        assert f"[2/2] {run_ids[1]}: rerun finished (success)" in out, out
        assert "Rerunning" in out and "2/2" in out, out
        assert "Summary: 2 rerun, 0 skipped, 0 failed." in out, out
        for run_id in run_ids:
            tries = {t: ti["try_number"] for t, ti in cluster.task_instances(DAG, run_id).items()}
            assert tries["publish"] == 2 and tries["embed"] == 1, tries
        assert not list(Path(cluster.home).glob("workflow_engine/backfill-rerun/*.json"))


def test_fix_and_clear_a_failed_stage(cluster: AirflowCluster) -> None:
    """``classify`` fails (a bug); the DAG run and the workflow run fail. After the fix,
    clearing the failed task (with downstream) completes the same workflow run."""
    title = f"broken-{uuid.uuid4().hex[:8]}"
    marker = Path(cluster.home) / "broken" / title
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("bug")
    run_id = f"e2e_fix_{uuid.uuid4().hex[:8]}"
    with cluster.explain_failure(DAG, run_id):
        cluster.trigger(DAG, {**CONF, "title": title}, run_id)
        failed = finished_run(cluster, DAG, run_id)
        assert failed.dag_run["state"] == "failed"
        states = {t: ti["state"] for t, ti in failed.tis.items()}
        assert states["intake"] == "success" and states["classify"] == "failed"
        assert states["embed"] == states["publish"] == "upstream_failed"
        assert failed.kernel_run.status.value == "FAILED"
        assert "classify is broken" in (failed.kernel_run.error_message or "")
        assert failed.stages["classify"].status.value == "FAILED"
        # The failed run cancels its open stages: a summarize still running then is a ghost
        # (its task fails too); one that finished first keeps its row.
        sibling = {"success": "COMPLETED", "failed": "CANCELLED"}[states["summarize"]]
        assert failed.stages["summarize"].status.value == sibling

        marker.unlink()  # the fix
        to_clear = sorted(t for t, state in states.items() if state == "failed")
        assert cluster.clear(DAG, run_id, to_clear) == sorted({*to_clear, "embed", "publish"})
        fixed = finished_run(cluster, DAG, run_id)

        assert fixed.dag_run["state"] == "success"
        assert {t: ti["state"] for t, ti in fixed.tis.items()} == dict.fromkeys(STAGES, "success")
        assert fixed.kernel_run.id == failed.kernel_run.id
        assert fixed.kernel_run.status.value == "COMPLETED"
        assert fixed.kernel_run.error_message is None
        assert fixed.stages["classify"].attempt == 2 == fixed.tis["classify"]["try_number"]
        if states["summarize"] == "success":
            assert fixed.stages["summarize"].id == failed.stages["summarize"].id
        assert fixed.kernel_run.output["title"] == title
        assert fixed.kernel_run.output["category"] == "engineering"


def test_triggerer_restart_while_deferred(cluster: AirflowCluster) -> None:
    """Kill -9 the triggerer while ``embed`` is deferred; a new triggerer takes the trigger
    over, the run completes and the batch was submitted exactly once."""
    run_id = f"e2e_hold_{uuid.uuid4().hex[:8]}"
    with cluster.explain_failure(HOLD_DAG, run_id):
        cluster.trigger(HOLD_DAG, CONF, run_id)
        cluster.wait_for_task_state(HOLD_DAG, run_id, "embed", "deferred", RUN_TIMEOUT)
        run = kernel_run(cluster, HOLD_DAG, run_id)
        assert run is not None
        old = cluster.processes["triggerer"].pid

        def polled_by(pgid: int) -> bool:
            return any(p["pgid"] == pgid for p in evidence(cluster, run.id, "polls"))

        # The first triggerer is polling the batch (it is not ready: the test holds it).
        wait_until("the first triggerer to poll the batch", lambda: polled_by(old), 120)
        cluster.kill("triggerer")  # SIGKILL to its whole process group: a crash
        with store(cluster) as db:
            assert db.get_stage(run.id, "embed").status.value == "SUSPENDED"
        killed_at = time.monotonic()

        new = cluster.spawn("triggerer").pid
        # The trigger moves to the new triggerer once the old one's heartbeat is stale.
        wait_until("the new triggerer to poll the batch", lambda: polled_by(new), 180)
        takeover = time.monotonic() - killed_at
        assert cluster.task_instances(HOLD_DAG, run_id)["embed"]["state"] == "deferred"

        embed_blobs(cluster, run.id).put("release", b"1")  # the batch job is done
        r = finished_run(cluster, HOLD_DAG, run_id)

        assert r.dag_run["state"] == "success", f"run ended {r.dag_run['state']}"
        assert {t: ti["state"] for t, ti in r.tis.items()} == dict.fromkeys(STAGES, "success")
        # Neither a retry of the task nor a second submission.
        assert r.tis["embed"]["try_number"] == 1
        assert r.stages["embed"].attempt == 1
        submissions = evidence(cluster, run.id, "submissions")
        assert len(submissions) == 1, submissions
        pollers = {p["pgid"] for p in evidence(cluster, run.id, "polls")}
        assert pollers == {old, new}
        assert r.kernel_run.status.value == "COMPLETED"
        assert r.stages["embed"].output == {
            "vectors": [len(r.stages["summarize"].output["summary"]), len("engineering")],
            "batch_id": f"batch-{run.id[:8]}",
        }
        assert r.kernel_run.output["batch_id"] == f"batch-{run.id[:8]}"
        print(f"trigger taken over by the new triggerer {takeover:.1f}s after the kill")
