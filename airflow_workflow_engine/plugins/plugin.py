"""The provider's Airflow plugin: for now the listeners that mirror failures into the kernel
(:mod:`airflow_workflow_engine.plugins.listeners`); the UI pages come later.

Airflow loads it through the ``airflow.plugins`` entry point of this package::

    [project.entry-points."airflow.plugins"]
    workflow_engine = "airflow_workflow_engine.plugins.plugin:WorkflowEnginePlugin"

or from a file in the plugins folder that imports it::

    from airflow_workflow_engine.plugins.plugin import WorkflowEnginePlugin
"""

from __future__ import annotations

from types import ModuleType

from airflow.plugins_manager import AirflowPlugin

from airflow_workflow_engine.plugins import listeners as _listeners

__all__ = ["PLUGIN_NAME", "WorkflowEnginePlugin"]

PLUGIN_NAME = "workflow_engine"


class WorkflowEnginePlugin(AirflowPlugin):
    """Registers the workflow engine's listeners with Airflow."""

    name = PLUGIN_NAME
    listeners: list[ModuleType | object] = [_listeners]  # noqa: RUF012 (Airflow's own API)
