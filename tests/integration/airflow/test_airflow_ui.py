"""The workflow engine's pages in Airflow's UI (``/workflow-engine``), its UI entries and the
"Workflow run" extra link of stage tasks.

In process: the plugin object (its FastAPI app and external views), the link's URL, and that
importing the plugin stays cheap.

Against a real Airflow: the hand-wired example DAG runs (``dag.test(use_executor=True)`` on
the session's Airflow, with mock models, so it leaves stages, annotations and ledger rows),
and a few workflow runs are created through the kernel outside Airflow (one named after a
DAG that is not the example's, one with no DAG at all). Then one ``airflow api-server --apps
core`` with the provider's plugin serves the pages and Airflow's REST API. Its auth manager is
Airflow's simple auth manager with two users: ``admin``, and ``limited``, a viewer who may
read only the example DAG (:data:`AUTH_MANAGER`, a subclass that answers ``is_authorized_dag``
for that user). Users log in for real (``POST /auth/token`` for the JSON API, the login form
in the browser); what the API returns is compared with the engine's own reads
(``SqlPersistence``, ``SqlLedger``). A headless Chromium (Debian's ``/usr/bin/chromium``)
clicks through the pages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_workflow_engine.kernel.status import Status
from tests.integration.airflow.fixtures import (
    AIRFLOW_MARKS,
    REPO,
    AirflowEnv,
    DagRunResult,
    airflow_env,
    free_port,
)

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

EXAMPLES = REPO / "dags_examples"
DAG_ID = "hand_wired_document"
DOCUMENT = {
    "title": "Release notes",
    "text": "The Airflow pipeline deploys code daily; the budget covers the model cost.",
}
PASSWORDS = {"admin": "admin-secret", "limited": "limited-secret"}
#: A DAG id that Airflow does not know: the kernel run named after it is hidden from `limited`.
OTHER_DAG = "ui_other_dag"
CHROMIUM = Path("/usr/bin/chromium")
RUN_BUDGET = "0.25"
PLUGIN_SHIM = "from airflow_workflow_engine.plugins.plugin import WorkflowEnginePlugin\n"

#: The api-server's auth manager: Airflow's simple auth manager, where the user ``limited``
#: may read the runs of the example DAG only (and no run that belongs to no DAG).
AUTH_MANAGER = f"""
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class OneDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        if user.username == "limited" and (details is None or details.id != {DAG_ID!r}):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
"""


# -- in process ------------------------------------------------------------------------------


def _usd(value: object) -> str:
    """How the UI's JSON carries an amount: the exact decimal as a plain string."""
    from airflow_workflow_engine.ai.ledger import money

    text = format(money(value).normalize(), "f")  # type: ignore[arg-type]
    assert re.fullmatch(r"\d+(\.\d+)?", text), text
    return text


def test_plugin_mounts_the_pages_and_adds_ui_entries() -> None:
    from airflow_workflow_engine.plugins import listeners
    from airflow_workflow_engine.plugins.plugin import WorkflowEnginePlugin
    from airflow_workflow_engine.plugins.ui import WorkflowEngineUI

    plugin = WorkflowEnginePlugin
    assert plugin.name == "workflow_engine"
    assert plugin.listeners == [listeners]
    [app] = plugin.fastapi_apps
    assert app["url_prefix"] == "/workflow-engine" and app["name"] == "Workflow engine"
    assert isinstance(app["app"], WorkflowEngineUI)
    views = {v["destination"]: v for v in plugin.external_views}
    assert views["nav"] == {
        "name": "Workflows",
        "href": "/workflow-engine/runs",
        "destination": "nav",
        "url_route": "workflow-runs",
        "nav_top_level": True,
        "icon": "/workflow-engine/static/icon.svg",
    }
    assert views["dag_run"]["name"] == "Workflow run"
    assert views["dag_run"]["href"] == "/workflow-engine/dags/{DAG_ID}/runs/{RUN_ID}"
    assert views["dag_run"]["url_route"] == "workflow-run"
    # Airflow's own response models accept them (what /api/v2/plugins serves).
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    for view in plugin.external_views:
        ExternalViewResponse.model_validate(view)
    # The templates and the stylesheet ship inside the package.
    from importlib.resources import files

    ui = files("airflow_workflow_engine.plugins.ui")
    for name in ("base.html", "runs.html", "run.html", "costs.html", "error.html"):
        assert (ui / "templates" / name).is_file(), name
    for name in ("ui.css", "ui.js", "theme.js", "icon.svg"):
        assert (ui / "static" / name).is_file(), name


