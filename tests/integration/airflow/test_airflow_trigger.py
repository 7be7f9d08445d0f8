"""``SuspendedStageTrigger`` and the operators against a real SQLite engine, in process.

The trigger is rebuilt from its ``serialize()`` output (as the triggerer does) and must yield
exactly one event; the operators run with a minimal task context, so deferral, retries while
suspended and resuming are checked without Airflow's processes.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.integration.airflow.fixtures import AIRFLOW_MARKS

pytestmark = AIRFLOW_MARKS


@pytest.fixture
def engine_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A migrated SQLite engine configured through ``[workflow_engine]`` (no connection)."""
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache, settings_from_config
    from airflow_workflow_engine.persistence.sql import migrate

    url = f"sqlite:///{tmp_path}/engine.db"
    migrate(url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", str(tmp_path / "blobs"))
    reset_kernel_cache()
    settings = settings_from_config()
    assert settings is not None
    yield {"url": url, "settings": settings, "blobs": tmp_path / "blobs"}
    reset_kernel_cache()


def _wf() -> Any:
    from tests.integration.airflow import workflows

    return workflows


def _suspend(settings: Any, mode: str = "output", poll: float = 0.2) -> tuple[Any, str]:
    """A run of the batch workflow whose 'embed' stage is SUSPENDED."""
    from airflow_workflow_engine.hooks.engine import kernel_for
    from airflow_workflow_engine.kernel.commands import (
        JobExecute,
        RunClaimPending,
        RunCreate,
        RunTransition,
    )

    kernel = kernel_for(settings, _wf().batch)
    run = kernel.dispatch(
        RunCreate(
            workflow_id="it-batch",
            input={"items": ["a", "bb"]},
            config={"embed": {"poll_interval": poll, "polls_needed": 2, "mode": mode}},
        )
    )
    run_id = run.workflow_run_id
    kernel.dispatch(RunClaimPending(workflow_run_id=run_id))
    assert kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="prepare")).outcome == (
        "completed"
    )
    kernel.dispatch(RunTransition(workflow_run_id=run_id))
    result = kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="embed"))
    assert result.outcome == "suspended"
    return kernel, run_id


def _rebuilt(trigger: Any) -> Any:
    """The trigger as the triggerer rebuilds it: from the class path and JSON kwargs."""
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**json.loads(json.dumps(kwargs)))


def _events(trigger: Any, timeout: float = 30) -> list[Any]:
    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout))


def _trigger(run_id: str, **overrides: Any) -> Any:
    from airflow_workflow_engine.triggers.suspended import SuspendedStageTrigger

    kwargs: dict[str, Any] = {
        "workflow_run_id": run_id,
        "stage_id": "embed",
        "workflow_ref": "tests.integration.airflow.workflows:batch",
        "dag_id": "it_batch",
        "task_id": "embed",
        "poll_interval": 0.2,
        "conn_id": None,
    }
    kwargs.update(overrides)
    return SuspendedStageTrigger(**kwargs)


def test_serialize_is_ids_and_primitives() -> None:
    trigger = _trigger("run-1", conn_id="workflow_engine_default")
    path, kwargs = trigger.serialize()
    assert path == "airflow_workflow_engine.triggers.suspended.SuspendedStageTrigger"
    assert kwargs == {
        "workflow_run_id": "run-1",
        "stage_id": "embed",
        "workflow_ref": "tests.integration.airflow.workflows:batch",
        "dag_id": "it_batch",
        "task_id": "embed",
        "poll_interval": 0.2,
        "conn_id": "workflow_engine_default",
    }
    assert _rebuilt(trigger).serialize() == (path, kwargs)


def test_one_completed_event_after_polls(engine_env: dict[str, Any]) -> None:
    kernel, run_id = _suspend(engine_env["settings"])
    events = _events(_rebuilt(_trigger(run_id)))
    assert [e.payload["status"] for e in events] == ["completed"]
    assert events[0].payload == {
        "status": "completed",
        "workflow_run_id": run_id,
        "stage_id": "embed",
        "message": None,
    }
    stage = kernel.persistence.get_stage(run_id, "embed")
    assert stage.status.value == "COMPLETED" and stage.output == {
        "vectors": [1, 2],
        "batch_id": f"batch-{run_id[:8]}",
    }
    polls = engine_env["blobs"] / "runs" / run_id / "stages" / "embed" / "polls"
    assert polls.read_text() == "2"


