"""End to end: DAG files as users write them, on the real ``airflow scheduler``,
``dag-processor``, ``triggerer`` and ``api-server``, on PostgreSQL and on SQLite.

- ``e2e_inline`` (``dags/e2e_inline.py``): a workflow defined in its DAG file, with a parallel
  group and a deferrable batch stage, turned into a DAG by ``workflow.to_dag()``. Nothing
  names an import path: the triggerer loads the DAG file from its DAG bundle.
- ``e2e_groups`` (``dags/e2e_groups.py``): ``start >> [docs, tally] >> end`` with two
  ``WorkflowTaskGroup`` s, each its own workflow run per DAG run; the CLI reruns one group
  from a stage.

One cluster per backend (see ``cluster.py``): ``postgresql`` keeps Airflow's metadata and the
engine's tables in one PostgreSQL database; ``sqlite`` runs Airflow 3's LocalExecutor on a
SQLite metadata file (Airflow 3.3 accepts it) with the engine's tables in a second SQLite
file. Run one test at a time with ``-k`` on a small machine.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import AirflowCluster, e2e_marks, running_cluster

pytestmark = e2e_marks(timeout=600)

INLINE_DAG = "e2e_inline"
GROUPS_DAG = "e2e_groups"
NOTE = {"title": "Inline", "text": "a workflow in its own DAG file"}
RUN_TIMEOUT = 300


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowCluster]:
    """A migrated, running Airflow on PostgreSQL or SQLite; stopped at the end."""
    home = tmp_path_factory.mktemp(f"e2e-dagfiles-{request.param}")
    dags = (INLINE_DAG, GROUPS_DAG)
    if request.param == "sqlite":
        engine_url = f"sqlite:///{home}/engine.db"
        with running_cluster(
            home, f"sqlite:///{home}/airflow.db", dags, engine_url=engine_url
        ) as c:
            yield c
        return
    server = request.getfixturevalue("postgres_server")
    database = server.create_database()
    try:
        with running_cluster(home, server.url(database), dags) as cluster:
            yield cluster
    finally:
        server.drop_database(database)


@dataclass
class Finished:
    dag_run: dict[str, Any]
    tis: dict[str, dict[str, Any]]
    kernel_run: Any
    stages: dict[str, Any]


def finished(cluster: AirflowCluster, dag_id: str, run_id: str, key: str) -> Finished:
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    dag_run = cluster.wait_for_run(dag_id, run_id, RUN_TIMEOUT)
    with SqlPersistence(cluster.engine_url) as db:
        run = db.get_run_by_idempotency_key(key)
        assert run is not None, f"no workflow run with idempotency key {key}"
        stages = {s.stage_id: s for s in db.list_stages(run.id)}
    return Finished(dag_run, cluster.task_instances(dag_id, run_id), run, stages)


def blobs(cluster: AirflowCluster, workflow_run_id: str, stage_id: str, folder: str) -> int:
    from airflow_workflow_engine.blob.local import LocalBlobStore
    from airflow_workflow_engine.blob.scoped import ScopedBlobStore, stage_prefix

    scope = ScopedBlobStore(
        LocalBlobStore(Path(cluster.home) / "blobs"), stage_prefix(workflow_run_id, stage_id)
    )
    return len(scope.list(f"{folder}/"))


def task_log(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str, n: int) -> str:
    folder = cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "\n".join(
        p.read_text(errors="replace") for p in folder.glob(f"task_id={task_id}/attempt={n}.log*")
    )


def test_inline_workflow_runs_and_a_cleared_middle_stage_reruns(cluster: AirflowCluster) -> None:
    """The DAG file's own workflow runs to the end, its batch stage waiting in the triggerer,
    which found the workflow in the DAG file; clearing ``shout`` (with downstream) reruns
    shout and the batch stage, and the run completes again."""
    run_id = f"inline_{uuid.uuid4().hex[:8]}"
    with cluster.explain_failure(INLINE_DAG, run_id):
        cluster.trigger(INLINE_DAG, NOTE, run_id)
        first = finished(cluster, INLINE_DAG, run_id, f"{INLINE_DAG}/{run_id}")
        assert first.dag_run["state"] == "success"
        assert {t: ti["state"] for t, ti in first.tis.items()} == dict.fromkeys(
            ["split", "shout", "count", "score"], "success"
        )
        assert first.kernel_run.status.value == "COMPLETED"
        words = NOTE["text"].split()
        expected = len(words) * 10 + len(" ".join(words))
        assert first.kernel_run.output["score"] == expected
        run_id_k = first.kernel_run.id
        assert blobs(cluster, run_id_k, "score", "submissions") == 1
        # The task deferred with the DAG file as the workflow's address.
        log = task_log(cluster, INLINE_DAG, run_id, "score", 1)
        assert "finds workflow 'e2e-inline' in DAG file 'e2e_inline.py'" in log, log[-3000:]

        cleared = cluster.clear(INLINE_DAG, run_id, ["shout"])
        assert cleared == ["score", "shout"]
        second = finished(cluster, INLINE_DAG, run_id, f"{INLINE_DAG}/{run_id}")
        assert second.dag_run["state"] == "success"
        tries = {t: ti["try_number"] for t, ti in second.tis.items()}
        assert tries == {"split": 1, "count": 1, "shout": 2, "score": 2}
        assert second.kernel_run.id == run_id_k
        assert second.kernel_run.status.value == "COMPLETED"
        assert second.stages["shout"].attempt == second.stages["score"].attempt == 2
        assert second.stages["count"].id == first.stages["count"].id
        assert second.kernel_run.output["score"] == expected
        assert second.stages["score"].output["batch_id"].endswith("-2")
        assert json.dumps(second.kernel_run.output)


DOCS = ["docs.intake", "docs.summarize", "docs.classify", "docs.embed", "docs.publish"]
TALLY = ["tally.count", "tally.score"]


def test_two_workflow_task_groups_between_plain_tasks_and_a_cli_rerun_of_one(
    cluster: AirflowCluster,
) -> None:
    """``start >> [docs, tally] >> end``: each group runs its own workflow run (keys
    ``e2e_groups/<run_id>/docs`` and ``.../tally``), the plain tasks run around them, and
    ``rerun --from-stage docs.embed`` clears that group's embed and publish (and ``end``)
    only; the same workflow run of ``docs`` completes again, ``tally``'s is untouched."""
    run_id = f"groups_{uuid.uuid4().hex[:8]}"
    conf = {"title": "Groups", "text": "The scheduler runs two workflows in one DAG run."}
    with cluster.explain_failure(GROUPS_DAG, run_id):
        cluster.trigger(GROUPS_DAG, conf, run_id)
        docs = finished(cluster, GROUPS_DAG, run_id, f"{GROUPS_DAG}/{run_id}/docs")
        tally = finished(cluster, GROUPS_DAG, run_id, f"{GROUPS_DAG}/{run_id}/tally")
        assert docs.dag_run["state"] == "success"
        assert {t: ti["state"] for t, ti in docs.tis.items()} == dict.fromkeys(
            ["start", *DOCS, *TALLY, "end"], "success"
        )
        assert docs.kernel_run.id != tally.kernel_run.id
        assert docs.kernel_run.workflow_id == "e2e-documents"
        assert tally.kernel_run.workflow_id == "e2e-tally"
        assert docs.kernel_run.status.value == tally.kernel_run.status.value == "COMPLETED"
        assert tally.kernel_run.output == {
            "words": len(conf["text"].split()),
            "batch_id": "tally-1",
        }
        assert docs.kernel_run.output["title"] == "Groups"
        # No run under the plain key: the DAG itself has no stage tasks outside the groups.
        from airflow_workflow_engine.persistence.sql import SqlPersistence

        with SqlPersistence(cluster.engine_url) as db:
            assert db.get_run_by_idempotency_key(f"{GROUPS_DAG}/{run_id}") is None
        # The group-prefixed task's XCom names its group's run.
        summary = cluster.xcom(GROUPS_DAG, run_id, "docs.embed")
        assert summary["workflow_run_id"] == docs.kernel_run.id
        assert summary["stage_id"] == "embed"
        log = task_log(cluster, GROUPS_DAG, run_id, "tally.score", 1)
        assert "finds workflow 'e2e-tally' in DAG file 'e2e_groups.py'" in log, log[-3000:]

        out = cluster.workflow_engine(
            "rerun", GROUPS_DAG, run_id, "--from-stage", "docs.embed", "-y"
        ).stdout
        assert "Cleared 3 task instance(s)" in out, out
        again = finished(cluster, GROUPS_DAG, run_id, f"{GROUPS_DAG}/{run_id}/docs")
        tally2 = finished(cluster, GROUPS_DAG, run_id, f"{GROUPS_DAG}/{run_id}/tally")
        assert again.dag_run["state"] == "success"
        tries = {t: ti["try_number"] for t, ti in again.tis.items()}
        assert tries == {
            **dict.fromkeys(["start", *DOCS, *TALLY], 1),
            "docs.embed": 2,
            "docs.publish": 2,
            "end": 2,
        }
        assert again.kernel_run.id == docs.kernel_run.id
        assert again.kernel_run.status.value == "COMPLETED"
        assert again.stages["embed"].attempt == again.stages["publish"].attempt == 2
        assert again.stages["intake"].id == docs.stages["intake"].id
        assert {s: r.id for s, r in tally2.stages.items()} == {
            s: r.id for s, r in tally.stages.items()
        }

        # The UI's page of a group's run, by DAG run + group.
        page = cluster.request("GET", f"/workflow-engine/api/dags/{GROUPS_DAG}/runs/{run_id}/tally")
        assert page["workflow_run_id"] == tally.kernel_run.id
        assert (page["dag_id"], page["dag_run_id"]) == (GROUPS_DAG, run_id)