def test_importing_the_plugin_stays_cheap() -> None:
    """Airflow imports plugins in every component: ours adds no FastAPI app, SQL models,
    model SDKs or boto3 to what Airflow itself loads, and needs no engine database."""
    code = """
import json, sys, time
import airflow.plugins_manager
before = set(sys.modules)
t = time.perf_counter()
import airflow_workflow_engine.plugins.plugin as p
elapsed = time.perf_counter() - t
print(json.dumps({"elapsed": elapsed, "new": sorted(set(sys.modules) - before),
                  "built": repr(p.WorkflowEnginePlugin.fastapi_apps[0]["app"])}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__WORKFLOW_ENGINE")}
    env.pop("AIRFLOW_CONN_WORKFLOW_ENGINE_DEFAULT", None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    new: list[str] = data["new"]
    heavy = ("fastapi", "starlette", "jinja2", "openai", "anthropic", "boto3", "botocore")
    assert not [m for m in new if m.split(".")[0] in heavy or m.startswith("google.genai")]
    ours = [m for m in new if m.startswith("airflow_workflow_engine.")]
    assert not [m for m in ours if m.startswith("airflow_workflow_engine.persistence")]
    assert not [m for m in ours if m.startswith("airflow_workflow_engine.ai")]
    assert "airflow_workflow_engine.plugins.ui.app" not in ours
    assert data["built"] == "WorkflowEngineUI(not built yet)"
    assert data["elapsed"] < 5.0, f"importing the plugin took {data['elapsed']:.2f}s"


def test_workflow_run_link_points_at_the_dag_runs_page(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.types import TaskInstanceKey  # type: ignore[attr-defined]

    from airflow_workflow_engine.operators import AsyncBatchStageOperator, StageOperator
    from airflow_workflow_engine.operators.links import (
        WorkflowRunLink,
        workflow_run_ui_url,
        workflow_run_url,
    )

    key = TaskInstanceKey(
        dag_id="docs", task_id="summarize", run_id="manual__2026-01-02T03:04:05+00:00"
    )
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/prefix/")
    link = WorkflowRunLink()
    assert link.name == "Workflow run" and link.xcom_key == "_link_WorkflowRunLink"
    # The page inside Airflow's UI: the DAG run's "Workflow run" tab.
    assert link.get_link(None, ti_key=key) == (  # type: ignore[arg-type]
        "https://airflow.example.com/prefix/dags/docs/runs/"
        "manual__2026-01-02T03:04:05+00:00/plugin/workflow-run"
    )

    class InGroup:
        workflow_group = "grp"

    # A WorkflowTaskGroup's stage: the "Workflows" view, opened at the group's run page.
    assert link.get_link(InGroup(), ti_key=key) == (  # type: ignore[arg-type]
        "https://airflow.example.com/prefix/plugin/workflow-runs/prefix/workflow-engine/dags/"
        "docs/runs/manual__2026-01-02T03:04:05+00:00/grp"
    )
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")  # then a path from the root (same origin)
    assert link.get_link(None, ti_key=key) == (  # type: ignore[arg-type]
        "/dags/docs/runs/manual__2026-01-02T03:04:05+00:00/plugin/workflow-run"
    )
    # The bare page (the frame's content).
    assert workflow_run_url("d", "r+1", "https://a.example/") == (
        "https://a.example/workflow-engine/dags/d/runs/r+1"
    )
    assert workflow_run_ui_url("d", "r+1", "https://a.example/") == (
        "https://a.example/dags/d/runs/r+1/plugin/workflow-run"
    )
    assert workflow_run_url("d", "a/b c", base_url="") == "/workflow-engine/dags/d/runs/a%2Fb%20c"
    # A WorkflowTaskGroup's run: the "Workflows" view, opened at the group's page.
    assert workflow_run_ui_url("d", "r", "https://a.example/p/", "grp") == (
        "https://a.example/p/plugin/workflow-runs/p/workflow-engine/dags/d/runs/r/grp"
    )
    for operator in (StageOperator, AsyncBatchStageOperator):
        assert [type(x) for x in operator.operator_extra_links] == [WorkflowRunLink]


def test_stage_budgets_come_from_the_runs_stage_config() -> None:
    from airflow_workflow_engine.plugins.ui.reader import _stage_budget

    config = {"a": {"max_cost": 0.5}, "b": {"max_cost": "0.0001"}, "c": {"max_cost": "lots"}}
    config |= {"d": {"max_cost": True}, "e": "not a dict", "f": {"model": "mock:x"}}
    assert _stage_budget(config, "a") == Decimal("0.5")
    assert _stage_budget(config, "b") == Decimal("0.0001")
    for stage_id in ("c", "d", "e", "f", "missing"):
        assert _stage_budget(config, stage_id) is None, stage_id
    assert _stage_budget(None, "a") is None


def test_reader_says_what_to_set_when_the_engine_is_not_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_workflow_engine.hooks.engine import EngineNotConfiguredError
    from airflow_workflow_engine.plugins.ui.reader import get_reader

    monkeypatch.delenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", raising=False)
    with pytest.raises(EngineNotConfiguredError) as exc:
        get_reader(conn_id=None)
    assert "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN" in str(exc.value)


# -- a real Airflow ----------------------------------------------------------------------------


@dataclasses.dataclass
class UI:
    """The api-server serving the pages, and what the test put in the engine."""

    base: str
    env: AirflowEnv
    dag_run: DagRunResult
    workflow_run_id: str
    other_run_id: str
    keyless_run_id: str
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            answer = self.request(
                "POST",
                "/auth/token",
                body={"username": user, "password": PASSWORDS[user]},
                user=None,
            )
            self.tokens[user] = str(answer[1]["access_token"])
        return self.tokens[user]

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        user: str | None = "admin",
        token: str | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """``(status, JSON body or text, headers)``; redirects are not followed."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token is None and user is not None:
            token = self.token(user)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=60) as response:
                return response.status, _body(response.read()), dict(response.headers)
        except urllib.error.HTTPError as err:
            return err.code, _body(err.read()), dict(err.headers)

    def get(self, path: str, user: str = "admin") -> Any:
        code, body, _ = self.request("GET", path, user=user)
        assert code == 200, (path, code, body)
        return body

    def store(self) -> Any:
        return self.env.store()

    def ledger(self) -> Any:
        from airflow_workflow_engine.ai.sql_ledger import SqlLedger

        return SqlLedger(self.env.engine_url)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _start_api_server(env: AirflowEnv, root: Path) -> AirflowEnv:
    """An ``airflow api-server`` of the session's Airflow with the plugin and the two users
    (started, not yet waited for); ``stop()`` stops it."""
    (root / "plugins").mkdir()
    (root / "lib").mkdir()
    (root / "lib" / "wfe_ui_auth.py").write_text(AUTH_MANAGER)
    from importlib.metadata import entry_points

    if not any(
        ep.value.startswith("airflow_workflow_engine.plugins")
        for ep in entry_points(group="airflow.plugins")
    ):
        (root / "plugins" / "workflow_engine_plugin.py").write_text(PLUGIN_SHIM)
    (root / "passwords.json").write_text(json.dumps(PASSWORDS))
    port = free_port()
    server_env = {
        **env.env,
        "AIRFLOW__CORE__AUTH_MANAGER": "wfe_ui_auth.OneDagAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,limited:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        # The per-run AI budget the run page shows against the run's spend.
        "AIRFLOW__WORKFLOW_ENGINE__AI_RUN_MAX_COST": RUN_BUDGET,
        "PYTHONPATH": os.pathsep.join([str(root / "lib"), env.env["PYTHONPATH"]]),
    }
    # Its own AirflowEnv (log and process in `root`) over the session's database and engine.
    server = AirflowEnv(home=root, env=server_env, api_port=port)
    server._spawn("api-server", ["api-server", "--apps", "all", "-H", "127.0.0.1", "-p", str(port)])
    return server