def test_ready_without_output_is_requeued(engine_env: dict[str, Any]) -> None:
    kernel, run_id = _suspend(engine_env["settings"], mode="resume")
    events = _events(_trigger(run_id))
    assert [e.payload["status"] for e in events] == ["requeued"]
    stage = kernel.persistence.get_stage(run_id, "embed")
    assert stage.status.value == "PENDING" and stage.resume_state is not None


def test_cancelled_run_ends_the_wait(engine_env: dict[str, Any]) -> None:
    from airflow_workflow_engine.kernel.commands import RunCancel

    kernel, run_id = _suspend(engine_env["settings"], poll=30)
    kernel.dispatch(RunCancel(workflow_run_id=run_id, reason="user"))
    events = _events(_trigger(run_id, poll_interval=30))
    assert [e.payload["status"] for e in events] == ["cancelled"]
    # This kernel knows the workflow: run.cancel called on_cancel; the trigger did not again.
    assert _count(engine_env, run_id, "cancels") == 1


def _count(engine_env: dict[str, Any], run_id: str, name: str) -> int:
    path = engine_env["blobs"] / "runs" / run_id / "stages" / "embed" / name
    return int(path.read_text()) if path.exists() else 0


def test_run_cancelled_where_the_workflow_is_unknown_cancels_the_job_from_the_trigger(
    engine_env: dict[str, Any],
) -> None:
    """A listener in the api-server cancels the run without calling ``on_cancel`` (it cannot
    import the workflow): the trigger, which can, stops the batch job once."""
    from airflow_workflow_engine.kernel.status import Status

    kernel, run_id = _suspend(engine_env["settings"], poll=30)
    # What the listener's run.cancel leaves behind when the workflow is not registered.
    kernel.persistence.update_stage(run_id, "embed", status=Status.CANCELLED)
    kernel.persistence.update_run(run_id, status=Status.CANCELLED)
    events = _events(_trigger(run_id, poll_interval=30))
    assert [e.payload["status"] for e in events] == ["cancelled"]
    assert _count(engine_env, run_id, "cancels") == 1
    assert kernel.persistence.get_stage(run_id, "embed").metrics["on_cancel_called"] is True
    # A second trigger (a restarted triggerer) does not cancel twice.
    assert [e.payload["status"] for e in _events(_trigger(run_id))] == ["cancelled"]
    assert _count(engine_env, run_id, "cancels") == 1


@pytest.mark.parametrize(
    ("state", "cancelled"),
    [("failed", True), ("success", True), (None, False), ("scheduled", False), ("queued", False)],
)
def test_on_kill_cancels_the_job_unless_the_task_was_cleared(
    engine_env: dict[str, Any], state: str | None, cancelled: bool
) -> None:
    kernel, run_id = _suspend(engine_env["settings"], poll=30)
    trigger = _rebuilt(_trigger(run_id, poll_interval=30))

    async def task_state() -> str | None:
        return state

    trigger._task_state = task_state
    asyncio.run(asyncio.wait_for(trigger.on_kill(), 30))
    run = kernel.persistence.get_run(run_id)
    stage = kernel.persistence.get_stage(run_id, "embed")
    if cancelled:
        assert run.status.value == "CANCELLED" and stage.status.value == "CANCELLED"
        assert f"Airflow task 'embed' was marked {state}" in run.error_message
        assert _count(engine_env, run_id, "cancels") == 1
    else:  # cleared: the task re-attaches to the batch, which keeps running
        assert run.status.value in ("RUNNING", "SUSPENDED")
        assert stage.status.value == "SUSPENDED"
        assert _count(engine_env, run_id, "cancels") == 0


