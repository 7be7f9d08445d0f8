"""DAGs from workflows (params, wiring, doc) and workflows from hand-wired DAGs, in process."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.integration.airflow.fixtures import AIRFLOW_MARKS, REPO

pytestmark = AIRFLOW_MARKS


def _stage_task(dag: Any, task_id: str) -> Any:
    from airflow_workflow_engine.operators.stage import StageOperator

    task = dag.get_task(task_id)
    assert isinstance(task, StageOperator)
    return task


@pytest.fixture
def wf() -> Any:
    from tests.integration.airflow import workflows

    return workflows


# -- params from the input model ----------------------------------------------------------


class Address(BaseModel):
    city: str = "Paris"


class Form(BaseModel):
    title: str = Field(description="Document title")
    pages: int = Field(3, ge=1, description="Page count")
    lang: str | None = Field(None, description="Language")
    tags: list[str] = Field(default_factory=list)
    address: Address = Address()


def test_params_are_typed_with_defaults_and_descriptions() -> None:
    from airflow_workflow_engine.dag import params_from_model

    params = params_from_model(Form)
    assert list(params) == ["title", "pages", "lang", "tags", "address"]
    title, pages, lang, tags, address = (params[k] for k in params)
    assert title.schema["type"] == "string" and title.description == "Document title"
    assert not title.has_value  # required: the trigger form asks for it
    assert pages.value == 3 and pages.schema["type"] == "integer"
    assert pages.schema["minimum"] == 1 and pages.description == "Page count"
    assert lang.value is None and lang.schema["type"] == ["string", "null"]
    assert tags.value is None and tags.schema["type"] == ["array", "null"]
    assert address.value == {"city": "Paris"}
    assert address.schema["type"] == "object" and "$ref" not in json.dumps(address.schema)
    # Airflow validates values against these schemas at trigger time.
    pages.resolve(5)
    with pytest.raises(Exception, match=r"minimum|less than"):
        pages.resolve(0)


def test_build_dag_one_task_per_stage_groups_chained(wf: Any) -> None:
    from airflow_workflow_engine.dag import build_dag
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from airflow_workflow_engine.operators.stage import StageOperator

    dag = build_dag(wf.fanout, dag_id="t_fanout", start_date=datetime(2024, 1, 1))
    assert sorted(dag.task_ids) == ["count", "join", "split", "upper"]
    assert dag.get_task("split").downstream_task_ids == {"upper", "count"}
    assert dag.get_task("join").upstream_task_ids == {"upper", "count"}
    assert all(type(t) is StageOperator for t in dag.tasks)
    assert dag.fileloc == __file__  # workers re-parse the file that called build_dag
    assert dag.tags == {"workflow-engine"} or list(dag.tags) == ["workflow-engine"]
    assert "| 2 | `upper`, `count` |" in (dag.doc_md or "")
    assert set(dag.params) == {"text"}

    batch = build_dag(
        wf.batch, dag_id="t_batch", deferrable=False, config={"embed": {"mode": "resume"}}
    )
    embed = batch.get_task("embed")
    assert isinstance(embed, AsyncBatchStageOperator) and embed.deferrable is False
    assert embed.config == {"mode": "resume"}
    assert batch.description == "Prepare, embed in a batch, finish."


def test_build_dag_rejects_bad_config_and_unknown_stages(wf: Any) -> None:
    from airflow_workflow_engine.dag import build_dag
    from airflow_workflow_engine.errors import ConfigValidationError, WorkflowDefinitionError

    with pytest.raises(ConfigValidationError, match=r"suffix"):
        build_dag(wf.linear, dag_id="t_bad_cfg", config={"shout": {"suffix": "toolong!"}})
    with pytest.raises(WorkflowDefinitionError, match="unknown stage"):
        build_dag(wf.linear, dag_id="t_bad_cfg2", config={"nope": {}})
    # Templated config is validated when the task runs, not at parse time.
    dag = build_dag(wf.linear, dag_id="t_tmpl", config={"shout": {"suffix": "{{ params.x }}"}})
    assert _stage_task(dag, "shout").config == {"suffix": "{{ params.x }}"}


def test_scheduled_dag_needs_defaults_for_required_input(wf: Any) -> None:
    from airflow_workflow_engine.dag import build_dag
    from airflow_workflow_engine.errors import WorkflowDefinitionError

    with pytest.raises(WorkflowDefinitionError, match=r"required fields without defaults \(name\)"):
        build_dag(wf.linear, dag_id="t_sched", schedule="@daily", start_date=datetime(2024, 1, 1))


def test_operator_checks_at_parse_time(wf: Any) -> None:
    from airflow_workflow_engine.errors import StageNotFoundError, WorkflowDefinitionError
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from airflow_workflow_engine.operators.stage import StageOperator

    with pytest.raises(WorkflowDefinitionError, match="AsyncBatchStageOperator"):
        StageOperator(stage=wf.embed)
    with pytest.raises(TypeError, match="StageOperator"):
        AsyncBatchStageOperator(stage=wf.greet)
    with pytest.raises(StageNotFoundError, match="greet"):
        StageOperator(stage=wf.greet, workflow=wf.fanout)
    with pytest.raises(TypeError, match="must be a Stage"):
        StageOperator(stage="greet")  # type: ignore[arg-type]
    assert StageOperator(stage=wf.greet).task_id == "greet"


# -- workflows from hand-wired DAGs -------------------------------------------------------


def test_workflow_from_hand_wired_dag(wf: Any) -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_workflow_engine.dag import dag_policy, workflow_from_dag
    from airflow_workflow_engine.operators.stage import StageOperator

    with DAG("t_hand", schedule=None) as dag:
        measure = StageOperator(stage=wf.measure)
        middle = EmptyOperator(task_id="middle")
        report = StageOperator(stage=wf.report)
        measure >> middle >> report
    workflow = workflow_from_dag(dag)
    assert workflow.id == "t_hand"
    assert [[s.id for s in g] for g in workflow.execution_plan()] == [["measure"], ["report"]]
    assert workflow.input is wf.HandInput and workflow.output is wf.Reported
    assert workflow_from_dag(dag) is workflow  # cached while the DAG keeps its shape
    assert report.workflow is workflow
    dag_policy(dag)  # a valid DAG passes the cluster policy


def test_parallel_layers_and_output_model(wf: Any) -> None:
    from airflow.sdk import DAG

    from airflow_workflow_engine.dag import workflow_from_dag
    from airflow_workflow_engine.operators.stage import StageOperator

    with DAG("t_par", schedule=None) as dag:
        split = StageOperator(stage=wf.split)
        upper = StageOperator(stage=wf.upper)
        count = StageOperator(stage=wf.count)
        split >> [upper, count]
    workflow = workflow_from_dag(dag)
    assert [sorted(s.id for s in g) for g in workflow.execution_plan()] == [
        ["split"],
        ["count", "upper"],
    ]
    out = workflow.output.model_validate({"upper": {"words": ["A"]}, "count": {"count": 1}})
    assert out.model_dump(by_alias=True) == {"upper": {"words": ["A"]}, "count": {"count": 1}}


def test_dependency_not_upstream_is_an_error(wf: Any) -> None:
    from airflow.sdk import DAG

    from airflow_workflow_engine.dag import dag_policy
    from airflow_workflow_engine.errors import WorkflowDefinitionError
    from airflow_workflow_engine.operators.stage import StageOperator

    with DAG("t_unwired", schedule=None) as dag:
        StageOperator(stage=wf.measure)
        StageOperator(stage=wf.report)
    with pytest.raises(
        WorkflowDefinitionError,
        match=r"'report' \(stage 'report'\) depends on stage 'measure', but task 'measure' is "
        r"not upstream of it\. Chain them: measure >> report",
    ):
        dag_policy(dag)


def test_earlier_group_must_be_upstream(wf: Any) -> None:
    from airflow.sdk import DAG

    from airflow_workflow_engine.dag import workflow_from_dag
    from airflow_workflow_engine.errors import WorkflowDefinitionError
    from airflow_workflow_engine.operators.stage import StageOperator

    with DAG("t_skew", schedule=None) as dag:
        split = StageOperator(stage=wf.split)
        upper = StageOperator(stage=wf.upper)
        count = StageOperator(stage=wf.count, task_id="count_a")
        split >> upper >> count
        extra = StageOperator(stage=wf.greet)
        split >> extra  # 'greet' is in group 2 with 'upper', but not upstream of 'count_a'
    with pytest.raises(WorkflowDefinitionError, match=r"'count_a' is in group 3.*'greet'"):
        workflow_from_dag(dag)


def test_mixed_or_conflicting_definitions(wf: Any) -> None:
    from airflow.sdk import DAG

    from airflow_workflow_engine.dag import workflow_from_dag
    from airflow_workflow_engine.errors import WorkflowDefinitionError
    from airflow_workflow_engine.operators.stage import StageOperator

    with DAG("t_mixed", schedule=None) as dag:
        StageOperator(stage=wf.split, workflow=wf.fanout)
        StageOperator(stage=wf.greet)
    with pytest.raises(WorkflowDefinitionError, match="mix workflows"):
        workflow_from_dag(dag)

    with DAG("t_inputs", schedule=None) as dag2:
        StageOperator(stage=wf.greet)
        StageOperator(stage=wf.split)
    with pytest.raises(WorkflowDefinitionError, match="different input models"):
        workflow_from_dag(dag2)


def test_dag_without_stage_tasks_is_left_alone() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_workflow_engine.dag import dag_policy

    with DAG("t_plain", schedule=None) as dag:
        EmptyOperator(task_id="x")
    dag_policy(dag)


# -- DAG files stay cheap -------------------------------------------------------------------


def test_dag_file_imports_no_ai_sdk_boto3_or_sql_models() -> None:
    code = """
