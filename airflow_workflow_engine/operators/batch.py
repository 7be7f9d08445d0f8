"""``AsyncBatchStageOperator``: an async-batch stage as a deferrable task.

``execute`` runs the stage's ``execute`` once (it submits the batch job and returns
``Suspended``); the task then defers to
:class:`~airflow_workflow_engine.triggers.suspended.SuspendedStageTrigger`, which polls
``check_completion`` from the triggerer, and resumes in :meth:`execute_complete` when the
stage is done. With ``deferrable=False`` the task itself polls, sleeping between polls, with
the same decision logic (:func:`~airflow_workflow_engine.host.poll.poll_stage`).

Nothing is submitted twice: a retry, a clear or a triggerer restart finds the stage SUSPENDED
in the kernel, which answers ``job.execute`` with the stored suspension (``replayed``)
instead of running ``execute`` again, and the task simply waits again.

The triggerer has to find the workflow (by import path or from the DAG file): see
:mod:`airflow_workflow_engine.host.refs`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_workflow_engine.hooks.errors import engine_errors
from airflow_workflow_engine.operators.stage import StageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.host.poll import PollEvent
    from airflow_workflow_engine.kernel.commands import JobExecuteResult
    from airflow_workflow_engine.kernel.kernel import Kernel

__all__ = ["AsyncBatchStageOperator"]

#: Poll interval when the stage row does not record one.
_DEFAULT_POLL_INTERVAL = 60.0


class AsyncBatchStageOperator(StageOperator):
    """Runs an async-batch stage: submit, wait (deferred, in the triggerer), complete.

    :param deferrable: wait in the triggerer (default); ``False`` polls in the task.
    :param poll_interval: longest wait between polls in seconds; default: the interval the
        stage's ``Suspended`` asked for.
    :param workflow_ref: import path ``"module:attribute"`` of the workflow (or of the DAG
        it is derived from) for the triggerer: an explicit override. Without it the triggerer
        imports the workflow when it is a module-level attribute of an importable module, and
        otherwise loads the DAG file the task came from (see
        :mod:`airflow_workflow_engine.host.refs`).
    """

    template_fields: Sequence[str] = ("config",)
    ui_color = "#fdf1d6"

    def __init__(
        self,
        *,
        deferrable: bool = True,
        poll_interval: float | None = None,
        workflow_ref: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not self.stage.is_async_batch:
            raise TypeError(
                f"Task '{self.task_id}': stage '{self.stage.id}' is a sync stage; run it with "
                "StageOperator."
            )
        if poll_interval is not None and poll_interval <= 0:
            raise ValueError("poll_interval must be > 0 seconds")
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.workflow_ref = workflow_ref
        self._dag_file: dict[str, str | None] | None = None

    def _accepts_async_batch(self) -> bool:
        return True

    # -- waiting --------------------------------------------------------------------------
    def _interval(self, result: JobExecuteResult) -> float:
        if self.poll_interval is not None:
            return self.poll_interval
        return float(result.poll_interval) if result.poll_interval else _DEFAULT_POLL_INTERVAL

    def resolve_workflow_ref(self) -> str | None:
        """The import path the triggerer loads the workflow from (``None``: the DAG file)."""
        if self.workflow_ref:
            return self.workflow_ref
        from airflow_workflow_engine.host.refs import import_path_of

        return import_path_of(self.workflow, self.dag if self._workflow is None else None)

    def _resolve_source(self, workflow: Workflow, context: Context) -> None:
        """Where the triggerer finds the workflow: the import path, else the DAG file."""
        self.workflow_ref = self.resolve_workflow_ref()
        if self.workflow_ref is not None:
            return
        from airflow_workflow_engine.host.refs import dag_file_ref

        bundle = getattr(context.get("ti"), "bundle_instance", None)
        with engine_errors(f"Task '{self.task_id}' cannot defer"):
            ref = dag_file_ref(self.dag, self.task_id, workflow.id, bundle)
        self._dag_file = ref.to_dict()
        self.log.info("The triggerer finds workflow '%s' in %s.", workflow.id, ref.describe())

    def before_stage(self, workflow: Workflow, context: Context) -> None:
        if self.deferrable:
            self._resolve_source(workflow, context)  # before the batch is submitted

    def on_suspended(
        self, kernel: Kernel, run_id: str, result: JobExecuteResult, context: Context
    ) -> Any:
        self.transition(kernel, run_id)  # the run is SUSPENDED when nothing else runs
        interval = self._interval(result)
        if not self.deferrable:
            return self._wait_in_task(kernel, run_id, interval, context)
        from airflow_workflow_engine.triggers.suspended import SuspendedStageTrigger

        if self.workflow_ref is None and self._dag_file is None:
            self._resolve_source(self.workflow, context)  # a re-queued execute after a resume
        self.log.info(
            "Stage '%s' is waiting for its batch job; deferring (poll every %.1fs)",
            self.stage.id,
            interval,
        )
        self.defer(
            trigger=SuspendedStageTrigger(
                workflow_run_id=run_id,
                stage_id=self.stage.id,
                workflow_ref=self.workflow_ref,
                dag_file=self._dag_file,
                dag_id=self.dag_id,
                task_id=self.task_id,
                poll_interval=interval,
                conn_id=self.hook.get_settings().conn_id,
            ),
            method_name="execute_complete",
        )

    def _wait_in_task(self, kernel: Kernel, run_id: str, interval: float, context: Context) -> Any:
        from airflow_workflow_engine.host.poll import poll_stage

        self.log.info(
            "Stage '%s' is waiting for its batch job (poll every %.1fs)", self.stage.id, interval
        )
        while True:
            with engine_errors(f"Cannot poll stage '{self.stage.id}'"):
                decision = poll_stage(kernel, run_id, self.stage.id, interval)
            if decision.status is not None:
                return self._complete(kernel, decision.event(run_id, self.stage.id), context)
            time.sleep(decision.wait_seconds)

    # -- resuming -------------------------------------------------------------------------
    def execute_complete(self, context: Context, event: PollEvent | None = None) -> Any:
        """Resumes after the trigger fired: records the outcome through the kernel."""
        if not event or "status" not in event:
            raise AirflowFailException(f"Stage '{self.stage.id}': the trigger sent no outcome.")
        kernel = self.get_kernel()
        return self._complete(kernel, event, context)

    def _complete(self, kernel: Kernel, event: PollEvent, context: Context) -> Any:
        run_id, status, message = event["workflow_run_id"], event["status"], event["message"]
        sid = self.stage.id
        if status == "completed":
            run_status = self.transition(kernel, run_id)
            # A new task process after the trigger: the stage's row has what the poll stored
            # (the one row this operator still reads; the trigger's event carries ids only).
            rec = kernel.persistence.get_stage(run_id, sid)  # the raw row: no blob read
            if rec is None:
                return self.summary(run_id, 0, run_status, stage_status="UNKNOWN")
            return self.summary(
                run_id,
                rec.attempt,
                run_status,
                stage_status=rec.status.value,
                output=rec.output,
                output_ref=rec.output_ref,
                metrics=rec.metrics,
            )
        if status == "requeued":
            # Ready without output: execute runs again, with ctx.resume_state, right here.
            result = self.execute_stage(kernel, run_id, context)
            return self.handle_result(kernel, run_id, result, context)
        if status in ("failed", "timed_out"):
            self.transition(kernel, run_id)
            raise AirflowFailException(f"Stage '{sid}' {status.replace('_', ' ')}: {message}")
        if status == "cancelled":
            raise AirflowFailException(
                f"Stage '{sid}': the wait ended because {message or 'the run was cancelled'}; "
                "the task is not retried."
            )
        raise AirflowFailException(f"Stage '{sid}': waiting in the triggerer failed: {message}")
