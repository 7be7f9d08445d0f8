"""Airflow triggers: :class:`~airflow_workflow_engine.triggers.suspended.SuspendedStageTrigger`
polls a suspended async-batch stage from the triggerer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.triggers.suspended import SuspendedStageTrigger

__all__ = ["SuspendedStageTrigger"]


__getattr__, __dir__ = lazy_exports(
    globals(), {"SuspendedStageTrigger": "suspended"}, relative=True, public=__all__
)
