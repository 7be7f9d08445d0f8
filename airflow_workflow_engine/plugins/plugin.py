"""The provider's Airflow plugin:

- the listeners that mirror failures into the kernel
  (:mod:`airflow_workflow_engine.plugins.listeners`);
- the workflow engine's pages, a FastAPI app that Airflow's api-server mounts at
  ``/workflow-engine`` (:mod:`airflow_workflow_engine.plugins.ui`): workflow runs, their
  stages, annotations and AI calls, and AI spend;
- two entries in Airflow's UI: "Workflows" in the navigation, and a "Workflow run" tab
  on every DAG run (``{DAG_ID}`` and ``{RUN_ID}`` are filled in by Airflow's UI).

The "Workflow run" extra link of stage tasks
(:class:`~airflow_workflow_engine.operators.links.WorkflowRunLink`) is declared on the stage
operators themselves: Airflow 3 stores each task's links when the task runs, so the link
needs no registration here (the provider info lists it under ``extra-links``).

Airflow loads the plugin through the ``airflow.plugins`` entry point of this package::

    [project.entry-points."airflow.plugins"]
    workflow_engine = "airflow_workflow_engine.plugins.plugin:WorkflowEnginePlugin"

or from a file in the plugins folder that imports it::

    from airflow_workflow_engine.plugins.plugin import WorkflowEnginePlugin

Importing this module is cheap and needs no engine database: the pages' app is built, and
the database opened, on the first request to the api-server.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

from airflow_workflow_engine.host.links import DAG_RUN_ROUTE, NAV_ROUTE, URL_PREFIX
from airflow_workflow_engine.plugins import listeners as _listeners
from airflow_workflow_engine.plugins.ui import WorkflowEngineUI

__all__ = ["PLUGIN_NAME", "WorkflowEnginePlugin"]

PLUGIN_NAME = "workflow_engine"


def _ui_path(path: str) -> str:
    """``path`` under the path Airflow is served at (the path of ``[api] base_url``)."""
    try:
        from airflow.configuration import conf

        base = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    except Exception:  # a broken setting must not stop the plugin (and Airflow) from loading
        base = ""
    return f"{base}{URL_PREFIX}{path}"


class WorkflowEnginePlugin(AirflowPlugin):
    """The workflow engine's listeners, pages and UI entries."""

    name = PLUGIN_NAME
    listeners: list[ModuleType | object] = [_listeners]  # noqa: RUF012 (Airflow's own API)
    fastapi_apps: list[Any] = [  # noqa: RUF012
        {"name": "Workflow engine", "app": WorkflowEngineUI(), "url_prefix": URL_PREFIX}
    ]
    external_views: list[Any] = [  # noqa: RUF012
        {
            "name": "Workflows",
            "href": _ui_path("/runs"),
            "destination": "nav",
            "url_route": NAV_ROUTE,
            "nav_top_level": True,
            "icon": _ui_path("/static/icon.svg"),
        },
        {
            "name": "Workflow run",
            "href": _ui_path("/dags/{DAG_ID}/runs/{RUN_ID}"),
            "destination": "dag_run",
            "url_route": DAG_RUN_ROUTE,
            "icon": _ui_path("/static/icon.svg"),
        },
    ]
