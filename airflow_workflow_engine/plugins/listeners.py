"""Airflow listeners that mirror failures into the kernel: cancel is authoritative.

- A DAG run that fails (a task failed, or a user marked the DAG run failed in the UI or through
  the REST API) cancels its workflow run: ``run.cancel`` with the reason. Open stages are
  cancelled with it, and a stage still running somewhere then finishes as a ghost: its result
  is discarded and its task fails without retries.
- A stage task that fails outside its operator (a user marked it failed, or the scheduler
  failed it because its process died) cancels the workflow run too. A stage task that fails by
  itself is left alone: the operator has already told the kernel (a retry, or a failed stage).

Listeners run inside Airflow's scheduler and api-server. They never use Airflow's own database
session: that session is the caller's (a scoped session), and committing or closing it from a
listener breaks the scheduler's locks. The kernel writes through the engine's own connection
(``workflow_engine_default`` / ``[workflow_engine] sql_alchemy_conn``) from a worker thread of
this module. Each listener waits a few seconds for its write and lets it finish in the
background after that, so Airflow never stalls on the engine's database.

Registered by :class:`~airflow_workflow_engine.plugins.plugin.WorkflowEnginePlugin`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow.listeners import hookimpl

from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.host.queries import runs_of_dag_run
from airflow_workflow_engine.host.runs import is_stage_task
from airflow_workflow_engine.kernel.commands import RunCancel

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun

__all__ = [
    "MirrorResult",
    "before_stopping",
    "mirror_dag_run_failed",
    "mirror_task_failed",
    "on_dag_run_failed",
    "on_task_instance_failed",
    "should_mirror_task_failure",
    "wait_for_pending",
]

logger = logging.getLogger(__name__)

#: How long a listener waits for its kernel write before leaving it to the background thread.
WAIT_SECONDS = 3.0
_TASK_PROCESS_MODULES = "airflow.sdk."

MirrorAction = Literal["cancelled", "already_final", "no_workflow_run", "not_configured"]


@dataclass(frozen=True)
class MirrorResult:
    """What a listener did to the kernel."""

    action: MirrorAction
    workflow_run_id: str | None = None
    #: The workflow run's status afterwards.
    status: str | None = None
    reason: str = ""


# -- what the listeners do (plain functions, callable without Airflow's listener machinery) --


def mirror_dag_run_failed(
    dag_id: str, run_id: str, msg: str | None = None, *, conn_id: str | None = DEFAULT_CONN_ID
) -> MirrorResult:
    """Cancels the workflow run of a failed DAG run (nothing if it has none or it is final)."""
    reason = f"Airflow DAG run {dag_id}/{run_id} failed"
    if msg:
        reason += f" ({msg})"
    return _cancel(dag_id, run_id, reason, conn_id, rejection_first=True)


def mirror_task_failed(
    dag_id: str,
    run_id: str,
    task_id: str,
    detail: str | None = None,
    *,
    conn_id: str | None = DEFAULT_CONN_ID,
) -> MirrorResult:
    """Cancels the workflow run of a DAG run whose stage task failed outside its operator."""
    reason = f"Airflow task '{task_id}' of DAG run {dag_id}/{run_id} " + (
        detail or "was marked failed"
    )
    return _cancel(dag_id, run_id, reason, conn_id, task_id=task_id)


_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def _cancel(
    dag_id: str,
    run_id: str,
    reason: str,
    conn_id: str | None,
    *,
    task_id: str | None = None,
    rejection_first: bool = False,
) -> MirrorResult:
    from airflow_workflow_engine.errors import MigrationsNotAppliedError
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.hooks.settings import EngineNotConfiguredError

    try:
        kernel = WorkflowEngineHook(conn_id=conn_id).get_kernel()
    except EngineNotConfiguredError as exc:
        _warn_once(
            "not-configured",
            "The workflow engine is not configured, so Airflow failures are not mirrored "
            "into it: %s",
            exc,
        )
        return MirrorResult("not_configured", reason=reason)
    try:
        runs = runs_of_dag_run(kernel.persistence, dag_id, run_id, task_id)
    except MigrationsNotAppliedError as exc:
        _warn_once("not-migrated", "Airflow failures are not mirrored: %s", exc)
        return MirrorResult("not_configured", reason=reason)
    if not runs:
        return MirrorResult("no_workflow_run", reason=reason)
    results = [_cancel_run(kernel, run, reason, rejection_first) for run in runs]
    # One result: the first run cancelled, else the first run's (the DAG's own run first).
    return next((r for r in results if r.action == "cancelled"), results[0])


def _cancel_run(kernel: Any, run: Any, reason: str, rejection_first: bool) -> MirrorResult:
    """``run.cancel``, an external cancel. A final run is left as it is (e.g. ApprovalSensor
    recorded its rejection: that error stays); for a DAG run's failure the run's standing
    rejection goes first in the reason, as the cause."""
    result = kernel.dispatch(
        RunCancel(workflow_run_id=run.id, reason=reason, rejection_first=rejection_first)
    )
    if not result.cancelled:
        return MirrorResult("already_final", run.id, result.status.value, reason)
    logger.info("Cancelled workflow run %s: %s", run.id, result.reason)
    return MirrorResult("cancelled", run.id, result.status.value, result.reason or reason)


# -- which task failures to mirror --------------------------------------------------------


def should_mirror_task_failure(task_instance: Any) -> bool:
    """A stage task that is finally FAILED (no retry left), failed outside its operator.

    In the task's own process (``RuntimeTaskInstance``) the operator has already told the
    kernel what happened, so only the scheduler's and api-server's task instances count.
    """
    if type(task_instance).__module__.startswith(_TASK_PROCESS_MODULES):
        return False
    state = getattr(task_instance, "state", None)
    if str(getattr(state, "value", state)) != "failed":
        return False  # up_for_retry: the next try runs the stage again
    return is_stage_task(task_instance)


def _detail(previous_state: Any, error: Any) -> str:
    if previous_state is None:
        return "was marked failed"
    text = str(error).strip() if error else ""
    return "failed outside its operator" + (f": {text}" if text else "")


# -- running the writes off Airflow's thread ----------------------------------------------

_lock = threading.Lock()
_state: dict[str, Any] = {"pid": None, "pool": None}
_pending: set[Future[MirrorResult | None]] = set()


def _pool() -> ThreadPoolExecutor:
    with _lock:
        pool: ThreadPoolExecutor | None = _state["pool"]
        if pool is None or _state["pid"] != os.getpid():  # new, or inherited by a fork
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workflow-engine-listener")
            _state.update(pid=os.getpid(), pool=pool)
            _pending.clear()
        return pool


def _guarded(fn: Callable[..., MirrorResult], *args: Any) -> MirrorResult | None:
    try:
        return fn(*args)
    except Exception:
        logger.exception("Could not mirror an Airflow failure into the workflow engine")
        return None


def _submit(fn: Callable[..., MirrorResult], *args: Any) -> Future[MirrorResult | None]:
    future = _pool().submit(_guarded, fn, *args)
    with _lock:
        _pending.add(future)
    future.add_done_callback(_done)
    try:
        future.result(timeout=WAIT_SECONDS)
    except FutureTimeoutError:
        logger.info("The workflow engine's database is slow; the cancel continues in background")
    return future


def _done(future: Future[MirrorResult | None]) -> None:
    with _lock:
        _pending.discard(future)


def wait_for_pending(timeout: float | None = None) -> bool:
    """Waits for the background writes of this process; ``True`` when none is left."""
    with _lock:
        pending = list(_pending) if _state["pid"] == os.getpid() else []
    _, not_done = wait_futures(pending, timeout=timeout)
    return not not_done


# -- the listeners ------------------------------------------------------------------------


@hookimpl
def on_dag_run_failed(dag_run: DagRun, msg: str) -> None:
    """A DAG run failed (or was marked failed): cancel its workflow run."""
    try:
        dag_id, run_id = str(dag_run.dag_id), str(dag_run.run_id)
        _submit(mirror_dag_run_failed, dag_id, run_id, msg)
    except Exception:
        logger.exception("workflow engine listener on_dag_run_failed failed")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    """A stage task failed outside its operator: cancel its workflow run."""
    try:
        if not should_mirror_task_failure(task_instance):
            return
        _submit(
            mirror_task_failed,
            str(task_instance.dag_id),
            str(task_instance.run_id),
            str(task_instance.task_id),
            _detail(previous_state, error),
        )
    except Exception:
        logger.exception("workflow engine listener on_task_instance_failed failed")


@hookimpl
def before_stopping(component: Any) -> None:
    """Lets pending kernel writes finish before the component stops."""
    del component
    if not wait_for_pending(timeout=2 * WAIT_SECONDS):
        logger.warning("Stopping with workflow-engine cancels still in flight")