def _kernel_runs(env: AirflowEnv) -> tuple[str, str]:
    """Two workflow runs made through the kernel, outside Airflow: one named after a DAG
    Airflow does not know, one with no DAG at all."""
    from airflow_workflow_engine.hooks.engine import EngineSettings, kernel_for
    from airflow_workflow_engine.kernel.commands import RunCreate
    from tests.integration.airflow import workflows as wf

    settings = EngineSettings(sql_url=env.engine_url, blob_store=str(env.blob_root))
    kernel = kernel_for(settings, [wf.linear])
    other = kernel.dispatch(
        RunCreate(
            workflow_id="it-linear",
            input={"name": "ui"},
            idempotency_key=f"{OTHER_DAG}/manual__{time.time_ns()}",
        )
    )
    keyless = kernel.dispatch(RunCreate(workflow_id="it-linear", input={"name": "no dag"}))
    return other.workflow_run_id, keyless.workflow_run_id


@pytest.fixture(scope="module")
def ui(airflow_env: AirflowEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    server = _start_api_server(airflow_env, tmp_path_factory.mktemp("wfe-ui"))
    try:  # the server starts while the DAG runs
        # The task processes compute the extra link from [api] base_url: this api-server's.
        examples = dataclasses.replace(
            airflow_env,
            env={
                **airflow_env.env,
                "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
                "AIRFLOW__API__BASE_URL": server.env["AIRFLOW__API__BASE_URL"],
            },
        )
        result = examples.run_dag(str(EXAMPLES / "hand_wired_dag.py"), DAG_ID, DOCUMENT)
        assert result.state == "success", result.log[-4000:]
        run = airflow_env.kernel_run(result, DAG_ID)
        assert run is not None and run.status == Status.COMPLETED
        other, keyless = _kernel_runs(airflow_env)
        server._wait_for_api(timeout=150)
        yield UI(f"http://127.0.0.1:{server.api_port}", airflow_env, result, run.id, other, keyless)
    finally:
        server.stop()


# -- authentication and authorisation ------------------------------------------------------


def test_anonymous_requests_are_refused(ui: UI) -> None:
    for path in ("/workflow-engine/api/runs", f"/workflow-engine/api/runs/{ui.workflow_run_id}"):
        code, body, _ = ui.request("GET", path, user=None)
        assert code == 401 and body == {"detail": "Not authenticated"}, (path, code, body)
    code, body, _ = ui.request("GET", "/workflow-engine/api/costs", token="not-a-jwt")
    assert code == 403 and body == {"detail": "Invalid JWT token"}
    # A page sends the browser to Airflow's login, which comes back to the page.
    code, _, headers = ui.request("GET", "/workflow-engine/runs?status=COMPLETED", user=None)
    assert code == 307
    location = urllib.parse.urlsplit(headers["location"])
    assert location.path == "/api/v2/auth/login"
    assert urllib.parse.parse_qs(location.query)["next"] == [
        f"{ui.base}/workflow-engine/runs?status=COMPLETED"
    ]


def test_users_see_only_the_runs_of_dags_they_may_read(ui: UI) -> None:
    admin = {r["workflow_run_id"] for r in ui.get("/workflow-engine/api/runs?limit=200")["runs"]}
    assert {ui.workflow_run_id, ui.other_run_id, ui.keyless_run_id} <= admin
    page = ui.get("/workflow-engine/api/runs?limit=200", user="limited")
    assert {r["dag_id"] for r in page["runs"]} == {DAG_ID}
    assert ui.workflow_run_id in {r["workflow_run_id"] for r in page["runs"]}
    assert page["total"] == len(page["runs"])
    code, body, _ = ui.request(
        "GET", f"/workflow-engine/api/runs/{ui.other_run_id}", user="limited"
    )
    assert code == 403 and body == {"detail": f"You may not read the runs of DAG '{OTHER_DAG}'."}
    code, body, _ = ui.request(
        "GET", f"/workflow-engine/api/runs/{ui.keyless_run_id}", user="limited"
    )
    assert code == 403 and "was not created by a DAG run" in body["detail"]
    assert ui.get(f"/workflow-engine/api/runs/{ui.keyless_run_id}")["dag_id"] is None
    costs = ui.get("/workflow-engine/api/costs", user="limited")
    assert [r["key"] for r in costs["by_dag"]] == [DAG_ID]


# -- what the JSON API returns is what the engine holds -------------------------------------


def test_runs_api_lists_the_engines_runs_newest_first(ui: UI) -> None:
    with ui.store() as store:
        run = store.get_run(ui.workflow_run_id)
        ours = [
            r
            for r in store.list_runs(limit=10_000)
            if r.idempotency_key == f"{DAG_ID}/{ui.dag_run.run_id}"
        ]
    assert [r.id for r in ours] == [ui.workflow_run_id]
    page = ui.get(f"/workflow-engine/api/runs?dag_id={DAG_ID}&status=COMPLETED")
    listed = {r["workflow_run_id"]: r for r in page["runs"]}
    row = listed[ui.workflow_run_id]
    assert row == {
        "workflow_run_id": run.id,
        "workflow_id": DAG_ID,
        "workflow_name": run.workflow_name,
        "dag_id": DAG_ID,
        "dag_run_id": ui.dag_run.run_id,
        "status": "COMPLETED",
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "duration_seconds": round((run.completed_at - run.started_at).total_seconds(), 3),
        "total_cost": _usd(run.total_cost),
        "total_tokens": run.total_tokens,
    }
    assert run.total_tokens > 0
    from datetime import datetime

    assert datetime.fromisoformat(row["completed_at"]) == run.completed_at
    assert page["dag_id"] == DAG_ID and page["status"] == "COMPLETED"
    # Newest first, and pages add up.
    everything = ui.get("/workflow-engine/api/runs?limit=200")
    created = [r["created_at"] for r in everything["runs"]]
    assert created == sorted(created, reverse=True) and everything["total"] == len(created)
    first, second = (ui.get(f"/workflow-engine/api/runs?limit=1&offset={i}") for i in (0, 1))
    assert [first["runs"][0], second["runs"][0]] == everything["runs"][:2]
    assert first["total"] == everything["total"]
    code, body, _ = ui.request("GET", "/workflow-engine/api/runs?status=DONE")
    assert code == 422 and body["detail"][0]["loc"] == ["query", "status"]
    assert "Unknown status 'DONE'" in body["detail"][0]["msg"]
    code, _, _ = ui.request("GET", "/workflow-engine/api/runs?limit=0")
    assert code == 422
    # A number past any database's integer range is refused, not sent to the database.
    code, body, _ = ui.request("GET", "/workflow-engine/api/runs?offset=99999999999999999999999")
    assert code == 422 and body["detail"][0]["loc"] == ["query", "offset"], body
    last = ui.get("/workflow-engine/api/runs?offset=1000000000")
    assert last["runs"] == [] and last["total"] == everything["total"]


def test_run_api_returns_stages_annotations_ledger_and_events(ui: UI) -> None:
    detail = ui.get(f"/workflow-engine/api/runs/{ui.workflow_run_id}")
    by_dag_run = ui.get(f"/workflow-engine/api/dags/{DAG_ID}/runs/{_q(ui.dag_run.run_id)}")
    assert by_dag_run == detail
    with ui.store() as store:
        run = store.get_run(ui.workflow_run_id)
        stages = store.list_stages(run.id)
        notes = store.list_annotations(run.id)
        events = store.list_events(run.id)
    ledger = ui.ledger()
    try:
        calls = ledger.entries(run.id)
    finally:
        ledger.close()
    assert detail["status"] == "COMPLETED" and detail["error"] is None
    # The per-run budget in force on the api-server, exact like every amount.
    assert detail["budget"] == RUN_BUDGET
    assert [s["budget"] for s in detail["stages"]] == [None] * len(stages)
    assert detail["input"] == run.input and detail["output"] == run.output
    assert detail["output"]["classify"]["category"] == "engineering"
    assert [
        (
            s["stage_id"],
            s["execution_group"],
            s["status"],
            s["attempt"],
            s["ai_cost"],
            s["ai_tokens"],
        )
        for s in detail["stages"]
    ] == [
        (
            s.stage_id,
            s.execution_group,
            s.status.value,
            s.attempt,
            None if s.metrics.get("ai_cost") is None else _usd(s.metrics["ai_cost"]),
            s.metrics.get("ai_tokens"),
        )
        for s in stages
    ]
    assert {s["stage_id"] for s in detail["stages"]} == {"extract", "summarize", "classify"}
    assert all(s["output_preview"] for s in detail["stages"])
    assert [(a["key"], a["value"], a["actor"], a["stage_id"]) for a in detail["annotations"]] == [
        (a.key, a.value, f"{a.actor.kind}:{a.actor.id}", a.stage_id) for a in notes
    ]
    assert "decision.outcome" in {a["key"] for a in detail["annotations"]}
    assert [
        (c["id"], c["model_key"], c["task_id"], c["attempt"], c["input_tokens"], c["output_tokens"])
        for c in detail["ai_calls"]
    ] == [(c.id, c.model_key, c.task_id, c.attempt, c.input_tokens, c.output_tokens) for c in calls]
    assert {c["model_key"] for c in detail["ai_calls"]} == {"mock:summarizer", "mock:classifier"}
    assert all("prompt" not in c and "response" not in c for c in detail["ai_calls"])
    assert detail["ai_calls_cost"] == _usd(
        sum((c.cost for c in calls if c.cost is not None), start=0)
    )
    # Money is exact in JSON: decimal strings, as the ledger holds them, never floats.
    assert [c["cost"] for c in detail["ai_calls"]] == [
        None if c.cost is None else _usd(c.cost) for c in calls
    ]
    assert [(e["sequence"], e["type"]) for e in detail["events"]] == [
        (e.sequence, e.type) for e in events
    ]
    assert "workflow:completed" in {e["type"] for e in detail["events"]}


def test_unknown_runs_are_404_with_a_clear_message(ui: UI) -> None:
    code, body, _ = ui.request("GET", "/workflow-engine/api/runs/nope")
    assert code == 404 and body == {"detail": "Workflow run 'nope' does not exist."}
    code, body, _ = ui.request("GET", f"/workflow-engine/api/dags/{DAG_ID}/runs/manual__nope")
    assert code == 404
    assert body["detail"].startswith(
        f"DAG run '{DAG_ID}/manual__nope' has no workflow run in the engine"
    )
    code, body, _ = ui.request("GET", "/workflow-engine/runs/nope")
    assert code == 404 and "Workflow run &#39;nope&#39; does not exist." in body


def test_costs_api_rolls_up_the_ledger(ui: UI) -> None:
    report = ui.get("/workflow-engine/api/costs")
    ledger = ui.ledger()
    try:
        by_model = {r.group["model_key"]: r for r in ledger.rollup(("model_key",))}
        by_dag = {r.group["dag_id"]: r for r in ledger.rollup(("dag_id",))}
        by_day = {r.group["day"].isoformat(): r for r in ledger.rollup(("day",))}
        [total] = ledger.rollup(())
    finally:
        ledger.close()
    for rows, expected in (
        (report["by_model"], by_model),
        (report["by_dag"], by_dag),
        (report["by_day"], by_day),
    ):
        assert {r["key"]: (r["calls"], r["total_tokens"]) for r in rows} == {
            k: (v.calls, v.total_tokens) for k, v in expected.items()
        }
        assert {r["key"]: r["cost"] for r in rows} == {k: _usd(v.cost) for k, v in expected.items()}
    assert {"mock:summarizer", "mock:classifier"} <= set(by_model)
    assert report["total"]["calls"] == total.calls
    assert report["total"]["cost"] == _usd(total.cost)
    assert [r["key"] for r in report["by_day"]] == sorted(by_day, reverse=True)
    assert ui.get("/workflow-engine/api/costs?since=2999-01-01")["total"]["calls"] == 0
    code, body, _ = ui.request("GET", "/workflow-engine/api/costs?since=yesterday-ish")
    assert code == 422 and body["detail"][0]["loc"] == ["query", "since"]
    assert "Cannot read 'yesterday-ish'" in body["detail"][0]["msg"]


def _csv(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def test_csv_exports_carry_exact_decimals(ui: UI) -> None:
    code, text, headers = ui.request("GET", "/workflow-engine/api/costs.csv")
    assert code == 200, text
    assert headers["content-type"].startswith("text/csv")
    assert 'filename="ai-costs.csv"' in headers["content-disposition"]
    report = ui.get("/workflow-engine/api/costs")
    rows = _csv(text)
    # The same roll-ups as the JSON, with the same exact decimal strings.
    for dimension, expected in (
        ("total", [report["total"]]),
        ("day", report["by_day"]),
        ("model", report["by_model"]),
        ("dag", report["by_dag"]),
    ):
        got = [r for r in rows if r["dimension"] == dimension]
        assert [(r["key"], r["calls"], r["cost"]) for r in got] == [
            (e["key"] or "", str(e["calls"]), e["cost"]) for e in expected
        ], dimension
    assert all(re.fullmatch(r"\d+(\.\d+)?", r["cost"]) for r in rows)
    code, text, _ = ui.request("GET", "/workflow-engine/api/costs.csv?since=2999-01-01")
    assert code == 200 and [r["calls"] for r in _csv(text)] == ["0"]

    path = f"/workflow-engine/api/runs/{ui.workflow_run_id}/ai_calls.csv"
    code, text, headers = ui.request("GET", path)
    assert code == 200, text
    ledger = ui.ledger()
    try:
        calls = ledger.entries(ui.workflow_run_id)
    finally:
        ledger.close()
    assert [(r["id"], r["model_key"], r["input_tokens"], r["cost"]) for r in _csv(text)] == [
        (c.id, c.model_key, str(c.input_tokens), "" if c.cost is None else _usd(c.cost))
        for c in calls
    ]
    # The same permissions as the JSON API.
    code, _, _ = ui.request("GET", path, user="limited")
    assert code == 200
    other = f"/workflow-engine/api/runs/{ui.other_run_id}/ai_calls.csv"
    code, body, _ = ui.request("GET", other, user="limited")
    assert code == 403, body
    code, _, _ = ui.request("GET", "/workflow-engine/api/runs/nope/ai_calls.csv")
    assert code == 404
    code, body, _ = ui.request("GET", "/workflow-engine/api/costs.csv", user=None)
    assert code == 401


def test_stage_tasks_link_to_the_workflow_run_page(ui: UI) -> None:
    run_id = ui.dag_run.run_id
    links = ui.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}/taskInstances/summarize/links")
    from airflow_workflow_engine.operators.links import workflow_run_ui_url, workflow_run_url

    # The DAG run's "Workflow run" tab in Airflow's UI, at the api-server's [api] base_url
    # (as the task process read it).
    expected = workflow_run_ui_url(DAG_ID, run_id, base_url=ui.base)
    assert links["extra_links"] == {"Workflow run": expected}
    assert expected == f"{ui.base}/dags/{DAG_ID}/runs/{run_id}/plugin/workflow-run"
    # The tab shows the page of this DAG run.
    path = urllib.parse.urlsplit(workflow_run_url(DAG_ID, run_id, base_url=ui.base)).path
    code, page, _ = ui.request("GET", path)
    assert code == 200 and ui.workflow_run_id in page
    # Airflow's plugin listing shows the pages and the UI entries.
    plugins = ui.get("/api/v2/plugins")["plugins"]
    [ours] = [p for p in plugins if p["name"] == "workflow_engine"]
    assert ours["fastapi_apps"][0]["url_prefix"] == "/workflow-engine"
    assert {v["url_route"] for v in ours["external_views"]} == {"workflow-runs", "workflow-run"}


# -- in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium); CI must run this test")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args
        )
        try:
            yield browser
        finally:
            browser.close()


