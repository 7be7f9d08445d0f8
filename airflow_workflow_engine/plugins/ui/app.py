"""The FastAPI app of the workflow engine's pages, mounted by Airflow's api-server under
``/workflow-engine`` (see :class:`~airflow_workflow_engine.plugins.ui.WorkflowEngineUI`).

Server-rendered HTML (Jinja2 templates and one stylesheet in this package) and a JSON API:

====================================================  =========================================
``/runs``, ``/api/runs``                              workflow runs, newest first
``/runs/{id}``, ``/api/runs/{id}``                    one run: stages, annotations, AI calls,
                                                      events
``/dags/{dag_id}/runs/{run_id}`` (and under ``/api``)  the workflow run of an Airflow DAG run
``/costs``, ``/api/costs``                            AI spend by day, model and DAG
====================================================  =========================================

Only logged-in Airflow users get in, through Airflow's own security dependency
(:func:`airflow.api_fastapi.core_api.security.get_user`: the ``Authorization: Bearer`` JWT or
the browser's ``_token`` cookie). A user sees the runs and costs of the DAGs the auth manager
lets them read; runs and ledger rows that belong to no DAG (made outside Airflow) only when
they may read every DAG. Without a valid token the JSON API answers 401 and a page redirects
to Airflow's login.

This module imports Airflow's api-server code: it is imported on the first request, in the
api-server, never when the plugin is loaded.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.sdk import timezone as airflow_timezone
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_workflow_engine.errors import (
    DatabaseUnavailableError,
    MigrationsNotAppliedError,
    WorkflowEngineError,
)
from airflow_workflow_engine.host.format import money_text, parse_when
from airflow_workflow_engine.host.links import URL_PREFIX
from airflow_workflow_engine.host.queries import QueryError
from airflow_workflow_engine.host.runs import split_run_key
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.plugins.ui import charts
from airflow_workflow_engine.plugins.ui.models import CostReport, CostRow, RunDetail, RunList
from airflow_workflow_engine.plugins.ui.reader import EngineReader, get_reader

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: Runs per page unless ``limit`` says otherwise, and the most one page may hold.
PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
STATUSES = [s.value for s in Status]
#: Characters of a run's input or output shown on its page (the JSON API has them whole).
JSON_CHARS = 50_000
#: The most runs a list may skip: far beyond any real list, and within every database's
#: integer range (a bigger number overflowed the driver and answered 503).
MAX_OFFSET = 1_000_000_000
#: Longest DAG id, DAG run id or workflow run id accepted (Airflow's own ID_LEN).
ID_LEN = 250


# -- who may read what -----------------------------------------------------------------------


class Access:
    """What the logged-in user may read: every DAG, or the DAGs the auth manager lists."""

    def __init__(self, user: BaseUser) -> None:
        self.user = user
        self.all_dags = get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, user=user
        )

    @cached_property
    def dag_ids(self) -> frozenset[str] | None:
        """``None`` for every DAG (and runs made outside Airflow), else the readable DAGs."""
        if self.all_dags:
            return None
        return frozenset(get_auth_manager().get_authorized_dag_ids(user=self.user, method="GET"))

    def check_run(self, dag_id: str | None) -> None:
        """Raises 403 unless the user may read the runs of ``dag_id`` (``None``: no DAG)."""
        if self.all_dags:
            return
        if dag_id is not None:
            from airflow.models.dag import DagModel

            details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
            if get_auth_manager().is_authorized_dag(
                method="GET", access_entity=DagAccessEntity.RUN, details=details, user=self.user
            ):
                return
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"You may not read the runs of DAG '{dag_id}'."
            )
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "This workflow run was not created by a DAG run; only users who may read every "
            "DAG may see it.",
        )


def _access(user: GetUserDep) -> Access:
    return Access(user)


#: Opens (once per process) the engine's reader. A route calls it after its parameters are
#: validated, so a bad parameter is a 422 even while the database is down.
OpenReader = Callable[[], EngineReader]


def _reader() -> OpenReader:
    return get_reader


AccessDep = Annotated[Access, Depends(_access)]
ReaderDep = Annotated[OpenReader, Depends(_reader)]


class RunFilter(BaseModel):
    """The query parameters of a list of runs."""

    dag_id: str | None = Field(None, max_length=ID_LEN, description="Only runs of this DAG.")
    status: str | None = Field(
        None, max_length=32, description=f"Only runs in this status: {STATUSES}."
    )
    limit: int = Field(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Runs per page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Runs to skip (newest first).")

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        name = value.strip().upper()
        if name not in STATUSES:
            raise ValueError(f"Unknown status {value!r}; use one of {', '.join(STATUSES)}.")
        return name


class CostFilter(BaseModel):
    """The query parameters of the AI spend report."""

    since: str | None = Field(
        None,
        max_length=64,
        description="Only calls from this date-time on (ISO 8601; a date alone is midnight "
        "in Airflow's default timezone).",
    )

    @field_validator("since")
    @classmethod
    def _readable_date(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        try:
            parse_when(value, airflow_timezone.parse)
        except QueryError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    def when(self) -> datetime | None:
        return None if self.since is None else parse_when(self.since, airflow_timezone.parse)


#: Days the costs page's chart can show.
CHART_DAYS = (7, 30, 90)
#: Runs in the costs page's "top runs" chart.
TOP_RUNS = 10


class ChartFilter(CostFilter):
    """The query parameters of the costs page: the report's, and its chart's. (One model:
    FastAPI reads one model of query parameters per route.)"""

    days: int = Field(30, description=f"UTC days of spend in the chart: {CHART_DAYS}.")
    by: Literal["model", "dag"] = Field("model", description="Stack the bars by model or DAG.")

    @field_validator("days")
    @classmethod
    def _known_range(cls, value: int) -> int:
        # (Not a Literal: a query string's "30" would not match the integer 30.)
        if value not in CHART_DAYS:
            raise ValueError(f"Input should be {', '.join(map(str, CHART_DAYS))} (days)")
        return value


RunFilterQuery = Annotated[RunFilter, Query()]
ChartFilterQuery = Annotated[ChartFilter, Query()]
CostFilterQuery = Annotated[CostFilter, Query()]
RunIdPath = Annotated[str, PathParam(max_length=ID_LEN, description="A workflow run id.")]
DagIdPath = Annotated[str, PathParam(max_length=ID_LEN, description="A DAG id.")]
DagRunIdPath = Annotated[str, PathParam(max_length=ID_LEN, description="A DAG run id.")]


# -- reading ---------------------------------------------------------------------------------


def _list_runs(reader: OpenReader, access: Access, filters: RunFilter) -> RunList:
    return reader().runs(
        dag_id=filters.dag_id or None,
        status=filters.status,
        limit=filters.limit,
        offset=filters.offset,
        dag_ids=access.dag_ids,
    )


def _with_budget(detail: RunDetail) -> RunDetail:
    """The run's detail with the per-run AI budget in force (``[workflow_engine]
    ai_run_max_cost``); a broken setting shows no budget here (tasks report it)."""
    from airflow_workflow_engine.hooks.llm_settings import configured_run_max_cost

    try:
        cap = configured_run_max_cost()
    except WorkflowEngineError:
        return detail
    return detail if cap is None else detail.model_copy(update={"budget": Decimal(repr(cap))})


def _run_by_id(open_reader: OpenReader, access: Access, workflow_run_id: str) -> RunDetail:
    reader = open_reader()
    run = reader.run(workflow_run_id)
    if run is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"Workflow run '{workflow_run_id}' does not exist."
        )
    access.check_run(split_run_key(run.idempotency_key)[0])
    return _with_budget(reader.detail(run))


def _run_by_dag_run(open_reader: OpenReader, access: Access, dag_id: str, run_id: str) -> RunDetail:
    access.check_run(dag_id)  # before saying whether the run exists
    reader = open_reader()
    run = reader.run_of_dag_run(dag_id, run_id)
    if run is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"DAG run '{dag_id}/{run_id}' has no workflow run in the engine: the DAG has no "
            "stage tasks, or none of them has started yet.",
        )
    return _with_budget(reader.detail(run))


def _costs(reader: OpenReader, access: Access, filters: CostFilter) -> CostReport:
    return reader().costs(since=filters.when(), dag_ids=access.dag_ids)


def _cost_charts(
    open_reader: OpenReader, access: Access, filters: CostFilter, chart: ChartFilter
) -> dict[str, Any]:
    """The costs page's charts: spend per UTC day stacked by model or DAG over the last
    ``chart.days`` days, and the runs that spent most (since ``filters.since``)."""
    reader = open_reader()
    today = datetime.now(timezone.utc).date()
    days = charts.day_range(today, chart.days)
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=timezone.utc)
    by = "model_key" if chart.by == "model" else "dag_id"
    spend = reader.spend_by_day(by, since=start, dag_ids=access.dag_ids)
    per_day = charts.stacked_bars(
        days, spend, label=f"AI spend per UTC day by {chart.by}, last {chart.days} days"
    )
    top = reader.top_runs(since=filters.when(), dag_ids=access.dag_ids, limit=TOP_RUNS)
    return {"per_day": per_day, "top_runs": top, "chart": chart}


def _timeline(run: RunDetail) -> charts.Chart:
    rows = [charts.GanttRow(s.stage_id, s.started_at, s.completed_at, s.status) for s in run.stages]
    return charts.gantt(rows, now=datetime.now(timezone.utc), label="Stage timeline")


def _stage_task_id(run: RunDetail, stage_id: str) -> str:
    """The Airflow task of a stage: the task its AI calls name, else the stage id inside the
    run's task group (a ``WorkflowTaskGroup``'s run), else the stage id."""
    for call in run.ai_calls:
        if call.stage_id == stage_id and call.task_id:
            return call.task_id
    group = (run.idempotency_key or "").split("/", 2)[2:]
    return f"{group[0]}.{stage_id}" if group else stage_id


def _csv(rows: list[list[Any]], filename: str) -> Response:
    """A CSV download; amounts are exact decimal strings, as in the JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([[_csv_value(v) for v in row] for row in rows])
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _csv_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


