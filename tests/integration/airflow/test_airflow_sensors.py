"""The sensors (``StageSensor``, ``WorkflowRunSensor``, ``ApprovalSensor``) and their trigger.

In process: ``KernelStateTrigger`` rebuilt from ``serialize()`` yields exactly one terminal
event, and the decision (:func:`check`) over a real SQLite engine.

Under Airflow (``dag.test(use_executor=True)``, the session's api-server and triggerer, see
``fixtures.py``): sensors that defer until a run of their own DAG completes, sensors over
another DAG's run, an approval given from outside while the sensor waits, an approval and a
rejection attached by a preceding task, and a timeout. The DAGs below are written to a DAG
folder of this module (``sensor_env``), which also loads the provider's plugin (listeners).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_workflow_engine.kernel.status import Status
from tests.integration.airflow.fixtures import (
    AIRFLOW_MARKS,
    AirflowEnv,
    DagRunResult,
    airflow_env,
)

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

SENSOR_DAGS_FILE = "it_sensor_dags.py"

#: The DAG file of the sensor and listener tests. Airflow runs DAGs of its DAG folder only,
#: so ``sensor_env`` writes this into a folder of its own.
SENSOR_DAGS = '''
"""DAGs with the workflow engine's sensors, and failures for its listeners."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, get_current_context, task
from pydantic import BaseModel, Field

from airflow_workflow_engine import StageContext, define_stage
from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
from airflow_workflow_engine.operators.stage import StageOperator
from airflow_workflow_engine.sensors import ApprovalSensor, StageSensor, WorkflowRunSensor
from tests.integration.airflow import workflows as wf

_FAST = {"poke_interval": 1, "timeout": 120}


@task
def decide() -> str:
    """Approves or rejects this DAG run's workflow run as the conf says: an automated
    reviewer (a person does the same through the kernel, the CLI or the UI)."""
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.host.approvals import record_approval
    from airflow_workflow_engine.host.queries import find_run_by_key
    from airflow_workflow_engine.host.runs import run_key

    ctx = get_current_context()
    conf: dict[str, Any] = ctx["dag_run"].conf or {}
    kernel = WorkflowEngineHook().get_kernel()
    run = find_run_by_key(kernel.persistence, run_key(ctx["dag"].dag_id, ctx["run_id"]))
    assert run is not None
    record_approval(
        kernel,
        run.id,
        approved=conf.get("decision") == "approved",
        approver=str(conf.get("approver", "reviewer-bot")),
        comment=conf.get("comment"),
    )
    return run.id


@task
def nap(seconds: float = 4.0) -> None:
    time.sleep(seconds)


@task
def boom() -> None:
    raise RuntimeError("a plain task failed after the first stage")


class Sleep(BaseModel):
    seconds: float = Field(30.0, gt=0)


class Slept(BaseModel):
    seconds: float


def _slow(ctx: StageContext[Sleep, Any]) -> Slept:
    time.sleep(ctx.input.seconds)
    return Slept(seconds=ctx.input.seconds)


slow = define_stage(id="slow", input=Sleep, output=Slept, execute=_slow)

# A person approves from outside (the test, through the kernel) while the sensor is deferred.
with DAG("it_approval", schedule=None, tags=["workflow-engine"]) as approval_dag:
    (
        StageOperator(stage=wf.measure)
        >> ApprovalSensor(task_id="wait_for_approval", **_FAST)
        >> StageOperator(stage=wf.report)
    )

# A task before the sensor attaches the decision the conf asks for; the sensor pokes.
with DAG("it_approval_auto", schedule=None) as approval_auto_dag:
    (
        StageOperator(stage=wf.measure)
        >> decide()
        >> ApprovalSensor(task_id="wait_for_approval", deferrable=False, **_FAST)
        >> StageOperator(stage=wf.report)
    )

