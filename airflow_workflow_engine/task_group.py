"""``WorkflowTaskGroup``: a workflow as one task group among a DAG's other tasks.

Like astronomer-cosmos's ``DbtTaskGroup``: the group holds one task per stage (task ids
``<group_id>.<stage_id>``), chained group by group, and is wired like any task or group::

    with DAG("nightly", schedule="@daily", start_date=...) as dag:
        start = EmptyOperator(task_id="start")
        docs = WorkflowTaskGroup(workflow=documents, group_id="docs")
        images = WorkflowTaskGroup(workflow=images_wf, group_id="images")
        end = EmptyOperator(task_id="end")
        start >> [docs, images] >> end

Each group runs its own workflow run per DAG run, with the idempotency key
``"<dag_id>/<run_id>/<group_id>"`` (a DAG built by ``build_dag`` keeps ``"<dag_id>/<run_id>"``).
The workflow's input is the DAG run's conf (and the DAG params that are fields of its input
model), as for ``build_dag``; a DAG may hold several groups, of the same workflow or not.

Importing this module imports Airflow's task SDK, never an AI SDK or SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup

from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.operators.stage import StageOperator

__all__ = ["WorkflowTaskGroup"]


class WorkflowTaskGroup(TaskGroup):
    """A task group running ``workflow``: one task per stage, groups in order.

    :param workflow: the workflow (a ``Workflow``).
    :param group_id: the task group id; default: the workflow id.
    :param config: per stage id, the stage's config (templated, like the operators').
    :param conn_id: the ``workflow_engine`` connection of every task.
    :param deferrable: whether async-batch stages wait in the triggerer (default).
    :param workflow_ref: import path of the workflow for the triggerer (default: found by
        itself, the DAG file at worst; see :mod:`airflow_workflow_engine.host.refs`).
    :param kwargs: anything else ``TaskGroup`` takes (``tooltip``, ``default_args``...).
    """

    #: Marks the group for the stage operators (run key) without importing this module.
    is_workflow_group = True

    def __init__(
        self,
        *,
        workflow: Workflow,
        group_id: str | None = None,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        conn_id: str | None = DEFAULT_CONN_ID,
        deferrable: bool = True,
        workflow_ref: str | None = None,
        approval_before: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        from airflow_workflow_engine.dag import (
            _check_approval_stages,
            _check_config_stages,
            add_stage_tasks,
        )
        from airflow_workflow_engine.definitions.workflow import Workflow

        if not isinstance(workflow, Workflow):
            raise TypeError(
                f"WorkflowTaskGroup: workflow must be a Workflow (WorkflowBuilder(...).build()), "
                f"got {workflow!r}."
            )
        config = dict(config or {})
        gid = group_id or workflow.id
        _check_config_stages(f"WorkflowTaskGroup '{gid}'", workflow, config)
        _check_approval_stages(f"WorkflowTaskGroup '{gid}'", workflow, approval_before)
        kwargs.setdefault("tooltip", f"Workflow '{workflow.id}': {workflow.name}")
        super().__init__(group_id=gid, **kwargs)
        self.workflow = workflow
        with self:
            first, last = add_stage_tasks(
                workflow,
                config=config,
                conn_id=conn_id,
                deferrable=deferrable,
                workflow_ref=workflow_ref,
                approval_before=approval_before,
            )
        self.first_stage_tasks: list[StageOperator] = first
        self.last_stage_tasks: list[StageOperator] = last
