"""``StageSensor`` and ``WorkflowRunSensor``: wait for a stage, or a whole workflow run, to
reach a status; the run may belong to this DAG or to another one.

The run is named by ``workflow_run_id`` or by the DAG run that created it
(``external_dag_id`` + ``external_run_id``, defaulting to this task's DAG and run: a DAG run's
workflow run has the idempotency key ``"<dag_id>/<run_id>"``). A run that does not exist yet
is waited for.

Both sensors are deferrable by default (waiting is their whole point): they check once, then
wait in the triggerer (:class:`~airflow_workflow_engine.triggers.kernel_state.KernelStateTrigger`)
without holding a worker slot. ``deferrable=False`` pokes from the task instead (``mode="poke"``
or ``"reschedule"``), with the same decision (:func:`~airflow_workflow_engine.host.wait.check`).
Success returns the event (status, run id, status seen) to XCom; a failed status fails the
task without retries; ``timeout`` raises ``AirflowSensorTimeout``; ``soft_fail`` skips instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
)

from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
from airflow_workflow_engine.hooks.errors import engine_errors
from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.host.wait import (
    DEFAULT_FAILED,
    DEFAULT_TARGETS,
    SensorEvent,
    Verdict,
    WaitKind,
    WaitSpec,
    check,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["StageSensor", "WorkflowRunSensor", "WorkflowStateSensor"]

#: Airflow's own deferral timeout is a backstop: the trigger's deadline fires first.
_DEFER_GRACE_SECONDS = 60.0
#: Shortest interval between the trigger's checks.
_MIN_POLL_SECONDS = 0.5


def _blank(value: Any) -> str | None:
    """A rendered template field: ``None`` for empty values."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class WorkflowStateSensor(BaseSensorOperator):
    """Base of the workflow engine's sensors: where the run is, how to wait, how to end.

    :param workflow_run_id: the kernel's workflow run id (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='extract')['workflow_run_id'] }}"``.
    :param external_dag_id: the DAG whose DAG run created the workflow run (templated);
        default: this task's DAG. Ignored with ``workflow_run_id``.
    :param external_run_id: that DAG run's run id (templated); default: this DAG run's id.
    :param workflow_group: the group id of the ``WorkflowTaskGroup`` whose workflow run it is
        (templated), for a DAG with workflow task groups; default: none (the DAG's own stage
        tasks).
    :param deferrable: wait in the triggerer (default); ``False`` pokes from the task.
    :param conn_id: the ``workflow_engine`` connection (see ``WorkflowEngineHook``).
    :param kwargs: ``BaseSensorOperator`` arguments: ``poke_interval`` (also the trigger's
        interval), ``timeout``, ``soft_fail``, ``mode`` (for ``deferrable=False``)...
    """

    template_fields: Sequence[str] = (
        "workflow_run_id",
        "external_dag_id",
        "external_run_id",
        "workflow_group",
    )
    ui_color = "#dff1e6"
    #: What the sensor waits for (set by subclasses).
    wait_kind: ClassVar[WaitKind] = "run"

    def __init__(
        self,
        *,
        workflow_run_id: str | None = None,
        external_dag_id: str | None = None,
        external_run_id: str | None = None,
        workflow_group: str | None = None,
        deferrable: bool = True,
        conn_id: str | None = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if workflow_run_id and (external_dag_id or external_run_id or workflow_group):
            raise ValueError(
                f"{type(self).__name__} '{self.task_id}': name the workflow run either by "
                "workflow_run_id or by external_dag_id/external_run_id/workflow_group, not both."
            )
        self.workflow_run_id = workflow_run_id
        self.external_dag_id = external_dag_id
        self.external_run_id = external_run_id
        self.workflow_group = workflow_group
        self.deferrable = deferrable
        self.conn_id = conn_id

    # -- what to wait for -----------------------------------------------------------------
    def spec_options(self) -> dict[str, Any]:
        """The :class:`WaitSpec` fields particular to the sensor (statuses, stage, prefix)."""
        return {}

    def _check_options(self) -> None:
        """Fails fast (at DAG parse time) on statuses or options that can never work."""
        WaitSpec(kind=self.wait_kind, workflow_run_id="-", **self._rendered_options())

    def _rendered_options(self) -> dict[str, Any]:
        options = self.spec_options()
        for name in ("stage_id", "key_prefix"):
            if name in options:
                options[name] = _blank(options[name])
        if options.get("key_prefix") is None:
            options.pop("key_prefix", None)
        return options

    def wait_spec(self, context: Context) -> WaitSpec:
        """The wait, with the run resolved from this task's context."""
        options = self._rendered_options()
        run_id = _blank(self.workflow_run_id)
        if run_id is not None:
            return WaitSpec(kind=self.wait_kind, workflow_run_id=run_id, **options)
        dag_id = _blank(self.external_dag_id) or self.dag_id
        dag_run_id = _blank(self.external_run_id) or str(context["dag_run"].run_id)
        group = _blank(self.workflow_group)
        return WaitSpec(
            kind=self.wait_kind, dag_id=dag_id, run_id=dag_run_id, workflow_group=group, **options
        )

    # -- checking -------------------------------------------------------------------------
    @cached_property
    def hook(self) -> WorkflowEngineHook:
        return WorkflowEngineHook(conn_id=self.conn_id)

    def check_once(self, spec: WaitSpec) -> Verdict:
        """Reads the kernel's rows once (no writes)."""
        with engine_errors("The workflow engine is not usable"):
            persistence = self.hook.get_kernel().persistence
        with engine_errors(f"Cannot check {spec.describe()}"):
            return check(persistence, spec)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        spec = self.wait_spec(context)
        verdict = self.check_once(spec)
        if verdict.status is None:
            self.log.info("Waiting for %s: %s", spec.describe(), verdict.message)
            return False
        return PokeReturnValue(True, self.resolve(verdict.event(spec)))

    # -- running --------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        spec = self.wait_spec(context)
        verdict = self.check_once(spec)
        if verdict.status is not None:
            try:
                return self.resolve(verdict.event(spec))
            except (AirflowFailException, AirflowSensorTimeout) as exc:
                if self.soft_fail or self.never_fail:
                    raise AirflowSkipException(f"Skipped (soft_fail): {exc}") from exc
                raise
        from airflow_workflow_engine.triggers.kernel_state import KernelStateTrigger

        interval = max(float(self.poke_interval), _MIN_POLL_SECONDS)
        self.log.info(
            "Waiting for %s (%s); deferring, checking every %.1fs for up to %.0fs",
            spec.describe(),
            verdict.message,
            interval,
            self.timeout,
        )
        self.defer(
            trigger=KernelStateTrigger(
                **spec.to_kwargs(),
                poll_interval=interval,
                timeout=float(self.timeout),
                conn_id=self.hook.get_settings().conn_id,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + _DEFER_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: SensorEvent | None = None) -> Any:
        """Resumes after the trigger's one event."""
        if not event or "status" not in event:
            raise AirflowFailException(f"Sensor '{self.task_id}': the trigger sent no outcome.")
        return self.resolve(event)

    def resolve(self, event: SensorEvent) -> dict[str, Any]:
        """Success returns the event (to XCom); anything else raises."""
        status, message = event["status"], event["message"]
        if status == "success":
            self.log.info("Done: %s", message)
            return dict(event)
        if status == "timed_out":
            raise AirflowSensorTimeout(f"Sensor '{self.task_id}' {message}")
        if status == "failed":
            raise AirflowFailException(self.failure_message(event))
        raise AirflowFailException(f"Sensor '{self.task_id}' cannot wait: {message}")

    def failure_message(self, event: SensorEvent) -> str:
        return f"Sensor '{self.task_id}': {event['message']}"


class StageSensor(WorkflowStateSensor):
    """Waits for a stage of a workflow run (of this DAG or another) to reach a status.

    :param stage_id: the stage (templated).
    :param target_statuses: statuses that end the wait successfully (default ``COMPLETED``).
    :param failed_statuses: statuses that fail the task (default ``FAILED``, ``CANCELLED``).
        A run that ends while the stage is elsewhere fails the task too.

    Other parameters: see :class:`WorkflowStateSensor`.
    """

    template_fields: Sequence[str] = (*WorkflowStateSensor.template_fields, "stage_id")
    wait_kind: ClassVar[WaitKind] = "stage"

    def __init__(
        self,
        *,
        stage_id: str,
        target_statuses: Sequence[str] = DEFAULT_TARGETS,
        failed_statuses: Sequence[str] = DEFAULT_FAILED,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stage_id = stage_id
        self.target_statuses = tuple(target_statuses)
        self.failed_statuses = tuple(failed_statuses)
        self._check_options()

    def spec_options(self) -> dict[str, Any]:
        return {
            "stage_id": self.stage_id,
            "target_statuses": self.target_statuses,
            "failed_statuses": self.failed_statuses,
        }


class WorkflowRunSensor(WorkflowStateSensor):
    """Waits for a workflow run (of this DAG or another) to reach a status.

    :param target_statuses: statuses that end the wait successfully (default ``COMPLETED``).
    :param failed_statuses: statuses that fail the task (default ``FAILED``, ``CANCELLED``);
        any other final status than a target fails it too.

    Other parameters: see :class:`WorkflowStateSensor`.
    """

    wait_kind: ClassVar[WaitKind] = "run"

    def __init__(
        self,
        *,
        target_statuses: Sequence[str] = DEFAULT_TARGETS,
        failed_statuses: Sequence[str] = DEFAULT_FAILED,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target_statuses = tuple(target_statuses)
        self.failed_statuses = tuple(failed_statuses)
        self._check_options()

    def spec_options(self) -> dict[str, Any]:
        return {"target_statuses": self.target_statuses, "failed_statuses": self.failed_statuses}