# Nobody decides: the trigger's deadline fails the sensor.
with DAG("it_approval_timeout", schedule=None) as approval_timeout_dag:
    (
        StageOperator(stage=wf.measure)
        >> ApprovalSensor(task_id="wait_for_approval", poke_interval=1, timeout=4)
        >> StageOperator(stage=wf.report)
    )

# Sensors of the same DAG run start before its workflow run exists, defer, and fire when the
# last stage (and so the run) completes.
with DAG("it_sensed", schedule=None) as sensed_dag:
    StageOperator(stage=wf.measure) >> nap() >> StageOperator(stage=wf.report)
    StageSensor(task_id="report_done", stage_id="report", **_FAST)
    WorkflowRunSensor(task_id="run_done", **_FAST)

# Sensors over another DAG's run, named by the conf (one deferred, one poking).
with DAG("it_watch", schedule=None) as watch_dag:
    StageSensor(
        task_id="stage_of_other_dag",
        external_dag_id="{{ dag_run.conf['dag_id'] }}",
        external_run_id="{{ dag_run.conf['run_id'] }}",
        stage_id="{{ dag_run.conf['stage_id'] }}",
        **_FAST,
    )
    WorkflowRunSensor(
        task_id="run_of_other_dag",
        external_dag_id="{{ dag_run.conf['dag_id'] }}",
        external_run_id="{{ dag_run.conf['run_id'] }}",
        deferrable=False,
        **_FAST,
    )

# A plain task fails after a stage: the DAG run fails, the listener cancels the workflow run.
with DAG("it_fail_after_stage", schedule=None) as fail_after_stage_dag:
    StageOperator(stage=wf.measure) >> boom() >> StageOperator(stage=wf.report)

# A long stage with retries, for "a running stage task marked failed".
with DAG(
    "it_slow",
    schedule=None,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=0)},
) as slow_dag:
    StageOperator(stage=slow)

# A batch that never finishes, for "a deferred batch task marked failed".
with DAG("it_batch_forever", schedule=None) as batch_forever_dag:
    (
        StageOperator(stage=wf.prepare, workflow=wf.batch)
        >> AsyncBatchStageOperator(
            stage=wf.embed,
            workflow=wf.batch,
            config={"polls_needed": 1000000, "poll_interval": 1.0},
        )
        >> StageOperator(stage=wf.finish, workflow=wf.batch)
    )
