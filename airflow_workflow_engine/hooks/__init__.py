"""Airflow hooks: :class:`~airflow_workflow_engine.hooks.engine.WorkflowEngineHook` builds the
kernel from an Airflow connection or the ``[workflow_engine]`` config section.

Only the Airflow side of the package (``hooks``, ``operators``, ``triggers``, ``dag``) imports
``airflow``. Names load lazily, so ``import airflow_workflow_engine.hooks`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workflow_engine.hooks.engine import (
        EngineNotConfiguredError,
        EngineSettings,
        WorkflowEngineHook,
    )

__all__ = ["EngineNotConfiguredError", "EngineSettings", "WorkflowEngineHook"]

_EXPORTS = {name: "airflow_workflow_engine.hooks.engine" for name in __all__}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