import sys, time, json
import airflow.sdk
before = set(sys.modules)
t = time.perf_counter()
import airflow_workflow_engine
from airflow_workflow_engine.dag import build_dag
from airflow_workflow_engine.operators import StageOperator, AsyncBatchStageOperator
from airflow_workflow_engine.examples.document_pipeline import document_pipeline
dag = build_dag(document_pipeline, dag_id="cheap")
elapsed = time.perf_counter() - t
new = sorted(set(sys.modules) - before)
print(json.dumps({"elapsed": elapsed, "new": new}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    new: list[str] = data["new"]
    forbidden = (
        "openai",
        "google.genai",
        "anthropic",
        "boto3",
        "botocore",
        "sqlalchemy",
        "alembic",
    )
    assert not [m for m in new if m.split(".")[0] in forbidden or m.startswith("google.genai")]
    assert not [m for m in new if m.startswith("airflow_workflow_engine.persistence")]
    assert not [m for m in new if m.startswith("airflow_workflow_engine.blob")]
    assert data["elapsed"] < 2.0, f"importing and building took {data['elapsed']:.2f}s"


def test_trigger_form_values_reach_the_run_input(wf: Any) -> None:
    """The operator merges the DAG params that are input fields under the run's conf."""
    from types import SimpleNamespace

    from airflow_workflow_engine.dag import build_dag

    dag = build_dag(wf.linear, dag_id="t_input")
    task = _stage_task(dag, "greet")
    context: Any = {
        "params": {"name": "form", "times": 3, "style": None, "tags": None, "unrelated": 1},
        "dag_run": SimpleNamespace(conf={"name": "conf"}, run_id="r1"),
    }
    data = task._run_input(wf.linear, context)
    assert data == {"name": "conf", "times": 3}
    assert wf.linear.validate_input(data).model_dump() == {
        "name": "conf",
        "times": 3,
        "style": None,
        "tags": [],
    }