'''

#: Loads the provider's plugin when the package's ``airflow.plugins`` entry point is missing.
PLUGIN_SHIM = "from airflow_workflow_engine.plugins.plugin import WorkflowEnginePlugin\n"


def plugin_entry_point_registered() -> bool:
    from importlib.metadata import entry_points

    return any(
        ep.value.startswith("airflow_workflow_engine.plugins")
        for ep in entry_points(group="airflow.plugins")
    )


@pytest.fixture(scope="session")
def sensor_env(airflow_env: AirflowEnv, tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """The session's Airflow, with this module's DAG folder and the provider's plugin."""
    root = tmp_path_factory.mktemp("wfe-sensor-dags")
    (root / "dags").mkdir()
    (root / "plugins").mkdir()
    (root / "dags" / SENSOR_DAGS_FILE).write_text(SENSOR_DAGS)
    if not plugin_entry_point_registered():
        (root / "plugins" / "workflow_engine_plugin.py").write_text(PLUGIN_SHIM)
    env = {
        **airflow_env.env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
    }
    # Same home, engine and servers; nothing of its own to stop.
    return AirflowEnv(home=airflow_env.home, env=env, api_port=airflow_env.api_port)


def run_sensor_dag(
    env: AirflowEnv, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 240
) -> DagRunResult:
    dags = Path(env.env["AIRFLOW__CORE__DAGS_FOLDER"])
    return env.run_dag(str(dags / SENSOR_DAGS_FILE), dag_id, conf, timeout=timeout)


def engine_kernel(env: AirflowEnv) -> Any:
    """A kernel over the session's engine tables, in this process."""
    from airflow_workflow_engine.hooks.engine import EngineSettings, kernel_for

    return kernel_for(EngineSettings(sql_url=env.engine_url, blob_store=str(env.blob_root)))


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def newest_run_of(env: AirflowEnv, dag_id: str, not_in: set[str]) -> Any:
    """The newest workflow run created by a DAG run of ``dag_id`` and not in ``not_in``."""
    with env.store() as store:
        runs = store.list_runs(workflow_id=dag_id, limit=10_000)
    fresh = [r for r in runs if r.id not in not_in]
    return max(fresh, key=lambda r: r.created_at) if fresh else None


def known_runs(env: AirflowEnv, dag_id: str) -> set[str]:
    with env.store() as store:
        return {r.id for r in store.list_runs(workflow_id=dag_id, limit=10_000)}


def deferred(env: AirflowEnv, dag_id: str, airflow_run_id: str, task_id: str) -> bool:
    folder = env.home / "logs" / f"dag_id={dag_id}" / f"run_id={airflow_run_id}"
    logs = list((folder / f"task_id={task_id}").glob("attempt=*.log"))
    return any("deferring" in p.read_text(errors="replace") for p in logs)


def in_background(fn: Callable[[], DagRunResult]) -> tuple[ThreadPoolExecutor, Future[Any]]:
    pool = ThreadPoolExecutor(max_workers=1)
    return pool, pool.submit(fn)


# -- in process: the decision and the trigger ---------------------------------------------


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A migrated SQLite engine configured through ``[workflow_engine]``; yields a kernel
    that knows the hand-wired workflow (measure -> report)."""
    from airflow_workflow_engine.definitions.workflow import WorkflowBuilder
    from airflow_workflow_engine.hooks.engine import (
        kernel_for,
        reset_kernel_cache,
        settings_from_config,
    )
    from airflow_workflow_engine.persistence.sql import migrate
    from tests.integration.airflow import workflows as wf

    url = f"sqlite:///{tmp_path}/engine.db"
    migrate(url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", str(tmp_path / "blobs"))
    reset_kernel_cache()
    settings = settings_from_config()
    assert settings is not None
    workflow = (
        WorkflowBuilder("it-hand-kernel", "Hand", None, wf.HandInput, wf.Reported)
        .pipe(wf.measure)
        .pipe(wf.report)
        .build()
    )
    yield kernel_for(settings, workflow)
    reset_kernel_cache()


def _start_run(kernel: Any, key: str | None = "it_dag/manual__1") -> str:
    from airflow_workflow_engine.kernel.commands import RunClaimPending, RunCreate

    created = kernel.dispatch(
        RunCreate(workflow_id="it-hand-kernel", input={"text": "hello"}, idempotency_key=key)
    )
    kernel.dispatch(RunClaimPending(workflow_run_id=created.workflow_run_id))
    return str(created.workflow_run_id)


def _complete(kernel: Any, run_id: str, *stage_ids: str) -> None:
    from airflow_workflow_engine.kernel.commands import JobExecute, RunTransition

    for sid in stage_ids:
        assert kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id=sid)).outcome == (
            "completed"
        )
        kernel.dispatch(RunTransition(workflow_run_id=run_id))


def _spec(**kwargs: Any) -> Any:
    from airflow_workflow_engine.host.wait import WaitSpec

    return WaitSpec(**kwargs)


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


def _trigger(**kwargs: Any) -> Any:
    from airflow_workflow_engine.triggers.kernel_state import KernelStateTrigger

    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("conn_id", None)
    return KernelStateTrigger(**kwargs)


def test_trigger_serializes_ids_and_primitives_and_round_trips() -> None:
    trigger = _trigger(
        kind="stage",
        dag_id="it_dag",
        run_id="manual__1",
        stage_id="report",
        target_statuses=["completed"],
        timeout=30,
        conn_id="workflow_engine_default",
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_workflow_engine.triggers.kernel_state.KernelStateTrigger"
    deadline = kwargs.pop("deadline")
    assert abs(deadline - (time.time() + 30)) < 5
    assert kwargs == {
        "kind": "stage",
        "workflow_run_id": None,
        "dag_id": "it_dag",
        "run_id": "manual__1",
        "stage_id": "report",
        "target_statuses": ["COMPLETED"],
        "failed_statuses": ["FAILED", "CANCELLED"],
        "key_prefix": "approval.",
        "poll_interval": 0.1,
        "conn_id": "workflow_engine_default",
    }
    again = _rebuilt(trigger)
    # The deadline survives a triggerer restart: it is absolute, not "timeout from now".
    assert again.serialize() == trigger.serialize()


def test_spec_rejects_what_can_never_work() -> None:
    from airflow_workflow_engine.host.wait import STATUS_NAMES

    assert {s.value for s in Status} == STATUS_NAMES  # spelled out to keep DAG parsing cheap
    with pytest.raises(ValueError, match="Name the workflow run"):
        _spec(kind="run")
    with pytest.raises(ValueError, match="needs stage_id"):
        _spec(kind="stage", workflow_run_id="r")
    with pytest.raises(ValueError, match="'DONE' is not a workflow status"):
        _spec(kind="run", workflow_run_id="r", target_statuses=("DONE",))
    with pytest.raises(ValueError, match="both a target and a failed status"):
        _spec(kind="run", workflow_run_id="r", target_statuses=("FAILED",))


def test_stage_wait_one_event_once_the_stage_completes(engine: Any) -> None:
    run_id = _start_run(engine)
    trigger = _rebuilt(
        _trigger(kind="stage", dag_id="it_dag", run_id="manual__1", stage_id="report")
    )
    timer = threading.Timer(0.5, _complete, (engine, run_id, "measure", "report"))
    timer.start()
    try:
        events = _events(trigger)
    finally:
        timer.join()
    assert [e.payload for e in events] == [
        {
            "status": "success",
            "kind": "stage",
            "workflow_run_id": run_id,
            "stage_id": "report",
            "observed": "COMPLETED",
            "message": "stage 'report' is COMPLETED",
            "details": {},
        }
    ]


def test_run_that_does_not_exist_yet_is_waited_for(engine: Any) -> None:
    trigger = _trigger(kind="run", dag_id="later", run_id="r1", target_statuses=["RUNNING"])
    timer = threading.Timer(0.5, _start_run, (engine, "later/r1"))
    timer.start()
    try:
        events = _events(trigger)
    finally:
        timer.join()
    assert [(e.payload["status"], e.payload["observed"]) for e in events] == [
        ("success", "RUNNING")
    ]


def test_stage_of_a_cancelled_run_fails_the_wait(engine: Any) -> None:
    from airflow_workflow_engine.kernel.commands import RunCancel

    run_id = _start_run(engine)
    _complete(engine, run_id, "measure")
    engine.dispatch(RunCancel(workflow_run_id=run_id, reason="user"))
    events = _events(_trigger(kind="stage", workflow_run_id=run_id, stage_id="report"))
    (event,) = events
    assert event.payload["status"] == "failed" and event.payload["observed"] == "CANCELLED"
    assert "run cancelled: user" in event.payload["message"]
    run_events = _events(_trigger(kind="run", workflow_run_id=run_id))
    assert [e.payload["status"] for e in run_events] == ["failed"]
    assert "cancelled: user" in run_events[0].payload["message"]


def test_approval_then_rejection_newest_wins(engine: Any) -> None:
    from airflow_workflow_engine.host.approvals import approve, reject

    run_id = _start_run(engine)
    approve(engine, run_id, "alice", "looks right")
    (event,) = _events(_trigger(kind="approval", workflow_run_id=run_id))
    assert event.payload["status"] == "success" and event.payload["observed"] == "approved"
    assert event.payload["details"]["approver"] == "alice"
    assert event.payload["details"]["comment"] == "looks right"
    reject(engine, run_id, "bob", "numbers are off")
    (event,) = _events(_trigger(kind="approval", workflow_run_id=run_id))
    assert event.payload["status"] == "failed" and event.payload["observed"] == "rejected"
    assert event.payload["message"] == (
        f"workflow run {run_id} was rejected by bob: numbers are off"
    )


def test_a_rerun_before_the_approval_point_makes_the_sensor_wait_again(engine: Any) -> None:
    """An Airflow clear of ``measure`` (before the sensor) voids alice's approval: the trigger
    waits for a new decision, and the next one counts. A clear of ``report`` (after the
    approval point) does not void it."""
    from airflow_workflow_engine.host.approvals import approve
    from airflow_workflow_engine.host.wait import check
    from airflow_workflow_engine.kernel.commands import RunRerunStages

    run_id = _start_run(engine)
    _complete(engine, run_id, "measure")
    approve(engine, run_id, "alice", "looks right")
    _complete(engine, run_id, "report")
    spec = _spec(kind="approval", workflow_run_id=run_id)
    engine.dispatch(RunRerunStages(workflow_run_id=run_id, stage_ids=["report"]))
    assert check(engine.persistence, spec).details["approver"] == "alice"
    _complete(engine, run_id, "report")

    engine.dispatch(
        RunRerunStages(workflow_run_id=run_id, stage_ids=["measure", "report"], reason="clear")
    )
    verdict = check(engine.persistence, spec)
    assert verdict.status is None
    assert "awaits a new approval" in verdict.message and "alice" in verdict.message
    (event,) = _events(_trigger(kind="approval", workflow_run_id=run_id, timeout=0.6))
    assert event.payload["status"] == "timed_out"
    _complete(engine, run_id, "measure")
    approve(engine, run_id, "bob", "checked the new numbers")
    (event,) = _events(_trigger(kind="approval", workflow_run_id=run_id))
    assert event.payload["status"] == "success"
    assert event.payload["details"]["approver"] == "bob"


def test_approval_through_annotations_attach(engine: Any) -> None:
    """Approving is just an annotation: any writer of ``approval.status`` decides; other
    values and other stages' approvals do not."""
    from airflow_workflow_engine.conventions import Actor, Approval
    from airflow_workflow_engine.host.wait import check

    run_id = _start_run(engine)
    spec = _spec(kind="approval", workflow_run_id=run_id, stage_id="report")
    engine.annotations.attach(
        run_id, actor=Actor(kind="user", id="carol"), attributes={str(Approval.status): "pending"}
    )
    engine.annotations.attach(
        run_id,
        actor=Actor(kind="user", id="carol"),
        attributes={str(Approval.status): "approved", str(Approval.stage_id): "measure"},
    )
    assert check(engine.persistence, spec).status is None
    engine.annotations.attach(
        run_id,
        actor=Actor(kind="user", id="carol"),
        attributes={
            str(Approval.status): "Approved",
            str(Approval.stage_id): "report",
            str(Approval.comment): "ok",
        },
    )
    verdict = check(engine.persistence, spec)
    assert verdict.status == "success"
    assert verdict.details["approver"] == "carol" and verdict.details["comment"] == "ok"


def test_waiting_approval_times_out_with_one_event(engine: Any) -> None:
    run_id = _start_run(engine)
    started = time.monotonic()
    events = _events(_trigger(kind="approval", workflow_run_id=run_id, timeout=0.6))
    assert [e.payload["status"] for e in events] == ["timed_out"]
    assert "awaits approval" in events[0].payload["message"]
    assert time.monotonic() - started < 5


def test_unknown_run_id_and_missing_settings_are_error_events(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache

    (event,) = _events(_trigger(kind="run", workflow_run_id="no-such-run"))
    assert event.payload["status"] == "error"
    assert "workflow run no-such-run does not exist" in event.payload["message"]
    monkeypatch.delenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN")
    reset_kernel_cache()
    (event,) = _events(_trigger(kind="run", workflow_run_id="x"))
    assert event.payload["status"] == "error"
    assert "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN" in event.payload["message"]


def test_sensor_arguments_fail_fast() -> None:
    from airflow_workflow_engine.sensors import ApprovalSensor, StageSensor, WorkflowRunSensor

    with pytest.raises(ValueError, match="not both"):
        StageSensor(task_id="s", stage_id="x", workflow_run_id="r", external_dag_id="d")
    with pytest.raises(ValueError, match="not both"):
        WorkflowRunSensor(task_id="g", workflow_run_id="r", workflow_group="docs")
    with pytest.raises(ValueError, match="not a workflow status"):
        WorkflowRunSensor(task_id="r", target_statuses=("DONE",))
    sensor = ApprovalSensor(task_id="a")
    assert sensor.deferrable is True
    assert set(sensor.template_fields) == {
        "workflow_run_id",
        "external_dag_id",
        "external_run_id",
        "workflow_group",
        "key_prefix",
        "stage_id",
    }
    assert "stage_id" in StageSensor.template_fields


# -- under Airflow ------------------------------------------------------------------------


def test_sensors_of_the_same_dag_run_defer_until_it_completes(sensor_env: AirflowEnv) -> None:
    result = run_sensor_dag(sensor_env, "it_sensed", {"text": "hello"})
    assert result.state == "success", result.log[-4000:]
    run = sensor_env.kernel_run(result, "it_sensed")
    assert run is not None and run.status == Status.COMPLETED
    stage_event = result.xcom["report_done"]
    assert stage_event["status"] == "success" and stage_event["observed"] == "COMPLETED"
    assert stage_event["workflow_run_id"] == run.id and stage_event["stage_id"] == "report"
    assert result.xcom["run_done"]["observed"] == "COMPLETED"
    for task_id in ("report_done", "run_done"):
        assert result.try_number(task_id) == 1
        log = sensor_env.task_log(result, task_id)
        # Deferred in the task, then the real triggerer fired the one event.
        assert "deferring" in log and "Trigger fired event" in log, log[-3000:]


@pytest.fixture(scope="module")
def decided_runs(sensor_env: AirflowEnv) -> dict[str, DagRunResult]:
    """``it_approval_auto`` approved and rejected by its ``decide`` task."""
    return {
        "approved": run_sensor_dag(
            sensor_env,
            "it_approval_auto",
            {"text": "hello", "decision": "approved", "approver": "alice", "comment": "ship it"},
        ),
        "rejected": run_sensor_dag(
            sensor_env,
            "it_approval_auto",
            {"text": "hello", "decision": "rejected", "approver": "bob", "comment": "no"},
        ),
    }


def test_approval_by_a_preceding_task(
    sensor_env: AirflowEnv, decided_runs: dict[str, DagRunResult]
) -> None:
    result = decided_runs["approved"]
    assert result.state == "success", result.log[-4000:]
    event = result.xcom["wait_for_approval"]
    assert event["status"] == "success" and event["observed"] == "approved"
    assert event["details"]["approver"] == "alice" and event["details"]["comment"] == "ship it"
    run = sensor_env.kernel_run(result, "it_approval_auto")
    assert run.status == Status.COMPLETED
    assert "deferring" not in sensor_env.task_log(result, "wait_for_approval")  # it poked


def test_rejection_fails_the_sensor_naming_who_and_why(
    sensor_env: AirflowEnv, decided_runs: dict[str, DagRunResult]
) -> None:
    result = decided_runs["rejected"]
    assert result.state == "failed"
    assert result.ti_state("wait_for_approval") == "failed"
    assert result.try_number("wait_for_approval") == 1
    assert result.ti_state("report") == "upstream_failed"
    log = sensor_env.task_log(result, "wait_for_approval")
    assert "was rejected by bob: 'no'" in log, log[-3000:]
    run = sensor_env.kernel_run(result, "it_approval_auto")
    assert sensor_env.stages(run.id)["measure"].status == Status.COMPLETED
    # The sensor cancelled the workflow run with the rejection as its error (who, when, why);
    # the DAG run's failure, mirrored by the listener after it, left that error in place.
    assert run.status == Status.CANCELLED
    assert run.error_message.startswith("cancelled: rejected by bob at "), run.error_message
    assert run.error_message.endswith(": 'no' (task 'wait_for_approval' of DAG 'it_approval_auto')")


def test_approval_given_while_the_sensor_is_deferred(sensor_env: AirflowEnv) -> None:
    from airflow_workflow_engine.host.approvals import approve

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
        assert sensor_env.stages(run.id)["report"].status == Status.PENDING
        approve(engine_kernel(sensor_env), run.id, "dana", "reviewed the measurements")
        result = future.result(timeout=240)
    finally:
        pool.shutdown(wait=False)
    assert result.state == "success", result.log[-4000:]
    assert result.xcom["wait_for_approval"]["details"]["approver"] == "dana"
    run = sensor_env.kernel_run(result, "it_approval")
    assert run.status == Status.COMPLETED
    assert run.output == {"report": "'hello' has 5 characters"}
    with sensor_env.store() as store:
        notes = store.list_annotations(run.id, key_prefix="approval.")
    assert {n.key: n.value for n in notes} == {
        "approval.status": "approved",
        "approval.approver": "dana",
        "approval.comment": "reviewed the measurements",
    }
    assert {(n.actor.kind, n.actor.id) for n in notes} == {("user", "dana")}


def test_sensor_times_out(sensor_env: AirflowEnv) -> None:
    result = run_sensor_dag(sensor_env, "it_approval_timeout", {"text": "hello"})
    assert result.state == "failed"
    assert result.ti_state("wait_for_approval") == "failed"
    assert result.try_number("wait_for_approval") == 1
    assert result.ti_state("report") == "upstream_failed"
    log = sensor_env.task_log(result, "wait_for_approval")
    assert "timed out waiting for an approval" in log, log[-3000:]
    assert "AirflowSensorTimeout" in log


def test_sensors_over_another_dags_run(
    sensor_env: AirflowEnv, decided_runs: dict[str, DagRunResult]
) -> None:
    done = decided_runs["approved"]
    ok = run_sensor_dag(
        sensor_env,
        "it_watch",
        {"dag_id": "it_approval_auto", "run_id": done.run_id, "stage_id": "report"},
    )
    assert ok.state == "success", ok.log[-4000:]
    run = sensor_env.kernel_run(done, "it_approval_auto")
    assert ok.xcom["stage_of_other_dag"]["workflow_run_id"] == run.id
    assert ok.xcom["stage_of_other_dag"]["observed"] == "COMPLETED"
    assert ok.xcom["run_of_other_dag"]["observed"] == "COMPLETED"

    rejected = decided_runs["rejected"]
    bad = run_sensor_dag(
        sensor_env,
        "it_watch",
        {"dag_id": "it_approval_auto", "run_id": rejected.run_id, "stage_id": "report"},
    )
    assert bad.state == "failed"
    assert bad.try_number("stage_of_other_dag") == 1 and bad.try_number("run_of_other_dag") == 1
    stage_log = sensor_env.task_log(bad, "stage_of_other_dag")
    assert "stage 'report' is CANCELLED" in stage_log, stage_log[-3000:]
    run_log = sensor_env.task_log(bad, "run_of_other_dag")
    assert "is CANCELLED: cancelled: rejected by bob at " in run_log, run_log[-3000:]