def test_a_second_trigger_after_a_restart_reports_from_the_row(engine_env: dict[str, Any]) -> None:
    """A triggerer restart rebuilds the trigger; a stage another poller finished is reported
    without calling check_completion again."""
    _, run_id = _suspend(engine_env["settings"])
    first = _events(_trigger(run_id))
    again = _events(_rebuilt(_trigger(run_id)))
    assert [e.payload["status"] for e in first + again] == ["completed", "completed"]
    polls = engine_env["blobs"] / "runs" / run_id / "stages" / "embed" / "polls"
    assert polls.read_text() == "2"


def test_unimportable_workflow_is_an_error_event(engine_env: dict[str, Any]) -> None:
    events = _events(_trigger("run-x", workflow_ref="no_such_module_xyz:wf"))
    assert len(events) == 1 and events[0].payload["status"] == "error"
    assert "no_such_module_xyz" in events[0].payload["message"]
    assert "triggerer" in events[0].payload["message"]


def test_missing_engine_settings_name_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache

    monkeypatch.delenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", raising=False)
    reset_kernel_cache()
    events = _events(_trigger("run-x"))
    message = events[0].payload["message"]
    assert events[0].payload["status"] == "error"
    assert "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN" in message
    assert "workflow_engine_default" in message


# -- the operators with a minimal task context --------------------------------------------


def _context(try_number: int = 1, max_tries: int = 0, conf: dict[str, Any] | None = None) -> Any:
    return {
        "dag_run": SimpleNamespace(
            run_id="manual__1", conf=conf or {"items": ["a", "bb"]}, triggering_user_name="t"
        ),
        "ti": SimpleNamespace(try_number=try_number, max_tries=max_tries),
        "params": {},
    }


