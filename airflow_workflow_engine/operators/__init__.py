"""Airflow operators: one task runs one stage.

- :class:`~airflow_workflow_engine.operators.stage.StageOperator` for sync stages;
- :class:`~airflow_workflow_engine.operators.batch.AsyncBatchStageOperator` for async-batch
  stages (deferrable by default);
- :class:`~airflow_workflow_engine.operators.approval.WorkflowApprovalOperator`: the run's
  approval point in Airflow's Required Actions (human in the loop).

Names load lazily, so a DAG file pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.operators.approval import WorkflowApprovalOperator
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from airflow_workflow_engine.operators.stage import StageOperator

__all__ = ["AsyncBatchStageOperator", "StageOperator", "WorkflowApprovalOperator"]

_EXPORTS = {
    "StageOperator": "airflow_workflow_engine.operators.stage",
    "AsyncBatchStageOperator": "airflow_workflow_engine.operators.batch",
    "WorkflowApprovalOperator": "airflow_workflow_engine.operators.approval",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