#: Where the browser test writes its screenshots (ignored by git; docs/img has copies).
SHOTS = REPO / "test-output" / "ui"


def test_pages_in_a_browser(ui: UI, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from airflow_workflow_engine.cli._common import money_text

    with ui.store() as store:
        run = store.get_run(ui.workflow_run_id)
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(base_url=ui.base, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)

    def shot(name: str) -> None:
        page.wait_for_timeout(300)  # let Airflow's UI settle (fonts, transitions)
        page.screenshot(path=str(SHOTS / f"{name}.png"))

    def theme_of(frame: Any) -> Any:
        return frame.locator("html")

    try:
        # Airflow sends us to its login form; log in as the simple auth manager asks.
        page.goto("/")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(PASSWORDS["admin"])
        page.get_by_role("button", name="Sign in").click()
        # The navigation entry ("Workflows", whole) opens the runs page inside Airflow's UI.
        nav = page.get_by_role("link", name="Workflows", exact=True)
        expect(nav).to_be_visible()
        page.evaluate("window.localStorage.setItem('theme', 'light')")
        nav.click()
        # Airflow's UI keeps the page shown in the frame in its own address.
        page.wait_for_url(lambda url: url.startswith(f"{ui.base}/plugin/workflow-runs"))
        frame = page.frame_locator("iframe[title='Workflows']")
        expect(frame.locator("#runs")).to_contain_text(ui.workflow_run_id)
        # One look: no second header inside Airflow's frame, light tabs, Airflow's font.
        expect(frame.locator("header")).to_have_count(0)
        expect(frame.locator("nav.tabs a")).to_have_text(["Runs", "AI costs"])
        font = frame.locator("body").evaluate("b => getComputedStyle(b).fontFamily")
        assert font.startswith("Inter"), font
        expect(theme_of(frame)).to_have_attribute("data-theme", "light")
        shot("runs-light")

        # Airflow's dark mode (next-themes: localStorage "theme", class on <html>).
        def open_workflows(mode: str) -> Any:
            page.evaluate(f"window.localStorage.setItem('theme', '{mode}')")
            page.goto("/")
            page.get_by_role("link", name="Workflows", exact=True).click()
            frame = page.frame_locator("iframe[title='Workflows']")
            expect(frame.locator("#runs")).to_contain_text(ui.workflow_run_id)
            return frame

        frame = open_workflows("dark")
        expect(theme_of(frame)).to_have_attribute("data-theme", "dark")
        background = frame.locator("body").evaluate("b => getComputedStyle(b).backgroundColor")
        assert background == "rgb(0, 0, 0)", background
        shot("runs-dark")
        # Toggling Airflow's theme repaints the frame at once (it watches Airflow's <html>).
        page.evaluate("document.documentElement.classList.replace('dark', 'light')")
        expect(theme_of(frame)).to_have_attribute("data-theme", "light")
        page.evaluate("document.documentElement.classList.replace('light', 'dark')")
        expect(theme_of(frame)).to_have_attribute("data-theme", "dark")
        frame = open_workflows("light")
        expect(theme_of(frame)).to_have_attribute("data-theme", "light")

        # The costs tab: spend per day (stacked by model, then by DAG) and the top runs.
        frame.get_by_role("link", name="AI costs").click()
        chart = frame.locator("#spend-chart")
        expect(chart.locator("rect").first).to_be_visible()
        for model in ("mock:summarizer", "mock:classifier"):
            expect(frame.locator("#spend-legend")).to_contain_text(model)
        expect(frame.locator("#top-runs")).to_contain_text(ui.workflow_run_id)
        expect(frame.locator("#by-dag")).to_contain_text(DAG_ID)
        shot("costs-light")
        frame.get_by_role("link", name="By DAG").click()
        expect(frame.locator("#spend-legend")).to_contain_text(DAG_ID)
        frame.get_by_role("link", name="7 days").click()
        expect(frame.locator("#spend-chart text[text-anchor='middle']")).to_have_count(7)
        expect(frame.get_by_role("link", name="7 days")).to_have_attribute("aria-current", "true")
        # Airflow's UI keeps the frame's page in its own URL.
        page.wait_for_url(lambda url: "/plugin/workflow-runs/workflow-engine/costs" in url)

        # A link to Airflow's own page of the DAG run opens in Airflow's page, not the frame.
        frame.get_by_role("link", name="Runs").click()
        row = frame.locator("#runs tbody tr", has_text=ui.workflow_run_id)
        row.locator("a[data-airflow]").click()
        dag_run_page = f"{ui.base}/dags/{DAG_ID}/runs/{ui.dag_run.run_id}"
        page.wait_for_url(lambda url: urllib.parse.unquote(url) == dag_run_page)
        # The DAG run's "Workflow run" tab shows this run's page with its timeline.
        page.get_by_role("link", name="Workflow run", exact=True).click()
        tab_page = f"{dag_run_page}/plugin/workflow-run"
        page.wait_for_url(lambda url: urllib.parse.unquote(url) == tab_page)
        tab = page.frame_locator("iframe[title='Workflow run']")
        expect(tab.locator("#stages")).to_contain_text("summarize")
        expect(tab.locator("h1")).to_contain_text("COMPLETED")
        expect(tab.locator("#timeline-chart rect.bar")).to_have_count(3)
        shot("run-tab-light")

        # Every stage row links to its Airflow task instance and log.
        stage = tab.locator("#stages tbody tr", has_text="summarize")
        task_page = f"{dag_run_page}/tasks/summarize"
        expect(stage.locator("a[data-log]")).to_have_attribute(
            "href", re.compile(re.escape("/tasks/summarize") + "$")
        )
        stage.locator("a[data-task]").click()
        page.wait_for_url(lambda url: urllib.parse.unquote(url) == f"{task_page}/details")
        # ... and each stage row's log link opens that task's log in Airflow.
        page.go_back()
        tab = page.frame_locator("iframe[title='Workflow run']")
        for stage_id in ("extract", "summarize", "classify"):
            row = tab.locator("#stages tbody tr", has_text=stage_id)
            task_href = urllib.parse.unquote(row.locator("a[data-task]").get_attribute("href"))
            log_href = urllib.parse.unquote(row.locator("a[data-log]").get_attribute("href"))
            task_path = urllib.parse.urlsplit(f"{dag_run_page}/tasks/{stage_id}").path
            assert (task_href, log_href) == (f"{task_path}/details", task_path), stage_id
        tab.locator("#stages tbody tr", has_text="classify").locator("a[data-log]").click()
        # (the task instance's page without a tab path opens on its log)
        page.wait_for_url(lambda url: urllib.parse.unquote(url) == f"{dag_run_page}/tasks/classify")

        # The task's "Workflow run" extra link opens the page inside Airflow's UI: the DAG
        # run's tab, with Airflow's navigation around it and this run in the frame.
        page.goto(f"{task_page}/details")
        page.get_by_role("link", name="Workflow run", exact=True).first.click()
        page.wait_for_url(lambda url: urllib.parse.unquote(url) == tab_page)
        expect(page.get_by_role("link", name="Workflows", exact=True)).to_be_visible()
        tab = page.frame_locator("iframe[title='Workflow run']")
        expect(tab.locator("#run-status")).to_have_text("COMPLETED")
        expect(tab.locator("body")).to_contain_text(ui.workflow_run_id)
        shot("run-extra-link-light")

        # The pages on their own: the list, then a run.
        page.goto("/workflow-engine/runs")
        row = page.locator("#runs tbody tr", has_text=ui.workflow_run_id)
        expect(row.locator(".badge")).to_have_text("COMPLETED")
        row.locator(f"a[href$='/workflow-engine/runs/{ui.workflow_run_id}']").click()
        expect(page).to_have_url(f"{ui.base}/workflow-engine/runs/{ui.workflow_run_id}")
        stages = page.locator("#stages tbody tr")
        expect(stages).to_have_count(3)
        for stage_id in ("extract", "summarize", "classify"):
            expect(page.locator("#stages")).to_contain_text(stage_id)
            expect(page.locator("#timeline-chart")).to_contain_text(stage_id)
        bars = page.locator("#timeline-chart rect.bar.COMPLETED")
        expect(bars).to_have_count(3)
        expect(page.locator("#annotations")).to_contain_text("decision.outcome")
        expect(page.locator("#annotations")).to_contain_text('"engineering"')
        expect(page.locator("#run-cost")).to_contain_text(money_text(run.total_cost))
        expect(page.locator("#ai-total")).to_contain_text(money_text(run.total_cost))
        budget_text = f"of {money_text(Decimal(RUN_BUDGET))} per run"
        expect(page.locator("#run-budget")).to_contain_text(budget_text)
        expect(page.locator("#events")).to_contain_text("workflow:completed")
        expect(page.locator("#ai-calls-csv")).to_have_attribute(
            "href", f"/workflow-engine/api/runs/{ui.workflow_run_id}/ai_calls.csv"
        )
        page.goto(f"/workflow-engine/runs/{ui.workflow_run_id}?theme=dark")
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        page.screenshot(path=str(SHOTS / "run-dark.png"), full_page=True)

        # The costs page.
        page.goto("/workflow-engine/runs")
        page.get_by_role("link", name="AI costs").click()
        for model in ("mock:summarizer", "mock:classifier"):
            expect(page.locator("#by-model")).to_contain_text(model)
        expect(page.locator("#by-dag")).to_contain_text(DAG_ID)
        expect(page.locator("#costs-csv")).to_have_attribute(
            "href", "/workflow-engine/api/costs.csv"
        )
        page.goto("/workflow-engine/costs?theme=dark")
        expect(page.locator("#spend-chart rect").first).to_be_visible()
        page.screenshot(path=str(SHOTS / "costs-dark.png"), full_page=True)
    except BaseException:
        failure = tmp_path / "failure.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(failure), full_page=True)
        print(f"screenshot: {failure}")
        raise
    finally:
        context.close()
