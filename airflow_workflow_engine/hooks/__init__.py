"""Airflow hooks: :class:`~airflow_workflow_engine.hooks.engine.WorkflowEngineHook` builds the
kernel from an Airflow connection or the ``[workflow_engine]`` config section.

Only the Airflow side of the package (``hooks``, ``operators``, ``triggers``, ``dag``) imports
``airflow``. Names load lazily, so ``import airflow_workflow_engine.hooks`` costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.hooks.engine import (
        EngineNotConfiguredError,
        EngineSettings,
        WorkflowEngineHook,
    )

__all__ = ["EngineNotConfiguredError", "EngineSettings", "WorkflowEngineHook"]

_EXPORTS = {name: "airflow_workflow_engine.hooks.engine" for name in __all__}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
