"""Stage config and DAG run conf under Airflow (issue 9, item 8), in process: typos in a
stage's config and unknown model providers are DAG import errors; a conf key that is neither
an input field nor a DAG param fails the task by name and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from tests.integration.airflow.fixtures import AIRFLOW_MARKS

pytestmark = AIRFLOW_MARKS


class Doc(BaseModel):
    text: str


def _ai_stage() -> Any:
    from airflow_workflow_engine import define_stage, with_ai_config

    class Options(BaseModel):
        max_words: int = 10

    return define_stage(
        id="summarize",
        input=Doc,
        output=Doc,
        config=with_ai_config(Options),
        execute=lambda ctx: ctx.input,
    )


def test_unknown_config_key_is_a_parse_error_naming_the_closest_key() -> None:
    from airflow_workflow_engine.dag import build_dag
    from airflow_workflow_engine.errors import ConfigValidationError
    from tests.integration.airflow import workflows

    with pytest.raises(ConfigValidationError) as err:
        build_dag(workflows.linear, dag_id="t_typo", config={"shout": {"sufix": "!"}})
    assert str(err.value) == (
        "unknown key 'sufix' in config of stage 'shout'; did you mean 'suffix'?"
    )
    # Keys of a templated config are checked too; its values are rendered at run time.
    with pytest.raises(ConfigValidationError, match="did you mean 'suffix'"):
        build_dag(workflows.linear, dag_id="t_typo2", config={"shout": {"sufix": "{{ ds }}"}})


def test_missing_model_is_a_parse_error_naming_stage_and_field() -> None:
    from airflow_workflow_engine.errors import ConfigValidationError
    from airflow_workflow_engine.operators.stage import StageOperator

    with pytest.raises(ConfigValidationError) as err:
        StageOperator(stage=_ai_stage())
    assert str(err.value) == "Invalid config of stage 'summarize': model: Field required"
    task = StageOperator(stage=_ai_stage(), config={"model": "mock:echo"})  # asked for: fine
    assert task.config == {"model": "mock:echo"}


def test_unknown_model_provider_is_a_parse_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_workflow_engine.errors import ConfigValidationError
    from airflow_workflow_engine.operators.stage import StageOperator

    with pytest.raises(ConfigValidationError) as err:
        StageOperator(stage=_ai_stage(), task_id="s1", config={"model": "opnai:gpt-4o"})
    assert str(err.value) == (
        "Invalid config of stage 'summarize' (task 's1'): model: unknown provider 'opnai' in "
        "model key 'opnai:gpt-4o'; known providers: google, mock, openai; did you mean "
        "'openai:gpt-4o'?"
    )
    with pytest.raises(ConfigValidationError, match="known providers: google, mock, openai"):
        StageOperator(stage=_ai_stage(), config={"model": "openrouter:llama"})
    # A provider given connections in [workflow_engine] llm_conn_ids is known.
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__LLM_CONN_IDS", "openrouter=llm_openrouter")
    StageOperator(stage=_ai_stage(), config={"model": "openrouter:llama"})


# -- the DAG run's conf ----------------------------------------------------------------------


@pytest.fixture
def engine_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A migrated SQLite engine configured through ``[workflow_engine]``."""
    from airflow_workflow_engine.hooks.engine import (
        kernel_for,
        reset_kernel_cache,
        settings_from_config,
    )
    from airflow_workflow_engine.persistence.sql import migrate
    from tests.integration.airflow import workflows

    url = f"sqlite:///{tmp_path}/engine.db"
    migrate(url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", str(tmp_path / "blobs"))
    reset_kernel_cache()
    settings = settings_from_config()
    assert settings is not None
    yield kernel_for(settings, workflows.linear)
    reset_kernel_cache()


def _context(conf: dict[str, Any], params: dict[str, Any]) -> Any:
    return {
        "dag_run": SimpleNamespace(run_id="manual__1", conf=conf, triggering_user_name="t"),
        "ti": SimpleNamespace(try_number=1, max_tries=0),
        "params": params,
    }


def test_conf_key_that_is_neither_input_field_nor_param_fails_the_task(engine_env: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_workflow_engine.dag import build_dag
    from tests.integration.airflow import workflows

    dag = build_dag(workflows.linear, dag_id="t_conf", conn_id=None)
    greet: Any = dag.get_task("greet")
    params = {"name": None, "times": 2, "style": None, "tags": None}
    with pytest.raises(AirflowFailException) as err:
        greet.execute(_context({"name": "ada", "tims": 3}, params))
    assert "unknown key 'tims' in input for workflow 'it-linear'; did you mean 'times'?" in str(
        err.value
    )
    assert engine_env.persistence.list_runs() == []
    assert engine_env.persistence.get_run_by_idempotency_key("t_conf/manual__1") is None


def test_conf_keys_that_are_dag_params_but_not_input_fields_are_left_out(
    engine_env: Any,
) -> None:
    from airflow_workflow_engine.dag import build_dag
    from tests.integration.airflow import workflows

    dag = build_dag(workflows.linear, dag_id="t_conf_params", conn_id=None)
    greet: Any = dag.get_task("greet")
    # The trigger form sends every param, including those meant for other tasks.
    params = {"name": None, "times": 2, "style": None, "tags": None, "notify": "ops@x"}
    summary = greet.execute(_context({"name": "ada", "notify": "ops@x"}, params))
    run = engine_env.persistence.get_run(summary["workflow_run_id"])
    assert run is not None and run.input == {"name": "ada", "times": 2, "style": None, "tags": []}
