"""Airflow operators: one task runs one stage.

- :class:`~airflow_workflow_engine.operators.stage.StageOperator` for sync stages;
- :class:`~airflow_workflow_engine.operators.batch.AsyncBatchStageOperator` for async-batch
  stages (deferrable by default).

Names load lazily, so a DAG file pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from airflow_workflow_engine.operators.stage import StageOperator

__all__ = ["AsyncBatchStageOperator", "StageOperator"]

_EXPORTS = {
    "StageOperator": "airflow_workflow_engine.operators.stage",
    "AsyncBatchStageOperator": "airflow_workflow_engine.operators.batch",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
