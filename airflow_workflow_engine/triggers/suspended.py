"""``SuspendedStageTrigger``: waits in the triggerer until a suspended batch stage is done.

The trigger dispatches ``stage.pollSuspended`` for one stage (the kernel calls the stage's
``check_completion``, enforces ``max_wait`` and commits the answer) at the stage's poll
interval, in a worker thread of its own pool (see :func:`_off_loop`) so the triggerer's
event loop never blocks; :func:`~airflow_workflow_engine.host.poll.poll_stage` says what
the result means. It yields exactly one :class:`TriggerEvent` whose payload is a
:class:`~airflow_workflow_engine.host.poll.PollEvent` dict with a ``status``:

- ``completed``: the stage completed with the batch's output;
- ``requeued``: the batch is ready without output, ``execute`` must run again (with
  ``ctx.resume_state``) on a worker;
- ``failed`` / ``timed_out``: the stage failed (no retry) or waited past ``max_wait``;
- ``cancelled``: the run was cancelled or failed meanwhile (the answer was discarded);
- ``error``: the trigger could not work (workflow not importable, engine not configured).

The state lives in the kernel, not in the trigger: a restarted triggerer rebuilds the trigger
from its serialized ids and simply polls again, and a stage that another triggerer already
finished is reported from its row. Nothing is submitted again: the batch job was submitted by
``execute`` once, and the kernel replays a suspended stage's ``job.execute`` instead of running
it twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.host.poll import PollDecision, PollStatus, poll_stage
from airflow_workflow_engine.host.runs import KILLED_TASK_STATES
from airflow_workflow_engine.kernel.commands import RunCancel

if TYPE_CHECKING:
    from airflow_workflow_engine.hooks.settings import EngineSettings
    from airflow_workflow_engine.kernel.kernel import Kernel

__all__ = ["SuspendedStageTrigger", "cancel_suspended_stage"]

logger = logging.getLogger(__name__)

#: Worker threads for the kernel work of all SuspendedStageTriggers of one process.
POLL_THREADS = 4

_T = TypeVar("_T")
_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked child gets its own


async def _off_loop(func: Callable[..., _T], *args: Any) -> _T:
    """Runs ``func(*args)`` in this module's thread pool, off the event loop.

    Not the loop's default executor (``asyncio.to_thread``): the triggerer logs every trigger
    event through that one (structlog's ``ainfo``), so a backlog of polls there, as when many
    batches finish at once, held back the events of every trigger in the process.
    """
    with _pool_lock:
        pool = _pools.get(os.getpid())
        if pool is None:
            pool = _pools[os.getpid()] = ThreadPoolExecutor(POLL_THREADS, "wfe-trigger")
    call = functools.partial(contextvars.copy_context().run, func, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


def cancel_suspended_stage(kernel: Kernel, workflow_run_id: str, stage_id: str, reason: str) -> str:
    """Cancels the workflow run and the stage's external job (its ``on_cancel``); says what
    it did. Used by the trigger's ``on_kill`` when a user fails or finishes a deferred task,
    and when the run was cancelled elsewhere (by a listener, in a process that could not call
    ``on_cancel``): ``run.cancel`` with ``stop_stage_id`` stops the job then."""
    result = kernel.dispatch(
        RunCancel(workflow_run_id=workflow_run_id, reason=reason, stop_stage_id=stage_id)
    )
    if result.cancelled:  # the kernel called on_cancel of every suspended stage
        return "cancelled the workflow run and its batch job"
    if result.stopped_stage_work:
        return "cancelled the batch job (the workflow run was cancelled already)"
    return f"nothing to cancel (the workflow run is {result.status.value})"


def _kernel_for(
    settings: EngineSettings, workflow_ref: str | None, dag_file: Mapping[str, Any] | None
) -> Kernel:
    from airflow_workflow_engine.hooks.kernel_cache import kernel_for
    from airflow_workflow_engine.triggers.refs import (
        DagFileRef,
        load_workflow,
        load_workflow_from_dag_file,
    )

    if workflow_ref:
        return kernel_for(settings, load_workflow(workflow_ref))
    if not dag_file:
        raise ValueError("the trigger names neither a workflow_ref nor a dag_file")
    return kernel_for(settings, load_workflow_from_dag_file(DagFileRef.from_dict(dag_file)))


class SuspendedStageTrigger(BaseTrigger):
    """Polls a suspended stage until it completes, fails, times out or is re-queued.

    :param workflow_run_id: the kernel's workflow run id.
    :param stage_id: the suspended stage.
    :param workflow_ref: import path ``"module:attribute"`` of the workflow (or of the DAG it
        is derived from); see :mod:`airflow_workflow_engine.host.refs`.
    :param dag_file: without ``workflow_ref``: the DAG file the workflow is defined in
        (:meth:`DagFileRef.to_dict <airflow_workflow_engine.host.refs.DagFileRef.to_dict>`),
        loaded by the triggerer.
    :param dag_id: the DAG (for logs).
    :param task_id: the task (for logs).
    :param poll_interval: longest wait between polls, in seconds (the stage's interval).
    :param conn_id: the ``workflow_engine`` connection the task used; ``None`` when the task
        found none and used ``[workflow_engine]`` (looking up a missing connection from the
        triggerer takes seconds).
    """

    def __init__(
        self,
        *,
        workflow_run_id: str,
        stage_id: str,
        workflow_ref: str | None = None,
        dag_file: Mapping[str, Any] | None = None,
        dag_id: str | None = None,
        task_id: str | None = None,
        poll_interval: float = 60.0,
        conn_id: str | None = DEFAULT_CONN_ID,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0 seconds")
        self.workflow_run_id = workflow_run_id
        self.stage_id = stage_id
        if not workflow_ref and not dag_file:
            raise ValueError("SuspendedStageTrigger needs workflow_ref or dag_file")
        self.workflow_ref = workflow_ref
        self.dag_file = dict(dag_file) if dag_file else None
        self.dag_id = dag_id
        self.task_id = task_id
        self.poll_interval = float(poll_interval)
        self.conn_id = conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "workflow_run_id": self.workflow_run_id,
            "stage_id": self.stage_id,
            "workflow_ref": self.workflow_ref,
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "poll_interval": self.poll_interval,
            "conn_id": self.conn_id,
        }
        if self.dag_file:  # only when used: triggers serialized before it rebuild unchanged
            kwargs["dag_file"] = self.dag_file
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def _event(self, status: PollStatus, message: str | None) -> TriggerEvent:
        payload = dict(PollDecision(status, message).event(self.workflow_run_id, self.stage_id))
        return TriggerEvent(payload)  # type: ignore[no-untyped-call]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

        try:
            settings = await WorkflowEngineHook(conn_id=self.conn_id).aget_settings()
            kernel = await _off_loop(_kernel_for, settings, self.workflow_ref, self.dag_file)
        except Exception as exc:
            logger.exception("stage %s: cannot set up polling", self.stage_id)
            yield self._event("error", f"{type(exc).__name__}: {exc}")
            return
        logger.info(
            "polling stage %s of workflow run %s (every <= %.1fs) in the %s",
            self.stage_id,
            self.workflow_run_id,
            self.poll_interval,
            settings.describe_database(),
        )
        while True:
            try:
                decision = await _off_loop(
                    poll_stage, kernel, self.workflow_run_id, self.stage_id, self.poll_interval
                )
            except WorkflowEngineError as exc:
                if not getattr(exc, "retryable", True):
                    yield self._event("error", f"{type(exc).__name__}: {exc}")
                    return
                logger.warning("stage %s: poll failed, retrying: %s", self.stage_id, exc)
                decision = PollDecision(None, wait_seconds=self.poll_interval)
            except Exception as exc:  # the database hiccuped: keep waiting
                logger.warning("stage %s: poll failed, retrying: %s", self.stage_id, exc)
                decision = PollDecision(None, wait_seconds=self.poll_interval)
            if decision.status == "cancelled":
                # Cancelled elsewhere, e.g. by a listener in the api-server, which cannot call
                # the stage's on_cancel: this process knows the workflow, so stop the job here.
                await self._cancel_job(kernel, decision.message or "the run was cancelled")
            if decision.status is not None:
                logger.info(
                    "stage %s of run %s: %s %s",
                    self.stage_id,
                    self.workflow_run_id,
                    decision.status,
                    decision.message or "",
                )
                yield self._event(decision.status, decision.message)
                return
            await asyncio.sleep(decision.wait_seconds)

    # -- a user acted on the deferred task ---------------------------------------------------
    async def on_kill(self) -> None:
        """Airflow calls this when a user marks the deferred task failed or successful, or
        clears it. A clear keeps the batch: the task re-attaches to it when it runs again.
        Otherwise the workflow run is cancelled and the stage's ``on_cancel`` stops the
        provider job, so nobody pays for a batch whose task is gone."""
        from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

        state = await self._task_state()
        if state not in KILLED_TASK_STATES:
            logger.info(
                "stage %s: task %s is %s after a user action (cleared?): the batch is kept",
                self.stage_id,
                self.task_id,
                state or "unknown",
            )
            return
        reason = f"Airflow task '{self.task_id}' was marked {state} while its batch was running"
        settings = await WorkflowEngineHook(conn_id=self.conn_id).aget_settings()
        kernel = await _off_loop(_kernel_for, settings, self.workflow_ref, self.dag_file)
        await self._cancel_job(kernel, reason)

    async def _cancel_job(self, kernel: Kernel, reason: str) -> None:
        try:
            done = await _off_loop(
                cancel_suspended_stage, kernel, self.workflow_run_id, self.stage_id, reason
            )
        except Exception:
            logger.exception("stage %s: cancelling its batch job failed", self.stage_id)
            return
        logger.info("stage %s of run %s: %s", self.stage_id, self.workflow_run_id, done)

    async def _task_state(self) -> str | None:
        """The task's state now, from Airflow's API (``None`` when it cannot be read)."""
        ti = self.task_instance
        run_id = getattr(ti, "run_id", None)
        if not (self.dag_id and self.task_id and run_id):
            return None
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        try:
            states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
                dag_id=self.dag_id, task_ids=[self.task_id], run_ids=[run_id]
            )
        except Exception:
            logger.warning("cannot read the state of task %s", self.task_id, exc_info=True)
            return None
        state = states.get(run_id, {}).get(self.task_id)
        return None if state is None else str(state)
