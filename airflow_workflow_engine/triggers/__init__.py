"""Airflow triggers: :class:`~airflow_workflow_engine.triggers.suspended.SuspendedStageTrigger`
polls a suspended async-batch stage from the triggerer."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workflow_engine.triggers.suspended import SuspendedStageTrigger

__all__ = ["SuspendedStageTrigger"]


def __getattr__(name: str) -> Any:
    if name != "SuspendedStageTrigger":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.suspended"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
