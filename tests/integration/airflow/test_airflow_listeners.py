"""Failures mirrored into the kernel by the provider's listeners (cancel is authoritative).

In process: the listeners called through Airflow's own listener manager with real Airflow
objects (``DagRun``, ``TaskInstance`` of a serialized DAG, the task runner's
``RuntimeTaskInstance``) against a real SQLite engine.

Under Airflow: a DAG run that fails (a plain task failed after a stage) under
``dag.test(use_executor=True)``; and, through Airflow's REST API served by a real
``api-server`` (``--apps core``), a DAG run marked failed while its approval sensor waits and
a running stage task marked failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_workflow_engine.kernel.status import Status
from tests.integration.airflow.fixtures import (
    AIRFLOW_MARKS,
    REPO,
    AirflowEnv,
    airflow_bin,
    airflow_env,
    free_port,
    tail,
)
from tests.integration.airflow.test_airflow_sensors import (
    _complete,
    _start_run,
    deferred,
    engine,
    in_background,
    known_runs,
    newest_run_of,
    run_sensor_dag,
    sensor_env,
    wait_for,
)

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env", "engine", "sensor_env"]  # fixtures, imported so pytest finds them


def _listener_manager() -> Any:
    """A listener manager with Airflow's hook specs and the provider's plugin's listeners,
    built the way Airflow builds its own (pluggy checks the hook signatures)."""
    from airflow._shared.listeners.spec import lifecycle, taskinstance
    from airflow.listeners.listener import ListenerManager
    from airflow.listeners.spec import dagrun

    from airflow_workflow_engine.plugins.plugin import WorkflowEnginePlugin

    manager = ListenerManager()  # type: ignore[no-untyped-call]
    for spec in (lifecycle, dagrun, taskinstance):
        manager.add_hookspecs(spec)
    for listener in WorkflowEnginePlugin.listeners:
        manager.add_listener(listener)  # type: ignore[no-untyped-call]
    return manager


def _serialized_task(task_id: str) -> Any:
    """A task of a serialized DAG, as the scheduler and the api-server hold it."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_workflow_engine.operators.stage import StageOperator
    from tests.integration.airflow import workflows as wf

    with DAG("it_dag", schedule=None) as dag:
        StageOperator(stage=wf.measure) >> EmptyOperator(task_id="plain")
    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).get_task(task_id)


def _task_instance(task_id: str, state: str, run_id: str = "manual__1") -> Any:
    import uuid

    from airflow.models.taskinstance import TaskInstance

    return TaskInstance(
        _serialized_task(task_id), dag_version_id=uuid.uuid4(), run_id=run_id, state=state
    )


def _status(kernel: Any, run_id: str) -> tuple[Status, str | None]:
    run = kernel.persistence.get_run(run_id)
    return run.status, run.error_message


def _final(env: AirflowEnv, run_id: str) -> Any:
    """The workflow run once it is final, else ``None``."""
    with env.store() as store:
        run = store.get_run(run_id)
    return run if run is not None and run.status.is_terminal else None


# -- in process ---------------------------------------------------------------------------


def test_plugin_registers_the_listeners() -> None:
    from airflow._shared.plugins_manager import is_valid_plugin

    from airflow_workflow_engine.plugins import listeners
    from airflow_workflow_engine.plugins.plugin import WorkflowEnginePlugin

    assert is_valid_plugin(WorkflowEnginePlugin)
    assert WorkflowEnginePlugin.name == "workflow_engine"
    assert WorkflowEnginePlugin.listeners == [listeners]
    hook = _listener_manager().hook
    for name in ("on_dag_run_failed", "on_task_instance_failed", "before_stopping"):
        impls = getattr(hook, name).get_hookimpls()
        assert [i.plugin_name for i in impls] == [listeners.__name__]


def test_failed_dag_run_cancels_its_workflow_run(engine: Any) -> None:
    from airflow.models.dagrun import DagRun

    run_id = _start_run(engine, key="it_dag/manual__1")
    _complete(engine, run_id, "measure")
    hook = _listener_manager().hook
    dag_run = DagRun(dag_id="it_dag", run_id="manual__1", run_type="manual")
    hook.on_dag_run_failed(dag_run=dag_run, msg="task_failure")
    status, error = _status(engine, run_id)
    assert status == Status.CANCELLED
    assert error == "cancelled: Airflow DAG run it_dag/manual__1 failed (task_failure)"
    stages = {s.stage_id: s.status for s in engine.persistence.list_stages(run_id)}
    assert stages == {"measure": Status.COMPLETED, "report": Status.CANCELLED}
    events = [e.type for e in engine.persistence.list_events(run_id)]
    assert events[-1] == "workflow:cancelled"
    # Again (the api-server and the scheduler both report it): nothing changes.
    hook.on_dag_run_failed(dag_run=dag_run, msg="again")
    assert _status(engine, run_id) == (status, error)