def test_operator_defers_once_and_retries_do_not_resubmit(engine_env: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_workflow_engine.dag import build_dag
    from airflow_workflow_engine.hooks.engine import kernel_for
    from airflow_workflow_engine.triggers.suspended import SuspendedStageTrigger

    wf = _wf()
    dag = build_dag(
        wf.batch,
        dag_id="it_batch_inproc",
        conn_id=None,
        config={"embed": {"poll_interval": 0.2, "polls_needed": 2}},
    )
    prepare, embed, finish = (_task(dag, t) for t in ("prepare", "embed", "finish"))
    summary = prepare.execute(_context())
    run_id = summary["workflow_run_id"]
    assert summary["status"] == "COMPLETED" and summary["attempt"] == 1

    with pytest.raises(TaskDeferred) as deferred:
        embed.execute(_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, SuspendedStageTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert trigger.workflow_ref == "tests.integration.airflow.workflows:batch"
    assert trigger.conn_id is None and trigger.poll_interval == 0.2

    # Airflow retries (or someone clears) the task while the stage waits: defer again.
    with pytest.raises(TaskDeferred):
        embed.execute(_context(try_number=2, max_tries=1))
    submissions = engine_env["blobs"] / "runs" / run_id / "stages" / "embed" / "submissions"
    assert submissions.read_text() == "1"

    (event,) = _events(_rebuilt(trigger))
    done = embed.execute_complete(_context(), event=event.payload)
    assert done["status"] == "COMPLETED" and done["output_preview"].startswith('{"vectors"')
    final = finish.execute(_context())
    assert final["run_status"] == "COMPLETED"
    kernel = kernel_for(engine_env["settings"], wf.batch)
    run = kernel.persistence.get_run(run_id)
    assert run is not None
    assert run.status.value == "COMPLETED" and run.output == {
        "total": 3,
        "batch_id": f"batch-{run_id[:8]}",
    }
    annotations = {a.key: a.value for a in kernel.persistence.list_annotations(run_id)}
    assert annotations["trigger.dag_id"] == "it_batch_inproc"
    assert annotations["trigger.dag_run_id"] == "manual__1"


def test_clear_reruns_a_finished_stage_and_a_retry_replays_it(
    engine_env: dict[str, Any],
) -> None:
    """Airflow's clear sets ``max_tries = try_number + retries``: a try past that series'
    start reruns the finished stage; a retry inside the series replays its stored result."""
    from airflow_workflow_engine.dag import build_dag
    from airflow_workflow_engine.hooks.engine import kernel_for

    wf = _wf()
    dag = build_dag(wf.linear, dag_id="it_linear_clear", conn_id=None)
    greet, shout = _task(dag, "greet"), _task(dag, "shout")
    conf = {"name": "ada"}
    first = greet.execute(_context(conf=conf))
    shout.execute(_context(conf=conf))
    run_id = first["workflow_run_id"]
    kernel = kernel_for(engine_env["settings"], wf.linear)
    before = kernel.persistence.get_stage(run_id, "greet")
    assert kernel.persistence.get_run(run_id).status.value == "COMPLETED"

    # A duplicate delivery of try 1 (retries=0, never cleared): the stored result.
    again = greet.execute(_context(conf=conf))
    assert again["replayed"] is True and again["attempt"] == 1

    # Cleared after try 1: try 2 with max_tries = 1 + 0 reruns greet (a new row).
    cleared = greet.execute(_context(try_number=2, max_tries=1, conf=conf))
    assert cleared["replayed"] is False and cleared["attempt"] == 2
    after = kernel.persistence.get_stage(run_id, "greet")
    assert after.id != before.id and after.attempt == 2
    # shout was not cleared (no task states here): it keeps its row and the run completes.
    assert cleared["run_status"] == "COMPLETED"
    events = [e.payload for e in kernel.persistence.list_events(run_id)]
    reruns = [p for p in events if "rerun_stages" in p]
    assert reruns == [
        {"rerun_stages": ["greet"], "reason": "task 'greet' cleared in Airflow (try 2)"}
    ]

    # The same try number with retries=1 is a retry inside the first series: replayed.
    greet.retries = 1
    retry = greet.execute(_context(try_number=2, max_tries=1, conf=conf))
    assert retry["replayed"] is True and retry["attempt"] == 2
    assert kernel.persistence.get_stage(run_id, "greet").id == after.id


def test_execute_complete_maps_failures(engine_env: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_workflow_engine.dag import build_dag

    dag = build_dag(_wf().batch, dag_id="it_batch_fail", conn_id=None)
    embed = _task(dag, "embed")
    for status, match in [
        ("timed_out", "timed out: waited too long"),
        ("cancelled", "not retried"),
        ("error", "waiting in the triggerer failed"),
    ]:
        event = {
            "status": status,
            "workflow_run_id": "r",
            "stage_id": "embed",
            "message": "waited too long",
        }
        with pytest.raises(AirflowFailException, match=match):
            embed._complete(_fake_kernel(), event, _context())
    with pytest.raises(AirflowFailException, match="no outcome"):
        embed.execute_complete(_context(), event=None)


def _task(dag: Any, task_id: str) -> Any:
    task: Any = dag.get_task(task_id)
    return task


def _fake_kernel() -> Any:
    from airflow_workflow_engine.kernel.commands import RunTransitionResult
    from airflow_workflow_engine.kernel.status import Status

    def dispatch(command: Any) -> Any:
        return RunTransitionResult(workflow_run_id="r", action="failed", status=Status.FAILED)

    return SimpleNamespace(dispatch=dispatch)


def test_workflow_ref_of_a_derived_workflow_points_at_the_dag_file(tmp_path: Path) -> None:
    import importlib.util
    import sys

    from airflow_workflow_engine.triggers.refs import import_path_of, load_workflow
    from tests.integration.airflow.fixtures import DAGS

    spec = importlib.util.spec_from_file_location(
        "unusual_prefix_0123_it_hand_dag", DAGS / "it_hand_dag.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as Airflow's DAG processor and workers load DAG files
    try:
        spec.loader.exec_module(module)
        dag = module.dag
        report = dag.get_task("report")
        ref = import_path_of(report.workflow, dag)
        assert ref is not None and ref.endswith("it_hand_dag:dag")
        loaded = load_workflow(ref)
        assert [[s.id for s in g] for g in loaded.execution_plan()] == [["measure"], ["report"]]
    finally:
        sys.modules.pop(spec.name, None)
