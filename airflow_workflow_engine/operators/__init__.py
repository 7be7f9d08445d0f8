"""Airflow operators: one task runs one stage.

- :class:`~airflow_workflow_engine.operators.stage.StageOperator` for sync stages;
- :class:`~airflow_workflow_engine.operators.batch.AsyncBatchStageOperator` for async-batch
  stages (deferrable by default).

Names load lazily, so a DAG file pays only for what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from airflow_workflow_engine.operators.stage import StageOperator

__all__ = ["AsyncBatchStageOperator", "StageOperator"]

_EXPORTS = {
    "StageOperator": "airflow_workflow_engine.operators.stage",
    "AsyncBatchStageOperator": "airflow_workflow_engine.operators.batch",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
