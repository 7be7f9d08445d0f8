"""``StageOperator``: one Airflow task runs one stage of a workflow through the kernel.

On ``execute`` the operator

1. creates the workflow run of this DAG run if it does not exist yet: ``run.create`` with the
   idempotency key ``"<dag_id>/<run_id>"`` (``"<dag_id>/<run_id>/<group_id>"`` for a stage
   task of a :class:`~airflow_workflow_engine.task_group.WorkflowTaskGroup`), the DAG run's
   ``conf`` (merged over the DAG's params that are fields of the input model) as input and
   every stage task's ``config``; bad input or config fails the task with the validation
   message, naming the field, and writes nothing;
2. starts the run (``run.claimPending``), a no-op when another stage task already did;
3. dispatches ``job.execute`` with ``attempt`` = the task's try number and ``max_attempts`` =
   its tries (``retries + 1``), so Airflow's retries are the stage's attempts;
4. dispatches ``run.transition`` and returns a short summary, which goes to XCom.

Retryable stage failures raise, so Airflow retries the task; a non-retryable failure, the last
attempt's failure and a ghost (the run was cancelled while the stage ran, so its result was
discarded) raise :class:`AirflowFailException`, so it does not.

A duplicate delivery (the task runs again although its stage already finished in this series of
tries, e.g. a worker died after the kernel committed) returns the stored result without running
the stage again. A *clear* is a rerun: when the stage finished before the task was last cleared,
the task dispatches ``run.rerunStages`` for its stage and for the other stage tasks of the DAG
run that were cleared with it and have not started yet, then runs the stage again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_workflow_engine.conventions import Trigger
from airflow_workflow_engine.definitions.annotations import Actor
from airflow_workflow_engine.definitions.stage import Stage
from airflow_workflow_engine.errors import WorkflowDefinitionError
from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
from airflow_workflow_engine.hooks.errors import engine_errors
from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.host.derive import workflow_from_dag
from airflow_workflow_engine.host.runs import first_try_since_clear, run_key, task_verdict
from airflow_workflow_engine.kernel.commands import (
    AnnotationSpec,
    JobExecute,
    RunClaimPending,
    RunCreate,
    RunRerunStages,
    RunTransition,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.operators.links import WorkflowRunLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.kernel.commands import JobExecuteResult
    from airflow_workflow_engine.kernel.kernel import Kernel

__all__ = ["StageAttemptFailed", "StageOperator"]

logger = logging.getLogger(__name__)

#: Characters of a stage output shown in the task's XCom summary.
OUTPUT_PREVIEW_CHARS = 500
#: How long a stage task waits for a concurrent ``run.create`` of the same DAG run.
_CREATE_WAIT_SECONDS = 60.0


class StageAttemptFailed(AirflowException):
    """A stage attempt failed with a retryable error; Airflow retries the task."""


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return any(_has_template(v) for v in value)
    return not isinstance(value, (int, float, bool, type(None)))


class StageOperator(BaseOperator):
    """Runs one stage of a workflow as an Airflow task.

    :param stage: the stage to run (from ``define_stage``); ``task_id`` defaults to its id.
    :param workflow: the workflow the stage belongs to. ``None``: derived from the DAG's stage
        tasks (groups are the topological layers of the stage tasks; see
        :func:`airflow_workflow_engine.host.derive.workflow_from_dag`).
    :param config: the stage's config (a dict for its config model); templated.
    :param conn_id: the ``workflow_engine`` connection (see :class:`WorkflowEngineHook`);
        ``None`` uses only the ``[workflow_engine]`` config section.
    """

    template_fields: Sequence[str] = ("config",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"config": "json"}
    shallow_copy_attrs: Sequence[str] = ("stage", "_workflow")
    ui_color = "#e3ecfa"
    operator_extra_links = (WorkflowRunLink(),)

    def __init__(
        self,
        *,
        stage: Stage[Any, Any, Any],
        workflow: Workflow | None = None,
        config: dict[str, Any] | None = None,
        conn_id: str | None = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        if not isinstance(stage, Stage):
            raise TypeError(
                f"{type(self).__name__}: stage must be a Stage (from define_stage or "
                f"define_async_batch_stage), got {stage!r}."
            )
        kwargs.setdefault("task_id", stage.id)
        super().__init__(**kwargs)
        self.stage = stage
        self._workflow = workflow
        self.config = config
        self.conn_id = conn_id
        self._check_definition()

    # -- definition checks (at DAG parse time) --------------------------------------------
    def _check_definition(self) -> None:
        stage = self.stage
        if stage.is_async_batch and not self._accepts_async_batch():
            raise WorkflowDefinitionError(
                f"Task '{self.task_id}': stage '{stage.id}' is an async-batch stage; run it with "
                "AsyncBatchStageOperator (airflow_workflow_engine.operators.batch)."
            )
        if self._workflow is not None:
            known = self._workflow.get_stage(stage.id)  # StageNotFoundError names the stages
            if known is not stage:
                raise WorkflowDefinitionError(
                    f"Task '{self.task_id}': workflow '{self._workflow.id}' has a different "
                    f"stage object with id '{stage.id}'; pass the stage the workflow was built "
                    "with."
                )
        self._check_config()

    def _check_config(self) -> None:
        """The stage's config at parse time: no unknown keys (templated values included),
        required fields set, model keys naming a known provider."""
        from airflow_workflow_engine.definitions.config import (
            model_key_fields,
            model_key_problems,
        )
        from airflow_workflow_engine.definitions.validation import unknown_keys, validate_model
        from airflow_workflow_engine.errors import ConfigValidationError
        from airflow_workflow_engine.hooks.llm_settings import known_model_providers

        stage, config = self.stage, {} if self.config is None else self.config
        if not isinstance(config, Mapping):
            raise WorkflowDefinitionError(
                f"Task '{self.task_id}': config must be a dict for the config model of stage "
                f"'{stage.id}', got {type(config).__name__}."
            )
        task = f" (task '{self.task_id}')" if self.task_id != stage.id else ""
        what = f"config of stage '{stage.id}'{task}"
        if _has_template(config):  # values are rendered at run time; keys are not templated
            strays = unknown_keys(stage.config, config)
            if strays:
                raise ConfigValidationError(
                    " ".join(f"unknown key '{u.field}' in {what}; {u.hint}" for u in strays),
                    [{"field": u.field, "message": u.message} for u in strays],
                )
            return
        values = validate_model(
            stage.config, dict(config), ConfigValidationError, what, refuse_unknown_keys=True
        ).model_dump(mode="json", by_alias=True)
        rows = (
            model_key_problems(stage.config, values, known_model_providers())
            if model_key_fields(stage.config)
            else []
        )
        if rows:
            detail = "; ".join(f"{r['field']}: {r['message']}" for r in rows)
            raise ConfigValidationError(f"Invalid {what}: {detail}", rows)

    def _accepts_async_batch(self) -> bool:
        return False

    # -- workflow and kernel --------------------------------------------------------------
    @property
    def workflow_group(self) -> str | None:
        """The group id of the enclosing ``WorkflowTaskGroup``, or ``None``."""
        group = getattr(self, "task_group", None)
        while group is not None:
            if getattr(group, "is_workflow_group", False):
                return str(group.group_id)
            group = getattr(group, "parent_group", None)
        return None

    def _same_workflow_tasks(self) -> list[StageOperator]:
        """The stage tasks of this DAG that run the same workflow run as this one."""
        if not self.has_dag():  # type: ignore[no-untyped-call]
            return [self]
        group = self.workflow_group
        return [
            t for t in self.dag.tasks if isinstance(t, StageOperator) and t.workflow_group == group
        ]

    @property
    def workflow(self) -> Workflow:
        """The workflow: the one given, or the one derived from the DAG's stage tasks."""
        if self._workflow is not None:
            return self._workflow
        return workflow_from_dag(self.dag)

    @cached_property
    def hook(self) -> WorkflowEngineHook:
        return WorkflowEngineHook(conn_id=self.conn_id)

    def get_kernel(self) -> Kernel:
        with engine_errors("The workflow engine is not usable"):
            return self.hook.get_kernel(self.workflow)

    # -- execute --------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        with engine_errors(f"Task '{self.task_id}' does not define a valid workflow"):
            workflow = self.workflow
        self.before_stage(workflow, context)
        kernel = self.get_kernel()
        run_id = self.ensure_run(kernel, workflow, context)
        self.rerun_if_cleared(kernel, run_id, context)
        result = self.execute_stage(kernel, run_id, context)
        return self.handle_result(kernel, run_id, result, context)

    def before_stage(self, workflow: Workflow, context: Context) -> None:
        """Checks made before anything is written (subclasses add theirs)."""

    def ensure_run(self, kernel: Kernel, workflow: Workflow, context: Context) -> str:
        """Creates (once per DAG run) and starts the workflow run; returns its id."""
        dag_run = context["dag_run"]
        key = run_key(self.dag_id, dag_run.run_id, self.workflow_group)
        command = RunCreate(
            workflow_id=workflow.id,
            input=self._run_input(workflow, context),
            config=self._run_config(workflow, context),
            idempotency_key=key,
            annotations=[self._trigger_annotation(context)],
        )
        created = self._dispatch_create(kernel, command, key)
        with engine_errors(f"Cannot start workflow run {created.workflow_run_id}"):
            kernel.dispatch(
                RunClaimPending(
                    workflow_run_id=created.workflow_run_id,
                    worker_id=f"airflow:{self.dag_id}/{self.task_id}",
                )
            )
        return str(created.workflow_run_id)

    def _dispatch_create(self, kernel: Kernel, command: Any, key: str) -> Any:
        from airflow_workflow_engine.errors import IdempotencyInProgressError

        deadline = time.monotonic() + _CREATE_WAIT_SECONDS
        delay = 0.1
        while True:
            try:
                with engine_errors(f"Cannot create the workflow run of DAG run '{key}'"):
                    return kernel.dispatch(command)
            except IdempotencyInProgressError:
                # Another stage task of this DAG run is creating the run right now.
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _run_input(self, workflow: Workflow, context: Context) -> dict[str, Any]:
        """The DAG run's conf over the DAG params that are fields of the input model.

        Conf keys that are DAG params but not input fields are for other tasks (the trigger
        form sends every param) and are left out; any other unknown key stays in, so that
        ``run.create`` refuses it by name.
        """
        fields = {fld.alias or name for name, fld in workflow.input.model_fields.items()}
        params = context.get("params") or {}
        data = {k: params[k] for k in list(params) if k in fields and params[k] is not None}
        conf = context["dag_run"].conf or {}
        if not isinstance(conf, Mapping):
            raise AirflowFailException(
                f"The DAG run's conf must be a JSON object (the input of workflow "
                f"'{workflow.id}'), got {type(conf).__name__}."
            )
        if workflow.input.model_config.get("extra") != "allow":
            conf = {k: v for k, v in conf.items() if k in fields or k not in params}
        data.update(conf)
        return data

    def _run_config(self, workflow: Workflow, context: Context) -> dict[str, Any]:
        """Every stage task's config (rendered), keyed by stage id."""
        config: dict[str, Any] = {}
        for task in self._same_workflow_tasks():
            if task.config is None:
                continue
            if task.stage.id not in workflow.stage_ids():
                continue
            value = (
                task.config
                if task is self
                else task.render_template(task.config, context, task.get_template_env())
            )
            config[task.stage.id] = value
        return config

    def _trigger_annotation(self, context: Context) -> Any:
        dag_run = context["dag_run"]
        attributes: dict[str, Any] = {
            str(Trigger.source): "airflow",
            str(Trigger.dag_id): self.dag_id,
            str(Trigger.dag_run_id): dag_run.run_id,
        }
        user = getattr(dag_run, "triggering_user_name", None)
        if user:
            attributes[str(Trigger.user)] = user
        if self.workflow_group:
            attributes["trigger.task_group"] = self.workflow_group
        return AnnotationSpec(actor=Actor(kind="system", id="airflow"), attributes=attributes)

    # -- clear = rerun -------------------------------------------------------------------
    def rerun_if_cleared(self, kernel: Kernel, run_id: str, context: Context) -> bool:
        """Reruns the stage when it finished before this task was last cleared.

        The rule is the host layer's (:func:`~airflow_workflow_engine.host.runs.was_cleared`):
        a stage row from a try before the first try since the last clear is what the clear
        asked to replace; one from this series of tries is a duplicate delivery and is
        replayed by ``job.execute``. ``run.rerunStages`` checks the row
        (``if_finished_before_attempt``) and reruns only then.
        """
        ti = context["ti"]
        max_tries = getattr(ti, "max_tries", None)
        if max_tries is None:
            return False
        first_try = first_try_since_clear(max_tries, self.retries or 0)
        if first_try <= 1:
            return False
        stage_ids = [self.stage.id, *self._cleared_stage_tasks(context)]
        with engine_errors(f"Cannot rerun stage '{self.stage.id}' of workflow run {run_id}"):
            result = kernel.dispatch(
                RunRerunStages(
                    workflow_run_id=run_id,
                    stage_ids=stage_ids,
                    reason=f"task '{self.task_id}' cleared in Airflow (try {ti.try_number})",
                    if_finished_before_attempt=first_try,
                )
            )
        if not result.rerun:
            return False
        self.log.info(
            "Task was cleared: rerunning stage(s) %s of workflow run %s (was %s at attempt %d).",
            ", ".join(result.deleted_stages) or "-",
            run_id,
            result.previous_status.value if result.previous_status else "-",
            result.previous_attempt or 0,
        )
        return True

    def _cleared_stage_tasks(self, context: Context) -> list[str]:
        """Stage ids of the other stage tasks of this DAG run that wait to run again.

        Only tasks that have not been queued yet (no state, or scheduled): a task already
        queued or running does its own check, and must not lose a result it just committed.
        """
        if not self.has_dag():  # type: ignore[no-untyped-call]
            return []
        tasks = {
            t.task_id: t.stage.id for t in self._same_workflow_tasks() if t.task_id != self.task_id
        }
        if not tasks:
            return []
        run_id = context["dag_run"].run_id
        try:
            states = context["ti"].get_task_states(
                dag_id=self.dag_id, task_ids=list(tasks), run_ids=[run_id]
            )
        except Exception:  # an older Task SDK or no supervisor: each task reruns itself
            self.log.warning("Cannot read the task states of DAG run %s", run_id, exc_info=True)
            return []
        waiting = {None, "none", "scheduled"}
        return [
            sid
            for task_id, sid in tasks.items()
            if task_id in states.get(run_id, {}) and states[run_id][task_id] in waiting
        ]

    def execute_stage(self, kernel: Kernel, run_id: str, context: Context) -> JobExecuteResult:
        """``job.execute`` for this stage; the try number is the attempt."""
        ti = context["ti"]
        max_tries = getattr(ti, "max_tries", None)
        max_attempts = (max_tries if max_tries is not None else self.retries or 0) + 1
        with engine_errors(f"Stage '{self.stage.id}' cannot run"):
            result: JobExecuteResult = kernel.dispatch(
                JobExecute(
                    workflow_run_id=run_id,
                    stage_id=self.stage.id,
                    attempt=max(int(ti.try_number), 1),
                    max_attempts=max(max_attempts, 1),
                    worker_id=f"airflow:{self.dag_id}/{self.task_id}",
                )
            )
        return result

    def handle_result(
        self, kernel: Kernel, run_id: str, result: JobExecuteResult, context: Context
    ) -> Any:
        """Maps the kernel's answer onto the task (the meaning is the host layer's
        :func:`~airflow_workflow_engine.host.runs.task_verdict`): return, retry, fail or wait."""
        verdict = task_verdict(result, self.stage.id)
        if verdict.action == "wait":
            return self.on_suspended(kernel, run_id, result, context)
        status = self.transition(kernel, run_id) if verdict.transition else None
        if verdict.action == "succeed":
            assert status is not None
            return self.summary(
                run_id,
                result.attempt,
                status,
                output=result.output,
                output_ref=result.output_ref,
                metrics=result.metrics,
                replayed=result.replayed,
            )
        if verdict.action == "retry":
            raise StageAttemptFailed(verdict.message)
        raise AirflowFailException(verdict.message)

    def on_suspended(
        self, kernel: Kernel, run_id: str, result: JobExecuteResult, context: Context
    ) -> Any:
        raise AirflowFailException(
            f"Stage '{self.stage.id}' suspended, but {type(self).__name__} cannot wait for it: "
            "use AsyncBatchStageOperator."
        )

    def transition(self, kernel: Kernel, run_id: str) -> str:
        """``run.transition``: completes or fails the run, or opens the next group."""
        with engine_errors(f"Cannot advance workflow run {run_id}"):
            outcome = kernel.dispatch(RunTransition(workflow_run_id=run_id))
        from airflow_workflow_engine.hooks.events import deliver_run_events

        deliver_run_events(kernel, run_id)  # the run's outbox to the event plugins, in order
        return str(outcome.status.value)

    def summary(
        self,
        run_id: str,
        attempt: int,
        run_status: str,
        *,
        stage_status: str = Status.COMPLETED.value,
        output: Any = None,
        output_ref: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        replayed: bool = False,
    ) -> dict[str, Any]:
        """What goes to XCom: status, attempt, an output preview or its blob reference (from
        the ``job.execute`` result: no row read)."""
        preview: str | None = None
        if output_ref is None and output is not None:
            text = json.dumps(output, separators=(",", ":"), default=str)
            if len(text) > OUTPUT_PREVIEW_CHARS:
                text = text[:OUTPUT_PREVIEW_CHARS] + "..."
            preview = text
        metrics = metrics or {}
        return {
            "workflow_run_id": run_id,
            "stage_id": self.stage.id,
            "status": stage_status,
            "attempt": attempt,
            "replayed": replayed,
            "run_status": run_status,
            "output_preview": preview,
            "output_ref": output_ref,
            "metrics": {
                k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None
            },
        }
