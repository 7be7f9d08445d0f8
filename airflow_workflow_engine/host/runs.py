"""The DAG-run mapping: how an Airflow DAG run, task and try map onto the kernel's rows.

One name per idea, shared by the operators, sensors, triggers, listeners, the CLI and the UI:

- the **run key**: the workflow run a DAG run creates has the idempotency key
  ``"<dag_id>/<run_id>"`` (``"<dag_id>/<run_id>/<group_id>"`` for the workflow of a
  ``WorkflowTaskGroup``: a DAG run runs one workflow per group). DAG ids, run ids and group ids
  hold no ``/``;
- **clear versus retry**: Airflow's clear sets ``max_tries = try_number + retries``, so the
  first try since the last clear is ``max_tries - retries + 1``. A finished stage row from an
  earlier try is what the clear asked to replace (``run.rerunStages``); one from this series of
  tries is a duplicate delivery, which ``job.execute`` replays;
- **what a task's outcome means**: :func:`task_verdict` turns a ``job.execute`` result into
  return / retry / fail / wait.

No ``airflow`` import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.commands import JobExecuteResult

__all__ = [
    "KILLED_TASK_STATES",
    "STAGE_OPERATORS",
    "WAITING_TASK_STATES",
    "TaskVerdict",
    "first_try_since_clear",
    "is_stage_operator",
    "is_stage_task",
    "run_key",
    "run_key_candidates",
    "split_run_key",
    "task_verdict",
    "was_cleared",
]

#: Operator class names (``TaskInstance.operator``) that run stages.
STAGE_OPERATORS = frozenset({"StageOperator", "AsyncBatchStageOperator"})
_STAGE_MODULES = "airflow_workflow_engine.operators."
_STAGE_OPERATOR_MODULE = "airflow_workflow_engine.operators.stage"

#: Task states of a cleared task that has not been queued yet (it waits to run again).
WAITING_TASK_STATES = frozenset({None, "none", "scheduled"})
#: Task states after a user acted on a deferred task that mean "stop the external job" (mark
#: failed, mark success...). Any other state (none, scheduled, queued, running, deferred)
#: means the task was cleared: it re-attaches to the job, which must keep running.
KILLED_TASK_STATES = frozenset({"failed", "success", "skipped", "upstream_failed", "removed"})


# -- the run key ------------------------------------------------------------------------------


def run_key(dag_id: str, run_id: str, workflow_group: str | None = None) -> str:
    """The idempotency key of the workflow run a DAG run creates (``run.create``):
    ``"<dag_id>/<run_id>"``, or ``"<dag_id>/<run_id>/<group_id>"`` for the workflow of a
    :class:`~airflow_workflow_engine.task_group.WorkflowTaskGroup`."""
    key = f"{dag_id}/{run_id}"
    return f"{key}/{workflow_group}" if workflow_group else key


def split_run_key(key: str | None) -> tuple[str | None, str | None, str | None]:
    """``(dag_id, run_id, group_id)`` of a key made by :func:`run_key` (``None`` parts for a
    key of a run created outside Airflow)."""
    if not key or "/" not in key:
        return None, None, None
    dag_id, _, rest = key.partition("/")
    run_id, _, group = rest.partition("/")
    return dag_id, run_id, group or None


def run_key_candidates(dag_id: str, run_id: str, task_id: str) -> list[str]:
    """The keys the workflow run of a stage task may have, most specific first: one per
    task-group prefix of ``task_id`` (``"a.b.stage"``: groups ``a.b``, ``a``), then none."""
    parts = task_id.split(".")[:-1]
    groups = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return [*(run_key(dag_id, run_id, g) for g in groups), run_key(dag_id, run_id)]


# -- clear versus retry -----------------------------------------------------------------------


def first_try_since_clear(max_tries: int, retries: int) -> int:
    """The first try number since the task was last cleared (1 for a task never cleared)."""
    return int(max_tries) - int(retries) + 1


def was_cleared(
    *, stage_finished: bool, stage_attempt: int, max_tries: int | None, retries: int
) -> bool:
    """Whether a finished stage row is what a clear asked to replace: it was written by a try
    before the first try since the last clear. ``max_tries`` ``None``: no clear to detect."""
    if max_tries is None:
        return False
    first_try = first_try_since_clear(max_tries, retries)
    return first_try > 1 and stage_finished and stage_attempt < first_try


# -- which tasks run stages -------------------------------------------------------------------


def is_stage_task(task_instance: Any) -> bool:
    """Whether a task instance (or ``SimpleNamespace(task=...)``) runs a stage, by its
    operator's class name or module (no import of the operators)."""
    if getattr(task_instance, "operator", None) in STAGE_OPERATORS:
        return True
    task = getattr(task_instance, "task", None)
    if task is None:
        return False
    if getattr(task, "task_type", None) in STAGE_OPERATORS:
        return True
    module = getattr(task, "_task_module", None) or type(task).__module__
    return str(module).startswith(_STAGE_MODULES)


def is_stage_operator(task: Any) -> bool:
    """``isinstance(task, StageOperator)`` without importing the operators (and Airflow)."""
    return any(
        cls.__name__ == "StageOperator" and cls.__module__ == _STAGE_OPERATOR_MODULE
        for cls in type(task).__mro__
    )


# -- what a task's outcome means --------------------------------------------------------------


@dataclass(frozen=True)
class TaskVerdict:
    """What a stage task does with a ``job.execute`` result.

    - ``succeed``: advance the run (``run.transition``) and return the summary;
    - ``wait``: the stage suspended (a batch): defer, or fail when the operator cannot wait;
    - ``retry``: fail this try; Airflow retries the task;
    - ``fail``: fail the task without retries (after ``run.transition`` when ``transition``).
    """

    action: Literal["succeed", "wait", "retry", "fail"]
    message: str = ""
    transition: bool = False


def task_verdict(result: JobExecuteResult, stage_id: str) -> TaskVerdict:
    """The meaning of a ``job.execute`` result for the stage task that dispatched it."""
    run_id = result.workflow_run_id
    if result.ghost:
        return TaskVerdict(
            "fail",
            f"Stage '{stage_id}': workflow run {run_id} was cancelled or failed while this "
            "attempt ran, so its result was discarded (a ghost); the task is not retried.",
        )
    if result.outcome == "completed":
        return TaskVerdict("succeed", transition=True)
    if result.outcome == "suspended":
        return TaskVerdict("wait")
    if result.outcome == "failed":
        if result.retry:
            return TaskVerdict(
                "retry",
                f"Stage '{stage_id}' attempt {result.attempt} failed: {result.error}. "
                "Airflow retries the task.",
            )
        return TaskVerdict("fail", f"Stage '{stage_id}' failed: {result.error}", transition=True)
    return TaskVerdict(
        "fail",
        f"Stage '{stage_id}' did not run: workflow run {run_id} is no longer active "
        f"({result.error or result.outcome}).",
    )
