"""airflow-workflow-engine: type-safe, multi-stage AI workflows on Apache Airflow 3.

Names are loaded lazily (PEP 562), so a DAG file that imports this package pays only for
what it uses: no AI SDK, boto3 or SQLAlchemy at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

__version__ = "0.4.0"

_EXPORTS: dict[str, str] = {
    # definitions
    "define_stage": "definitions.stage",
    "stage": "definitions.stage",
    "define_async_batch_stage": "definitions.stage",
    "batch_stage": "definitions.stage",
    "Stage": "definitions.stage",
    "StageResult": "definitions.stage",
    "Suspended": "definitions.stage",
    "CompletionCheck": "definitions.stage",
    "EmptyConfig": "definitions.stage",
    "StageContext": "definitions.context",
    "WorkflowBuilder": "definitions.workflow",
    "Workflow": "definitions.workflow",
    "create_stage_ids": "definitions.ids",
    "define_stage_ids": "definitions.ids",
    "is_valid_stage_id": "definitions.ids",
    "assert_valid_stage_id": "definitions.ids",
    "with_ai_config": "definitions.config",
    "with_standard_config": "definitions.config",
    "with_full_config": "definitions.config",
    "Actor": "definitions.annotations",
    "typed_key": "definitions.annotations",
    # kernel
    "create_kernel": "kernel.kernel",
    "Kernel": "kernel.kernel",
    "DictRegistry": "kernel.kernel",
    "Status": "kernel.status",
    "define_plugin": "kernel.plugins",
    "create_plugin_runner": "kernel.plugins",
    # errors
    "WorkflowEngineError": "errors",
    "NonRetryableStageError": "errors",
}

__all__ = [
    "Actor",
    "CompletionCheck",
    "DictRegistry",
    "EmptyConfig",
    "Kernel",
    "NonRetryableStageError",
    "Stage",
    "StageContext",
    "StageResult",
    "Status",
    "Suspended",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowEngineError",
    "__version__",
    "assert_valid_stage_id",
    "batch_stage",
    "create_kernel",
    "create_plugin_runner",
    "create_stage_ids",
    "define_async_batch_stage",
    "define_plugin",
    "define_stage",
    "define_stage_ids",
    "is_valid_stage_id",
    "stage",
    "typed_key",
    "with_ai_config",
    "with_full_config",
    "with_standard_config",
]

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.annotations import Actor, typed_key
    from airflow_workflow_engine.definitions.config import (
        with_ai_config,
        with_full_config,
        with_standard_config,
    )
    from airflow_workflow_engine.definitions.context import StageContext
    from airflow_workflow_engine.definitions.ids import (
        assert_valid_stage_id,
        create_stage_ids,
        define_stage_ids,
        is_valid_stage_id,
    )
    from airflow_workflow_engine.definitions.stage import (
        CompletionCheck,
        EmptyConfig,
        Stage,
        StageResult,
        Suspended,
        batch_stage,
        define_async_batch_stage,
        define_stage,
        stage,
    )
    from airflow_workflow_engine.definitions.workflow import Workflow, WorkflowBuilder
    from airflow_workflow_engine.errors import NonRetryableStageError, WorkflowEngineError
    from airflow_workflow_engine.kernel.kernel import DictRegistry, Kernel, create_kernel
    from airflow_workflow_engine.kernel.plugins import create_plugin_runner, define_plugin
    from airflow_workflow_engine.kernel.status import Status

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, relative=True, public=__all__)
