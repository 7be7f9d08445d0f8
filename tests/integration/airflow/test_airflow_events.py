"""Event plugins under Airflow (``[workflow_engine] event_plugins``), on SQLite.

In process: the option's parsing and its errors. Under Airflow (``dag.test(use_executor=True)``
with the session's SQLite engine): the stage tasks of ``it_fanout`` (a parallel group) deliver
every event of their run to the recorder plugin of ``tests/e2e/event_plugins.py``, in order.
The PostgreSQL cluster test, with the dead-letter queue and the CLI's replay, is in
``tests/e2e/test_e2e_events_approvals.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.airflow.fixtures import AIRFLOW_MARKS, AirflowEnv, airflow_env

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]

PLUGINS = "tests.e2e.event_plugins"


# -- in process ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tests.e2e.event_plugins", "is not 'package.module:attribute'"),
        ("no_such_module_xyz:plugin", "cannot load 'no_such_module_xyz:plugin': ModuleNotFound"),
        (f"{PLUGINS}:no_such", f"cannot load '{PLUGINS}:no_such': AttributeError"),
        (f"{PLUGINS}:_folder", "is a function, not a Plugin"),
    ],
)
def test_a_wrong_event_plugins_entry_names_the_option_and_the_entry(
    spec: str, expected: str
) -> None:
    from airflow_workflow_engine.hooks.engine import EngineNotConfiguredError
    from airflow_workflow_engine.hooks.events import load_plugins

    with pytest.raises(EngineNotConfiguredError) as err:
        load_plugins(f"{PLUGINS}:recorder, {spec}")
    assert "[workflow_engine] event_plugins" in str(err.value)
    assert expected in str(err.value)


def test_the_engine_hook_builds_its_kernel_with_the_configured_plugins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow_workflow_engine.hooks.engine import (
        EngineNotConfiguredError,
        EngineSettings,
        kernel_for,
        reset_kernel_cache,
    )
    from airflow_workflow_engine.hooks.events import event_max_retries
    from airflow_workflow_engine.persistence.sql import migrate

    url = f"sqlite:///{tmp_path}/engine.db"
    migrate(url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__EVENT_PLUGINS", f"{PLUGINS}:recorder,")
    reset_kernel_cache()
    try:
        kernel = kernel_for(EngineSettings(sql_url=url, blob_store=str(tmp_path / "blobs")))
        assert [p.id for p in kernel.event_sink.plugins] == ["recorder"]  # type: ignore[attr-defined]
    finally:
        reset_kernel_cache()
    assert event_max_retries() == 3
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__EVENT_MAX_RETRIES", "0")
    with pytest.raises(EngineNotConfiguredError, match="event_max_retries must be"):
        event_max_retries()


# -- under Airflow ------------------------------------------------------------------------


def test_stage_tasks_deliver_every_event_of_their_run_in_order(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    env = AirflowEnv(
        home=airflow_env.home,
        env={
            **airflow_env.env,
            "AIRFLOW__WORKFLOW_ENGINE__EVENT_PLUGINS": f"{PLUGINS}:recorder",
            "WFE_E2E_EVENTS_DIR": str(tmp_path),
        },
        api_port=airflow_env.api_port,
    )
    result = env.run_dag("it_built_dags.py", "it_fanout", {"text": "a bb ccc"})
    assert result.state == "success", result.log[-4000:]
    run = env.kernel_run(result, "it-fanout")
    with env.store() as store:
        events = store.list_events(run.id)
    got: list[dict[str, Any]] = [
        json.loads(line) for line in (tmp_path / "recorder.jsonl").read_text().splitlines()
    ]
    assert [(g["sequence"], g["type"]) for g in got if g["run"] == run.id] == [
        (e.sequence, e.type) for e in events
    ]
    assert events[-1].type == "workflow:completed"
    assert all(e.published_at is not None for e in events)
    assert len({g["pid"] for g in got}) > 1  # delivered by the stage tasks, as they went
