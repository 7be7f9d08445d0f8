"""The provider's Airflow plugin (:class:`~airflow_workflow_engine.plugins.plugin.
WorkflowEnginePlugin`) and its listeners (:mod:`airflow_workflow_engine.plugins.listeners`).

Nothing is imported here: Airflow imports the plugin module by its path.
"""

from __future__ import annotations

__all__: list[str] = []