COST_COLUMNS = [
    "calls", "errors", "input_tokens", "output_tokens", "cached_tokens", "total_tokens",
    "cost", "unpriced_calls",
]  # fmt: skip


def _cost_csv_rows(report: CostReport) -> list[list[Any]]:
    """Every roll-up of the report in one table: ``dimension,key,<COST_COLUMNS>``."""
    rows: list[list[Any]] = [["dimension", "key", *COST_COLUMNS]]
    groups: list[tuple[str, list[CostRow]]] = [
        ("total", [report.total]),
        ("day", report.by_day),
        ("model", report.by_model),
        ("dag", report.by_dag),
    ]
    for dimension, found in groups:
        rows += [[dimension, r.key, *(getattr(r, c) for c in COST_COLUMNS)] for r in found]
    return rows


AI_CALL_COLUMNS = [
    "id", "created_at", "stage_id", "task_id", "attempt", "provider", "model_key", "model_id",
    "call_type", "input_tokens", "output_tokens", "cached_tokens", "total_tokens", "cost",
    "latency_ms", "status", "error",
]  # fmt: skip


# -- HTML --------------------------------------------------------------------------------------


def _airflow_root(request: Request) -> str:
    """The path Airflow's own pages are under (``""``, or the path of ``[api] base_url``)."""
    return str(request.scope.get("root_path", "")).removesuffix(URL_PREFIX)


