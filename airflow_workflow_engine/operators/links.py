"""The "Workflow run" extra link of stage tasks: the engine's page of the task's DAG run,
inside Airflow's UI (the DAG run's "Workflow run" tab, Airflow's navigation around it).

Airflow 3 computes an operator's extra links in the task process when the task finishes
(each try) and keeps them in XCom (``_link_WorkflowRunLink``); the UI shows them as buttons
on the task instance. The link is declared on
:class:`~airflow_workflow_engine.operators.stage.StageOperator` (and so on
``AsyncBatchStageOperator``) and listed under ``extra-links`` in the provider info; the URL is
the host layer's (:mod:`airflow_workflow_engine.host.links`), the pages' path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

from airflow_workflow_engine.host.links import DAG_RUN_ROUTE, NAV_ROUTE, workflow_run_path

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["WorkflowRunLink", "workflow_run_ui_url", "workflow_run_url"]


def workflow_run_url(
    dag_id: str, run_id: str, base_url: str | None = None, workflow_group: str | None = None
) -> str:
    """``<[api] base_url>/workflow-engine/dags/<dag_id>/runs/<run_id>`` (path segments
    percent-encoded; ``/<group_id>`` appended for a ``WorkflowTaskGroup``'s run); a path from
    the root when ``base_url`` is not set."""
    if base_url is None:
        from airflow.sdk import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    return base_url.rstrip("/") + workflow_run_path(dag_id, run_id, workflow_group)


def workflow_run_ui_url(
    dag_id: str, run_id: str, base_url: str | None = None, workflow_group: str | None = None
) -> str:
    """The engine's page of a DAG run inside Airflow's UI: the DAG run's "Workflow run" tab
    (``<base_url>/dags/<dag_id>/runs/<run_id>/plugin/workflow-run``); for a
    ``WorkflowTaskGroup``'s run, whose page the tab does not show, the "Workflows" view
    opened at that page (``<base_url>/plugin/workflow-runs/<page path>``: Airflow's UI loads
    the path after the view's route into its frame)."""
    if base_url is None:
        from airflow.sdk import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    root = base_url.rstrip("/")
    if workflow_group:
        page = workflow_run_url(dag_id, run_id, urlsplit(root).path, workflow_group)
        return f"{root}/plugin/{NAV_ROUTE}{page}"
    dag_run = f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe=':+@')}"
    return f"{root}{dag_run}/plugin/{DAG_RUN_ROUTE}"


class WorkflowRunLink(BaseOperatorLink):
    """Opens the engine's page of the DAG run's workflow run (its stages, annotations and AI
    calls) inside Airflow's UI: :func:`workflow_run_ui_url`."""

    name = "Workflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        group = getattr(operator, "workflow_group", None)
        return workflow_run_ui_url(ti_key.dag_id, ti_key.run_id, workflow_group=group)
