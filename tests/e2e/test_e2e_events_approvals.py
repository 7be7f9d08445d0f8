"""End to end, on the real scheduler, dag-processor, triggerer and api-server (PostgreSQL):

- event plugins configured with ``[workflow_engine] event_plugins`` get every event of a run,
  in order, from the stage tasks; a plugin that fails puts its event in the dead-letter queue
  (``event_max_retries`` = 1), ``airflow workflow-engine events dlq`` shows it and
  ``events replay`` delivers it once the plugin works again;
- a clear of the stage before an ``ApprovalSensor`` voids the approval given for the old
  output: the cleared sensor waits for a new decision, and the run completes after it.

One cluster for this module (see ``cluster.py``), the plugins in ``tests/e2e/event_plugins.py``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import AirflowCluster, e2e_marks, running_cluster

pytestmark = e2e_marks(timeout=600, reruns=0)

DOCS_DAG = "e2e_documents"
APPROVAL_DAG = "e2e_approval"
CONF = {
    "title": "Ops notes",
    "text": "The Airflow scheduler runs our pipeline code after every deploy.",
}
RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-events")


@pytest.fixture(scope="module")
def cluster(
    postgres_server: Any, tmp_path_factory: pytest.TempPathFactory, events_dir: Path
) -> Iterator[AirflowCluster]:
    database = postgres_server.create_database()
    home = tmp_path_factory.mktemp("e2e-events-home")
    env = {
        "AIRFLOW__WORKFLOW_ENGINE__EVENT_PLUGINS": (
            "tests.e2e.event_plugins:recorder, tests.e2e.event_plugins:flaky"
        ),
        "AIRFLOW__WORKFLOW_ENGINE__EVENT_MAX_RETRIES": "1",
        "WFE_E2E_EVENTS_DIR": str(events_dir),
    }
    dags = (DOCS_DAG, APPROVAL_DAG)
    try:
        with running_cluster(home, postgres_server.url(database), dags, env=env) as cluster:
            yield cluster
    finally:
        postgres_server.drop_database(database)


def store(cluster: AirflowCluster) -> Any:
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    return SqlPersistence(cluster.db_url)


def workflow_run(cluster: AirflowCluster, dag_id: str, run_id: str) -> Any:
    with store(cluster) as db:
        return db.get_run_by_idempotency_key(f"{dag_id}/{run_id}")


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def delivery_times_ms(cluster: AirflowCluster, dag_id: str, run_id: str) -> dict[str, float]:
    """Per stage task: how long its event delivery took (from its log)."""
    folder = cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    found: dict[str, float] = {}
    for path in folder.glob("task_id=*/attempt=*.log"):
        task = path.parent.name.split("=", 1)[1]
        for match in re.finditer(
            r"Delivered \d+ event\(s\) of workflow run \w+ in ([\d.]+) ms",
            path.read_text(errors="replace"),
        ):
            found[task] = found.get(task, 0.0) + float(match.group(1))
    return found


def test_event_plugins_get_every_event_in_order_and_the_dlq_replays(
    cluster: AirflowCluster, events_dir: Path
) -> None:
    (events_dir / "flaky.broken").write_text("down")
    run_id = f"e2e_events_{uuid.uuid4().hex[:8]}"
    with cluster.explain_failure(DOCS_DAG, run_id):
        cluster.trigger(DOCS_DAG, CONF, run_id)
        assert cluster.wait_for_run(DOCS_DAG, run_id, RUN_TIMEOUT)["state"] == "success"
        run = workflow_run(cluster, DOCS_DAG, run_id)
        assert run is not None and run.status.value == "COMPLETED"
        with store(cluster) as db:
            events = db.list_events(run.id)
        # Every event of the run reached the recorder, in the run's order, from stage tasks.
        got = [
            (e["sequence"], e["type"])
            for e in lines(events_dir / "recorder.jsonl")
            if e["run"] == run.id
        ]
        assert got == [(e.sequence, e.type) for e in events], got
        assert len({e["pid"] for e in lines(events_dir / "recorder.jsonl")}) > 1
        assert events[-1].type == "workflow:completed"
        # flaky failed on workflow:completed: dead-lettered after one try; the others are out.
        assert [e.type for e in events if e.dlq_at is not None] == ["workflow:completed"]
        assert all(e.published_at is not None for e in events if e.dlq_at is None)

        dlq = json.loads(cluster.workflow_engine("events", "dlq", "-o", "json").stdout)
        assert [(d["workflow_run_id"], d["type"]) for d in dlq] == [(run.id, "workflow:completed")]
        assert "webhook down" in dlq[0]["last_error"]
        listed = json.loads(
            cluster.workflow_engine("events", "list", DOCS_DAG, run_id, "-o", "json").stdout
        )
        assert [row["sequence"] for row in listed] == [e.sequence for e in events]
        assert {row["state"] for row in listed} == {"published", "dead-lettered"}

        # Still down: the replay fails again, says so, and the event is back in the DLQ.
        again = cluster.workflow_engine("events", "replay", "--workflow-run-id", run.id, ok=False)
        assert again.returncode == 1 and "1 failed again" in again.stdout, again.stdout
        (events_dir / "flaky.broken").unlink()
        replayed = cluster.workflow_engine("events", "replay", DOCS_DAG, run_id).stdout
        assert "1 delivered" in replayed and "recorder, flaky" in replayed, replayed
        assert [(e["run"], e["type"]) for e in lines(events_dir / "flaky.jsonl")] == [
            (run.id, "workflow:completed")
        ]
        assert json.loads(cluster.workflow_engine("events", "dlq", "-o", "json").stdout) == []
        with store(cluster) as db:
            assert db.list_unpublished_events(workflow_run_id=run.id) == []

        times = delivery_times_ms(cluster, DOCS_DAG, run_id)
        print(f"event delivery per stage task (ms): {json.dumps(times, sort_keys=True)}")
        assert set(times) == {"intake", "summarize", "classify", "embed", "publish"}
        assert max(times.values()) < 2000, times


def test_clear_before_the_approval_point_waits_for_a_new_approval(
    cluster: AirflowCluster,
) -> None:
    from airflow_workflow_engine.kernel.approvals import approval_state

    run_id = f"e2e_approval_{uuid.uuid4().hex[:8]}"
    with cluster.explain_failure(APPROVAL_DAG, run_id):
        cluster.trigger(APPROVAL_DAG, {"text": "hello"}, run_id)
        cluster.wait_for_task_state(APPROVAL_DAG, run_id, "wait_for_approval", "deferred")
        cluster.workflow_engine("approve", APPROVAL_DAG, run_id, "--by", "alice", "--comment", "ok")
        assert cluster.wait_for_run(APPROVAL_DAG, run_id, RUN_TIMEOUT)["state"] == "success"
        first = workflow_run(cluster, APPROVAL_DAG, run_id)
        assert first.status.value == "COMPLETED"

        # measure is fixed and cleared (with downstream): alice approved the old output.
        cleared = cluster.clear(APPROVAL_DAG, run_id, ["measure"])
        assert cleared == ["measure", "report", "wait_for_approval"]
        cluster.wait_for_task_state(
            APPROVAL_DAG, run_id, "wait_for_approval", "deferred", timeout=240
        )
        time.sleep(3)  # a few of the trigger's polls: alice's approval must not count
        tis = cluster.task_instances(APPROVAL_DAG, run_id)
        assert tis["wait_for_approval"]["state"] == "deferred"
        assert tis["report"]["state"] in (None, "none", "scheduled")
        with store(cluster) as db:
            state = approval_state(db.list_annotations(first.id))
            assert state.decision is None and state.voided[0][0].approver == "alice"
            assert db.get_run(first.id).status.value == "RUNNING"

        cluster.workflow_engine(
            "approve", APPROVAL_DAG, run_id, "--by", "bob", "--comment", "re-checked"
        )
        assert cluster.wait_for_run(APPROVAL_DAG, run_id, RUN_TIMEOUT)["state"] == "success"
        event = cluster.xcom(APPROVAL_DAG, run_id, "wait_for_approval")
        assert event["details"]["approver"] == "bob"
        second = workflow_run(cluster, APPROVAL_DAG, run_id)
        assert second.id == first.id and second.status.value == "COMPLETED"
        assert second.error_message is None
