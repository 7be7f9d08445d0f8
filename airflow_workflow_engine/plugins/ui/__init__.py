"""The workflow engine's pages in Airflow's UI: workflow runs, their stages and AI spend.

:class:`WorkflowEngineUI` is the ASGI app the provider's plugin mounts on Airflow's
api-server (``fastapi_apps``, under :data:`URL_PREFIX`). Airflow imports plugins in every
component (scheduler, workers, triggerer), so this module stays cheap: the FastAPI app
(:mod:`~airflow_workflow_engine.plugins.ui.app`, which imports Airflow's api-server code) is
built on the first request, and the engine's database is opened then too
(:mod:`~airflow_workflow_engine.plugins.ui.reader`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["DAG_RUN_ROUTE", "NAV_ROUTE", "URL_PREFIX", "WorkflowEngineUI"]

#: Where Airflow's api-server mounts the pages.
URL_PREFIX = "/workflow-engine"
#: The ``url_route`` of the plugin's external views: Airflow's UI shows the pages in its
#: frame at ``/plugin/<NAV_ROUTE>`` (the "Workflows" navigation entry; a page's own path may
#: follow) and at ``/dags/<dag_id>/runs/<run_id>/plugin/<DAG_RUN_ROUTE>`` (the DAG run's tab).
NAV_ROUTE = "workflow-runs"
DAG_RUN_ROUTE = "workflow-run"


class WorkflowEngineUI:
    """An ASGI app that builds the pages' FastAPI app when the first request comes."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WorkflowEngineUI({'built' if self._app is not None else 'not built yet'})"

    @property
    def app(self) -> ASGIApp:
        """The FastAPI app (built on first use)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_workflow_engine.plugins.ui.app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
