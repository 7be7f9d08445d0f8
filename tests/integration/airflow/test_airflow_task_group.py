"""``WorkflowTaskGroup``: workflows as task groups among a DAG's other tasks, in process.

Wiring, the cluster policy, one workflow run per group and DAG run (the run key), each
group's own config, the listeners' and sensors' run lookup with group-prefixed task ids. The
same DAG on the real Airflow processes: ``tests/e2e/test_e2e_dag_files.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.integration.airflow.fixtures import AIRFLOW_MARKS, REPO

pytestmark = AIRFLOW_MARKS

GROUPS_DAG = REPO / "tests" / "e2e" / "dags" / "e2e_groups.py"


@pytest.fixture
def engine_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache
    from airflow_workflow_engine.persistence.sql import migrate

    url = f"sqlite:///{tmp_path}/engine.db"
    migrate(url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", str(tmp_path / "blobs"))
    reset_kernel_cache()
    yield url
    reset_kernel_cache()


def _parse_groups_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.fspath(GROUPS_DAG), safe_mode=False)
    assert bag.import_errors == {}
    return bag.dags["e2e_groups"]


def test_groups_among_plain_tasks_are_wired_as_usual() -> None:
    from airflow_workflow_engine.dag import dag_policy
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from airflow_workflow_engine.operators.stage import StageOperator

    dag = _parse_groups_dag()
    stage_tasks = {t.task_id: t for t in dag.tasks if isinstance(t, StageOperator)}
    assert sorted(stage_tasks) == [
        "docs.classify",
        "docs.embed",
        "docs.intake",
        "docs.publish",
        "docs.summarize",
        "tally.count",
        "tally.score",
    ]
    assert {t.workflow_group for t in stage_tasks.values()} == {"docs", "tally"}
    assert stage_tasks["docs.embed"].stage.id == "embed"
    assert isinstance(stage_tasks["tally.score"], AsyncBatchStageOperator)
    assert dag.get_task("start").downstream_task_ids == {"docs.intake", "tally.count"}
    assert dag.get_task("end").upstream_task_ids == {"docs.publish", "tally.score"}
    assert dag.get_task("docs.embed").upstream_task_ids == {"docs.summarize", "docs.classify"}
    dag_policy(dag)  # two workflows in one DAG: no "mixed workflows" error
    assert stage_tasks["docs.intake"].workflow.id == "e2e-documents"
    assert stage_tasks["tally.count"].workflow.id == "e2e-tally"


def _ctx(run_id: str) -> Any:
    return {
        "dag_run": SimpleNamespace(run_id=run_id, conf={"title": "t", "text": "a b c"}),
        "params": {},
        "ti": SimpleNamespace(max_tries=0, try_number=1),
    }


def test_two_groups_of_one_workflow_have_a_run_and_a_config_each(engine_url: str) -> None:
    from airflow.sdk import DAG

    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.host.wait import WaitSpec, check
    from airflow_workflow_engine.plugins.listeners import mirror_task_failed
    from airflow_workflow_engine.task_group import WorkflowTaskGroup
    from tests.e2e.dags import e2e_workflows as wf

    with DAG("t_two_groups", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        a = WorkflowTaskGroup(
            workflow=wf.documents, group_id="a", config={"embed": {"polls_needed": 3}}
        )
        b = WorkflowTaskGroup(workflow=wf.documents, group_id="b", conn_id=None)
        a >> b
    assert dag.get_task("b.intake").upstream_task_ids == {"a.publish"}

    ta, tb = dag.get_task("a.intake"), dag.get_task("b.intake")
    kernel = WorkflowEngineHook(conn_id=None).get_kernel(wf.documents)
    run_a = ta.ensure_run(kernel, wf.documents, _ctx("r1"))
    run_b = tb.ensure_run(kernel, wf.documents, _ctx("r1"))
    assert run_a != run_b
    store = kernel.persistence
    rec_a = store.get_run(run_a)
    rec_b = store.get_run(run_b)
    assert (rec_a.idempotency_key, rec_b.idempotency_key) == (
        "t_two_groups/r1/a",
        "t_two_groups/r1/b",
    )
    assert rec_a.config["embed"]["polls_needed"] == 3
    assert rec_b.config["embed"]["polls_needed"] == 2  # the default: a's config is not b's
    # The same task again finds its group's run (one run per group and DAG run).
    assert ta.ensure_run(kernel, wf.documents, _ctx("r1")) == run_a

    # A sensor names a group's run by DAG run + group.
    spec = WaitSpec(kind="run", dag_id="t_two_groups", run_id="r1", workflow_group="b")
    assert check(store, spec).workflow_run_id == run_b

    # A group task marked failed cancels its group's run only.
    result = mirror_task_failed("t_two_groups", "r1", "b.embed", conn_id=None)
    assert (result.action, result.workflow_run_id) == ("cancelled", run_b)
    assert store.get_run(run_a).status.value == "RUNNING"
    assert store.get_run(run_b).status.value == "CANCELLED"


def test_a_failed_dag_run_cancels_every_group_run(engine_url: str) -> None:
    from airflow.sdk import DAG

    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.plugins.listeners import mirror_dag_run_failed
    from airflow_workflow_engine.task_group import WorkflowTaskGroup
    from tests.e2e.dags import e2e_workflows as wf

    with DAG("t_fail_groups", schedule=None, start_date=datetime(2024, 1, 1)):
        WorkflowTaskGroup(workflow=wf.documents, group_id="a", conn_id=None)
        WorkflowTaskGroup(workflow=wf.documents, group_id="b", conn_id=None)
    from airflow_workflow_engine.kernel.commands import RunClaimPending, RunCreate

    kernel = WorkflowEngineHook(conn_id=None).get_kernel(wf.documents)
    runs = []
    for gid in ("a", "b"):
        created = kernel.dispatch(
            RunCreate(
                workflow_id="e2e-documents",
                input={"title": "t", "text": "x"},
                idempotency_key=f"t_fail_groups/r9/{gid}",
            )
        )
        kernel.dispatch(RunClaimPending(workflow_run_id=created.workflow_run_id, worker_id="w"))
        runs.append(created.workflow_run_id)
    result = mirror_dag_run_failed("t_fail_groups", "r9", "task_failure", conn_id=None)
    assert result.action == "cancelled"
    assert {kernel.persistence.get_run(r).status.value for r in runs} == {"CANCELLED"}


def test_run_key_helpers() -> None:
    from airflow_workflow_engine.host.runs import (
        run_key,
        run_key_candidates,
        split_run_key,
    )

    assert run_key("d", "r") == "d/r"  # DAGs built by build_dag keep their key
    assert run_key("d", "r", "g") == "d/r/g"
    assert split_run_key("d/r/g") == ("d", "r", "g")
    assert split_run_key("d/r") == ("d", "r", None)
    assert split_run_key("d/r/g")[:2] == ("d", "r")
    assert run_key_candidates("d", "r", "outer.inner.stage") == [
        "d/r/outer.inner",
        "d/r/outer",
        "d/r",
    ]


def test_bad_arguments_are_named() -> None:
    from airflow.sdk import DAG

    from airflow_workflow_engine.errors import WorkflowDefinitionError
    from airflow_workflow_engine.task_group import WorkflowTaskGroup
    from tests.e2e.dags import e2e_workflows as wf

    with DAG("t_bad_group", schedule=None, start_date=datetime(2024, 1, 1)):
        with pytest.raises(TypeError, match="workflow must be a Workflow"):
            WorkflowTaskGroup(workflow="e2e-documents", group_id="x")  # type: ignore[arg-type]
        with pytest.raises(WorkflowDefinitionError, match=r"WorkflowTaskGroup 'y'.*nope"):
            WorkflowTaskGroup(workflow=wf.documents, group_id="y", config={"nope": {}})


def test_ledger_labels_of_a_group_run_name_the_dag_run(engine_url: str) -> None:
    """In the triggerer (no task context) AI calls are labelled from the run key: a group's
    run ``dag/run/group`` is DAG run ``run``, not ``run/group``."""
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.hooks.llm import AirflowAIFactory
    from airflow_workflow_engine.kernel.commands import RunCreate
    from tests.e2e.dags import e2e_workflows as wf

    kernel = WorkflowEngineHook(conn_id=None).get_kernel(wf.documents)
    created = kernel.dispatch(
        RunCreate(
            workflow_id="e2e-documents",
            input={"title": "t", "text": "x"},
            idempotency_key="t_labels/r1/docs",
        )
    )
    factory = AirflowAIFactory(ledger=None, persistence=kernel.persistence)  # type: ignore[arg-type]
    labels = factory._labels_of_run(created.workflow_run_id)
    assert (labels.dag_id, labels.dag_run_id) == ("t_labels", "r1")


def test_cli_rerun_names_a_group_stage_by_its_task_id() -> None:
    """``--from-stage`` takes a bare stage id when one task runs it, and the group-prefixed
    task id otherwise; an ambiguous stage id names the task ids to pass."""
    from airflow_workflow_engine.cli._common import CommandError
    from airflow_workflow_engine.cli.rerun import _Dag

    dags = object.__new__(_Dag)
    dags.dag_id = "d"
    dags._parsed = {
        "a.embed": ("a", "embed"),
        "b.embed": ("b", "embed"),
        "a.intake": ("a", "intake"),
        "solo": (None, "solo"),
    }
    dag: Any = SimpleNamespace(has_task=lambda task_id: True)
    assert dags.task_of_stage(dag, "b.embed") == "b.embed"
    assert dags.group_of("b.embed") == "b"
    assert dags.task_of_stage(dag, "intake") == "a.intake"
    assert dags.task_of_stage(dag, "solo") == "solo" and dags.group_of("solo") is None
    assert dags.task_of_stage(dag, "nope") is None
    ambiguous = r"stage 'embed' is in more than one .*a\.embed, b\.embed"
    with pytest.raises(CommandError, match=ambiguous):
        dags.task_of_stage(dag, "embed")


def test_sensors_name_a_group_run_by_workflow_group() -> None:
    from airflow_workflow_engine.sensors import StageSensor

    sensor = StageSensor(task_id="wait", stage_id="embed", workflow_group="docs")
    spec = sensor.wait_spec({"dag_run": SimpleNamespace(run_id="r1")})  # type: ignore[arg-type]
    assert spec.idempotency_key == f"{sensor.dag_id}/r1/docs"
    kwargs = spec.to_kwargs()
    assert kwargs["workflow_group"] == "docs"
    from airflow_workflow_engine.triggers.kernel_state import KernelStateTrigger

    trigger = KernelStateTrigger(**kwargs)
    assert trigger.spec.idempotency_key == spec.idempotency_key


def test_cli_finds_the_run_of_a_dag_run_with_workflow_task_groups(engine_url: str) -> None:
    """``runs show DAG RUN`` (and the other CLI commands naming a DAG run) find a group's
    workflow run; with two groups, the error names each group's workflow run id."""
    from airflow_workflow_engine.cli._common import CommandError, resolve_run
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.kernel.commands import RunCreate
    from tests.e2e.dags import e2e_workflows as wf

    kernel = WorkflowEngineHook(conn_id=None).get_kernel(wf.documents)
    ids = {}
    for key in ("t_cli/one/docs", "t_cli/two/a", "t_cli/two/b", "t_cli/twofold/c"):
        ids[key] = kernel.dispatch(
            RunCreate(
                workflow_id="e2e-documents",
                input={"title": "t", "text": "x"},
                idempotency_key=key,
            )
        ).workflow_run_id
    store: Any = kernel.persistence
    assert resolve_run(store, "t_cli", "one", None).id == ids["t_cli/one/docs"]
    with pytest.raises(CommandError, match=r"'t_cli/two' runs 2 workflow task groups") as err:
        resolve_run(store, "t_cli", "two", None)
    assert f"a: {ids['t_cli/two/a']}" in str(err.value)
    assert f"b: {ids['t_cli/two/b']}" in str(err.value)
    with pytest.raises(CommandError, match="has no workflow run"):
        resolve_run(store, "t_cli", "tw", None)  # a prefix of another run id is not a match
