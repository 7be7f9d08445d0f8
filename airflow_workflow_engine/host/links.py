"""Where the engine's pages live in Airflow's UI, and the URL of a DAG run's workflow run.

Shared by the pages (:mod:`airflow_workflow_engine.plugins.ui`), the plugin's UI entries and
the "Workflow run" extra link of stage tasks
(:class:`~airflow_workflow_engine.operators.links.WorkflowRunLink`). No ``airflow`` import.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["DAG_RUN_ROUTE", "NAV_ROUTE", "URL_PREFIX", "workflow_run_path"]

#: Where Airflow's api-server mounts the pages.
URL_PREFIX = "/workflow-engine"
#: The ``url_route`` of the plugin's external views: Airflow's UI shows the pages in its
#: frame at ``/plugin/<NAV_ROUTE>`` (the "Workflows" navigation entry; a page's own path may
#: follow) and at ``/dags/<dag_id>/runs/<run_id>/plugin/<DAG_RUN_ROUTE>`` (the DAG run's tab).
NAV_ROUTE = "workflow-runs"
DAG_RUN_ROUTE = "workflow-run"


def workflow_run_path(dag_id: str, run_id: str, workflow_group: str | None = None) -> str:
    """``/workflow-engine/dags/<dag_id>/runs/<run_id>`` (path segments percent-encoded;
    ``/<group_id>`` appended for a ``WorkflowTaskGroup``'s run)."""
    path = f"{URL_PREFIX}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe=':+@')}"
    if workflow_group:
        path += "/" + quote(workflow_group, safe="")
    return path