def _approval_sensor() -> Any:
    from airflow.sdk import DAG

    from airflow_workflow_engine.sensors import ApprovalSensor

    with DAG("it_dag", schedule=None):
        return ApprovalSensor(task_id="wait_for_approval", conn_id=None)


def test_rejection_is_the_workflow_runs_error_not_the_dag_run_failure(engine: Any) -> None:
    """The sensor's rejection cancels its own DAG run's workflow run naming who, when and
    why; the DAG run's failure that follows leaves that error in place."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.sdk.execution_time.context import set_current_context

    from airflow_workflow_engine.host.approvals import reject
    from airflow_workflow_engine.host.wait import WaitSpec, check

    run_id = _start_run(engine, key="it_dag/manual__rej")
    _complete(engine, run_id, "measure")
    (note, *_) = reject(engine, run_id, "bob", "numbers are off")
    spec = WaitSpec(kind="approval", dag_id="it_dag", run_id="manual__rej")
    event = check(engine.persistence, spec).event(spec)
    dag_run = DagRun(dag_id="it_dag", run_id="manual__rej", run_type="manual")
    with set_current_context({"dag_run": dag_run}), pytest.raises(AirflowFailException):  # type: ignore[typeddict-item]
        _approval_sensor().resolve(event)
    expected = (
        f"cancelled: rejected by bob at {note.created_at.isoformat()}: 'numbers are off' "
        "(task 'wait_for_approval' of DAG 'it_dag')"
    )
    assert _status(engine, run_id) == (Status.CANCELLED, expected)
    _listener_manager().hook.on_dag_run_failed(dag_run=dag_run, msg="task_failure")
    assert _status(engine, run_id) == (Status.CANCELLED, expected)


def test_a_rejected_runs_dag_run_failure_names_the_rejection(engine: Any) -> None:
    """When the sensor could not record it (another DAG's sensor, an engine hiccup), the
    listener puts the standing rejection first in the run's error."""
    from airflow.models.dagrun import DagRun

    from airflow_workflow_engine.host.approvals import reject

    run_id = _start_run(engine, key="it_dag/manual__rej2")
    (note, *_) = reject(engine, run_id, "bob", "numbers are off")
    dag_run = DagRun(dag_id="it_dag", run_id="manual__rej2", run_type="manual")
    _listener_manager().hook.on_dag_run_failed(dag_run=dag_run, msg="task_failure")
    assert _status(engine, run_id) == (
        Status.CANCELLED,
        f"cancelled: rejected by bob at {note.created_at.isoformat()}: 'numbers are off'; "
        "Airflow DAG run it_dag/manual__rej2 failed (task_failure)",
    )


def test_mirror_functions_say_what_they_did(engine: Any) -> None:
    from airflow_workflow_engine.plugins.listeners import mirror_dag_run_failed

    assert mirror_dag_run_failed("it_dag", "no_such_run").action == "no_workflow_run"
    run_id = _start_run(engine, key="it_dag/manual__2")
    first = mirror_dag_run_failed("it_dag", "manual__2", "boom")
    assert (first.action, first.workflow_run_id, first.status) == ("cancelled", run_id, "CANCELLED")
    assert mirror_dag_run_failed("it_dag", "manual__2").action == "already_final"


def test_completed_or_failed_runs_are_left_alone(engine: Any) -> None:
    from airflow_workflow_engine.plugins.listeners import mirror_dag_run_failed

    run_id = _start_run(engine, key="it_dag/manual__3")
    _complete(engine, run_id, "measure", "report")
    assert _status(engine, run_id)[0] == Status.COMPLETED
    assert mirror_dag_run_failed("it_dag", "manual__3").action == "already_final"
    assert _status(engine, run_id)[0] == Status.COMPLETED


def test_stage_task_marked_failed_cancels_the_run(engine: Any) -> None:
    run_id = _start_run(engine, key="it_dag/manual__1")
    hook = _listener_manager().hook
    ti = _task_instance("measure", "failed")
    # As the api-server reports a state set by a user: no previous state.
    hook.on_task_instance_failed(
        previous_state=None,
        task_instance=ti,
        error="TaskInstance's state was manually set to `failed`.",
    )
    status, error = _status(engine, run_id)
    assert status == Status.CANCELLED
    assert error == (
        "cancelled: Airflow task 'measure' of DAG run it_dag/manual__1 was marked failed"
    )


def test_task_failures_the_operator_handles_are_not_mirrored(engine: Any) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from airflow.utils.state import TaskInstanceState

    from airflow_workflow_engine.plugins.listeners import should_mirror_task_failure

    run_id = _start_run(engine, key="it_dag/manual__1")
    hook = _listener_manager().hook
    # In the task's own process the operator has told the kernel already (retry or failure).
    fields: dict[str, Any] = {
        "task_id": "measure",
        "dag_id": "it_dag",
        "run_id": "manual__1",
        "state": TaskInstanceState.FAILED,
        "try_number": 1,
    }
    in_task = RuntimeTaskInstance.model_construct(**fields)
    # The scheduler failing a try that will be retried, and a task that is not a stage.
    retry = _task_instance("measure", "up_for_retry")
    plain = _task_instance("plain", "failed")
    for ti in (in_task, retry, plain):
        assert not should_mirror_task_failure(ti)
        hook.on_task_instance_failed(previous_state="running", task_instance=ti, error="x")
    assert _status(engine, run_id)[0] == Status.RUNNING
    # The scheduler failing a stage task for good (its process died): mirrored.
    died = _task_instance("measure", "failed")
    assert should_mirror_task_failure(died)
    hook.on_task_instance_failed(previous_state="running", task_instance=died, error="killed")
    status, error = _status(engine, run_id)
    assert status == Status.CANCELLED
    assert error is not None and "failed outside its operator: killed" in error


def test_unconfigured_engine_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.dagrun import DagRun

    from airflow_workflow_engine.hooks.engine import reset_kernel_cache
    from airflow_workflow_engine.plugins.listeners import mirror_dag_run_failed

    monkeypatch.delenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", raising=False)
    reset_kernel_cache()
    assert mirror_dag_run_failed("d", "r").action == "not_configured"
    _listener_manager().hook.on_dag_run_failed(
        dag_run=DagRun(dag_id="d", run_id="r", run_type="manual"), msg="x"
    )


def test_engine_tables_not_migrated_is_not_an_error(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache
    from airflow_workflow_engine.plugins.listeners import mirror_dag_run_failed

    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path}/e.db")
    reset_kernel_cache()
    try:
        assert mirror_dag_run_failed("d", "r").action == "not_configured"
    finally:
        reset_kernel_cache()


# -- under Airflow ------------------------------------------------------------------------


def test_failed_dag_run_cancels_the_workflow_run_under_airflow(sensor_env: AirflowEnv) -> None:
    result = run_sensor_dag(sensor_env, "it_fail_after_stage", {"text": "hello"})
    assert result.state == "failed"
    assert result.ti_state("boom") == "failed" and result.ti_state("report") == "upstream_failed"
    run = sensor_env.kernel_run(result, "it_fail_after_stage")
    assert run.status == Status.CANCELLED
    assert run.error_message.startswith(
        f"cancelled: Airflow DAG run it_fail_after_stage/{result.run_id} failed"
    )
    stages = sensor_env.stages(run.id)
    assert stages["measure"].status == Status.COMPLETED
    assert stages["report"].status == Status.CANCELLED


@pytest.fixture(scope="module")
def core_api(sensor_env: AirflowEnv) -> Iterator[str]:
    """Airflow's REST API (an ``api-server --apps core`` on 127.0.0.1, every user an admin),
    with the provider's plugin loaded: its base URL."""
    port = free_port()
    env = {**sensor_env.env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    log_path = sensor_env.home / "core-api-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [airflow_bin(), "api-server", "--apps", "core", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"api-server exited:\n{tail(log_path)}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/api/v2/version", timeout=2) as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"api-server not up:\n{tail(log_path)}")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _patch(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        data: dict[str, Any] = json.loads(response.read())
        return data


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def test_dag_run_marked_failed_through_the_rest_api(sensor_env: AirflowEnv, core_api: str) -> None:
    before = known_runs(sensor_env, "it_approval")
    pool, future = in_background(
        lambda: run_sensor_dag(sensor_env, "it_approval", {"text": "hello"})
    )
    try:
        run = wait_for("the workflow run", lambda: newest_run_of(sensor_env, "it_approval", before))
        airflow_run_id = run.idempotency_key.split("/", 1)[1]
        wait_for(
            "the sensor to defer",
            lambda: deferred(sensor_env, "it_approval", airflow_run_id, "wait_for_approval"),
        )
        body = _patch(
            core_api,
            f"/api/v2/dags/it_approval/dagRuns/{_quote(airflow_run_id)}",
            {"state": "failed"},
        )
        assert body["state"] == "failed"
        # The api-server's listener cancelled the workflow run, through the engine's own DB.
        run = wait_for(
            "the workflow run to be cancelled",
            lambda: _final(sensor_env, run.id),
            timeout=30,
        )
        result = future.result(timeout=240)
    finally:
        pool.shutdown(wait=False)
    assert run.status == Status.CANCELLED
    assert run.error_message == (
        f"cancelled: Airflow DAG run it_approval/{airflow_run_id} failed "
        "(Dag Run's state was manually set to `failed`.)"
    )
    stages = sensor_env.stages(run.id)
    assert stages["measure"].status == Status.COMPLETED
    assert stages["report"].status == Status.CANCELLED
    assert result.state == "failed"
    assert result.ti_state("report") != "success"


def test_running_stage_task_marked_failed_through_the_rest_api(
    sensor_env: AirflowEnv, core_api: str
) -> None:
    before = known_runs(sensor_env, "it_slow")
    pool, future = in_background(lambda: run_sensor_dag(sensor_env, "it_slow", {"seconds": 20}))
    try:
        run = wait_for("the workflow run", lambda: newest_run_of(sensor_env, "it_slow", before))
        wait_for(
            "the stage to run",
            lambda: (
                sensor_env.stages(run.id).get("slow")
                and sensor_env.stages(run.id)["slow"].status == Status.RUNNING
            ),
        )
        airflow_run_id = run.idempotency_key.split("/", 1)[1]
        _patch(
            core_api,
            f"/api/v2/dags/it_slow/dagRuns/{_quote(airflow_run_id)}/taskInstances/slow",
            {"new_state": "failed"},
        )
        run = wait_for(
            "the workflow run to be cancelled",
            lambda: _final(sensor_env, run.id),
            timeout=30,
        )
        result = future.result(timeout=240)
    finally:
        pool.shutdown(wait=False)
    assert run.status == Status.CANCELLED
    assert run.error_message == (
        f"cancelled: Airflow task 'slow' of DAG run it_slow/{airflow_run_id} was marked failed"
    )
    slow = sensor_env.stages(run.id)["slow"]
    # Whatever the stage returns after this is a ghost: discarded, and no retry.
    assert slow.status == Status.CANCELLED and slow.output is None
    assert result.state == "failed"
    assert result.ti_state("slow") == "failed" and result.try_number("slow") == 1


def test_deferred_batch_task_marked_failed_cancels_its_job(
    sensor_env: AirflowEnv, core_api: str
) -> None:
    """Marking a deferred batch task failed cancels the workflow run, and the trigger (in the
    triggerer, where the workflow is importable) calls the stage's ``on_cancel`` once."""
    before = known_runs(sensor_env, "it-batch")
    pool, future = in_background(
        lambda: run_sensor_dag(sensor_env, "it_batch_forever", {"items": ["a", "bb"]})
    )
    try:
        run = wait_for("the workflow run", lambda: newest_run_of(sensor_env, "it-batch", before))
        airflow_run_id = run.idempotency_key.split("/", 1)[1]
        wait_for(
            "the triggerer to poll the batch",
            lambda: sensor_env.blob_count(run.id, "embed", "polls") >= 1,
        )
        _patch(
            core_api,
            f"/api/v2/dags/it_batch_forever/dagRuns/{_quote(airflow_run_id)}/taskInstances/embed",
            {"new_state": "failed"},
        )
        wait_for(
            "the batch job to be cancelled",
            lambda: sensor_env.blob_count(run.id, "embed", "cancels") >= 1,
            timeout=60,
        )
        result = future.result(timeout=240)
    finally:
        pool.shutdown(wait=False)
    final = wait_for("the workflow run to be final", lambda: _final(sensor_env, run.id))
    assert final.status == Status.CANCELLED
    assert "Airflow task 'embed'" in (final.error_message or "")
    assert sensor_env.stages(run.id)["embed"].status == Status.CANCELLED
    assert sensor_env.blob_count(run.id, "embed", "submissions") == 1
    assert sensor_env.blob_count(run.id, "embed", "cancels") == 1
    assert result.state == "failed"
    assert result.ti_state("embed") == "failed" and result.ti_state("finish") != "success"
    # Whoever saw it first (the api-server's listener, or the trigger's on_kill), the trigger
    # stopped the job: the api-server cannot, it does not know the workflow.
    folder = sensor_env.home / "logs" / "dag_id=it_batch_forever" / f"run_id={airflow_run_id}"
    trigger_logs = "".join(
        p.read_text(errors="replace") for p in folder.glob("task_id=embed/*.trigger.*.log")
    )
    assert "cancelled the batch job" in trigger_logs