def _path_for(request: Request, name: str, **params: Any) -> str:
    """The path of one of this app's routes. (Not ``request.url_for``: names are looked up
    from Airflow's app, which cannot see into this one.)"""
    own: FastAPI = request.app
    return str(request.scope.get("root_path", "")) + str(own.url_path_for(name, **params))


def _route_path(request: Request) -> str:
    path, root = request.scope["path"], str(request.scope.get("root_path", ""))
    return str(path[len(root) :] if root and path.startswith(root) else path)


def _wants_html(request: Request) -> bool:
    path = _route_path(request)
    return not (path == "/api" or path.startswith("/api/") or path.startswith("/static/"))


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _pretty(value: Any, limit: int = JSON_CHARS) -> str:
    text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    env = templates.env
    env.filters.update(
        money=lambda v: "-" if v is None else money_text(v),
        when=_when,
        duration=_duration,
        pretty=_pretty,
        number=lambda v: "-" if v is None else f"{v:,}",
    )
    return templates


class _Pages:
    """Renders the templates with what every page needs (links, the user)."""

    def __init__(self) -> None:
        self.templates = _templates()

    def render(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        user: BaseUser | None = None,
        **context: Any,
    ) -> HTMLResponse:
        root = _airflow_root(request)

        def link(name: str, query: dict[str, Any] | None = None, **params: Any) -> str:
            path = _path_for(request, name, **params)
            kept = {k: v for k, v in (query or {}).items() if v not in (None, "")}
            return f"{path}?{urlencode(kept)}" if kept else path

        def dag_run_url(dag_id: str, run_id: str) -> str:
            return f"{root}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"

        def task_url(dag_id: str, run_id: str, task_id: str) -> str:
            """Airflow 3's task instance page (its log is the page's first tab)."""
            return f"{dag_run_url(dag_id, run_id)}/tasks/{quote(task_id, safe='')}"

        return self.templates.TemplateResponse(
            request,
            template,
            {
                "link": link,
                "static": lambda file: _path_for(request, "static", path=file),
                "dag_url": lambda dag_id: f"{root}/dags/{quote(dag_id, safe='')}",
                "dag_run_url": dag_run_url,
                "task_url": task_url,
                "stage_task_id": _stage_task_id,
                "airflow_home": f"{root}/",
                "user_name": None if user is None else user.get_name(),
                "statuses": STATUSES,
                **context,
            },
            status_code=status_code,
        )

    def error(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        titles = {
            status.HTTP_403_FORBIDDEN: "Not allowed",
            status.HTTP_404_NOT_FOUND: "Not found",
            status.HTTP_422_UNPROCESSABLE_ENTITY: "Bad request",
            status.HTTP_500_INTERNAL_SERVER_ERROR: "Something went wrong",
            status.HTTP_503_SERVICE_UNAVAILABLE: "The workflow engine's database is unavailable",
        }
        return self.render(
            request,
            "error.html",
            status_code=status_code,
            title=titles.get(status_code, "Something went wrong"),
            message=message,
        )


# -- the app ---------------------------------------------------------------------------------


def _error_handlers(app: FastAPI, pages: _Pages) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not _wants_html(request):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            login = f"{_airflow_root(request)}/api/v2/auth/login"
            return RedirectResponse(f"{login}?{urlencode({'next': str(request.url)})}")
        return pages.error(request, exc.status_code, str(exc.detail))

    async def engine_error(request: Request, exc: Exception) -> Response:
        # The cause names the database (host, port, name, user): for the server log only.
        # Every logged-in user may call this API; they get what failed and an id to quote.
        cause = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        request_id = _logged(request, logging.WARNING, cause)
        return _failure(request, status.HTTP_503_SERVICE_UNAVAILABLE, _public(exc), request_id)

    async def unexpected(request: Request, exc: Exception) -> Response:
        request_id = _logged(request, logging.ERROR, "failed", exc)
        message = "The workflow engine's pages failed to answer."
        return _failure(request, status.HTTP_500_INTERNAL_SERVER_ERROR, message, request_id)

    def _logged(request: Request, level: int, what: str, exc: Exception | None = None) -> str:
        """Logs a failed request under a new request id; returns the id."""
        request_id = uuid.uuid4().hex[:16]
        where = f"{request.method} {_route_path(request)}"
        logger.log(
            level,
            "Workflow engine pages, request %s (%s): %s",
            request_id,
            where,
            what,
            exc_info=exc,
        )
        return request_id

    def _failure(request: Request, code: int, message: str, request_id: str) -> Response:
        detail = f"{message} Request id {request_id}: the api-server log has the details."
        headers = {"X-Request-ID": request_id}
        if not _wants_html(request):
            return JSONResponse({"detail": detail, "request_id": request_id}, code, headers)
        page = pages.error(request, code, detail)
        page.headers.update(headers)
        return page

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if not _wants_html(request):
            return JSONResponse({"detail": jsonable(_without_input(exc.errors()))}, 422)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}"
            for e in exc.errors()
        )
        return pages.error(request, status.HTTP_422_UNPROCESSABLE_ENTITY, problems)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(WorkflowEngineError, engine_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(Exception, unexpected)


def _public(exc: Exception) -> str:
    """What an API user is told about an engine failure: its kind, never its details."""
    if isinstance(exc, MigrationsNotAppliedError):
        return (
            "The workflow engine's tables are missing or out of date: an administrator must "
            "run `airflow db migrate`."
        )
    if isinstance(exc, DatabaseUnavailableError):
        return "The workflow engine's database is unavailable."
    if type(exc).__name__ == "EngineNotConfiguredError":
        return "The workflow engine's database is not configured (or configured wrongly)."
    return "The workflow engine failed to answer."


def _without_input(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the rejected value (which may be huge) or pydantic's URL."""
    return [{k: v for k, v in dict(e).items() if k not in ("input", "url", "ctx")} for e in errors]


def jsonable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(value)


def create_app() -> FastAPI:
    """The app Airflow mounts at ``/workflow-engine``."""
    app = FastAPI(
        title="Workflow engine",
        description="Workflow runs, stages and AI spend of the workflow engine.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pages = _Pages()
    _error_handlers(app, pages)
    _html_routes(app, pages)
    _api_routes(app)
    return app


def _html_routes(app: FastAPI, pages: _Pages) -> None:
    options: dict[str, Any] = {"response_class": HTMLResponse, "include_in_schema": False}

    @app.get("/", **options)
    def index(request: Request, user: GetUserDep) -> RedirectResponse:
        del user
        return RedirectResponse(_path_for(request, "runs_page"))

    @app.get("/runs", name="runs_page", **options)
    def runs_page(
        request: Request, access: AccessDep, reader: ReaderDep, filters: RunFilterQuery
    ) -> HTMLResponse:
        runs = _list_runs(reader, access, filters)
        return pages.render(request, "runs.html", user=access.user, section="runs", page=runs)

    @app.get("/runs/{workflow_run_id}", name="run_page", **options)
    def run_page(
        request: Request, workflow_run_id: RunIdPath, access: AccessDep, reader: ReaderDep
    ) -> HTMLResponse:
        run = _run_by_id(reader, access, workflow_run_id)
        return pages.render(
            request, "run.html", user=access.user, section="runs", run=run, timeline=_timeline(run)
        )

    @app.get("/dags/{dag_id}/runs/{run_id:path}", name="dag_run_page", **options)
    def dag_run_page(
        request: Request,
        dag_id: DagIdPath,
        run_id: DagRunIdPath,
        access: AccessDep,
        reader: ReaderDep,
    ) -> HTMLResponse:
        run = _run_by_dag_run(reader, access, dag_id, run_id)
        return pages.render(
            request, "run.html", user=access.user, section="runs", run=run, timeline=_timeline(run)
        )

    @app.get("/costs", name="costs_page", **options)
    def costs_page(
        request: Request, access: AccessDep, reader: ReaderDep, filters: ChartFilterQuery
    ) -> HTMLResponse:
        report = _costs(reader, access, filters)
        return pages.render(
            request,
            "costs.html",
            user=access.user,
            section="costs",
            report=report,
            since_text=filters.since or "",
            chart_days=CHART_DAYS,
            **_cost_charts(reader, access, filters, filters),
        )


def _api_routes(app: FastAPI) -> None:
    @app.get("/api/runs", response_model=RunList, tags=["Workflow engine"])
    def list_runs(access: AccessDep, reader: ReaderDep, filters: RunFilterQuery) -> RunList:
        """Workflow runs of the DAGs the user may read, newest first."""
        return _list_runs(reader, access, filters)

    @app.get("/api/runs/{workflow_run_id}", response_model=RunDetail, tags=["Workflow engine"])
    def get_run(workflow_run_id: RunIdPath, access: AccessDep, reader: ReaderDep) -> RunDetail:
        """One workflow run with its stages, annotations, AI calls and events."""
        return _run_by_id(reader, access, workflow_run_id)

    @app.get(
        "/api/dags/{dag_id}/runs/{run_id:path}",
        response_model=RunDetail,
        tags=["Workflow engine"],
    )
    def get_dag_run(
        dag_id: DagIdPath, run_id: DagRunIdPath, access: AccessDep, reader: ReaderDep
    ) -> RunDetail:
        """The workflow run of an Airflow DAG run."""
        return _run_by_dag_run(reader, access, dag_id, run_id)

    @app.get("/api/costs.csv", response_class=Response, tags=["Workflow engine"])
    def get_costs_csv(access: AccessDep, reader: ReaderDep, filters: CostFilterQuery) -> Response:
        """The AI spend report as CSV: one row per roll-up group
        (``dimension``: total, day, model or dag); costs are exact decimal strings."""
        return _csv(_cost_csv_rows(_costs(reader, access, filters)), "ai-costs.csv")

    @app.get(
        "/api/runs/{workflow_run_id}/ai_calls.csv",
        response_class=Response,
        tags=["Workflow engine"],
    )
    def get_ai_calls_csv(
        workflow_run_id: RunIdPath, access: AccessDep, reader: ReaderDep
    ) -> Response:
        """A workflow run's AI calls as CSV (the ledger's rows; costs exact decimal strings)."""
        run = _run_by_id(reader, access, workflow_run_id)
        rows: list[list[Any]] = [list(AI_CALL_COLUMNS)]
        rows += [[getattr(c, name) for name in AI_CALL_COLUMNS] for c in run.ai_calls]
        return _csv(rows, f"ai-calls-{workflow_run_id}.csv")

    @app.get("/api/costs", response_model=CostReport, tags=["Workflow engine"])
    def get_costs(access: AccessDep, reader: ReaderDep, filters: CostFilterQuery) -> CostReport:
        """AI spend by UTC day, model and DAG, and the total."""
        return _costs(reader, access, filters)
