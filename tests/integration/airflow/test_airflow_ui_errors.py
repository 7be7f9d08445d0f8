"""The UI's API and pages when the request is bad or the engine's database is down, on a real
``airflow api-server`` (the session's Airflow, see ``fixtures.py``) with real logins.

The engine's database of this api-server is a PostgreSQL URL with nothing listening: every
request that reaches the database fails. Users must see what failed and a request id, never
the database's host, port, name or user (any logged-in user may call the API); the api-server
log has the details under that id. Bad parameters are refused (422, naming the parameter)
before the database is touched.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.airflow.fixtures import AIRFLOW_MARKS, AirflowEnv, airflow_env, free_port
from tests.integration.airflow.test_airflow_ui import UI, _start_api_server

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

SECRET_USER = "wfe_secret_user"
SECRET_DB = "wfe_secret_db"


@dataclasses.dataclass
class DownUI:
    client: UI
    log: Path
    port: int


@pytest.fixture(scope="module")
def down(airflow_env: AirflowEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DownUI]:
    port = free_port()  # nothing listens there
    url = f"postgresql://{SECRET_USER}:pw@127.0.0.1:{port}/{SECRET_DB}?connect_timeout=3"
    broken = dataclasses.replace(
        airflow_env,
        env={**airflow_env.env, "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN": url},
    )
    root = tmp_path_factory.mktemp("wfe-ui-down")
    server = _start_api_server(broken, root)
    try:
        server._wait_for_api(timeout=150)
        base = f"http://127.0.0.1:{server.api_port}"
        client = UI(base, broken, None, "", "", "")  # type: ignore[arg-type]
        yield DownUI(client, root / "api-server.log", port)
    finally:
        server.stop()


def _leaks(body: Any, port: int) -> list[str]:
    text = str(body)
    return [s for s in (SECRET_USER, SECRET_DB, str(port), "127.0.0.1") if s in text]


BAD_PARAMETERS = [
    ("/workflow-engine/api/runs?offset=99999999999999999999999", "offset"),
    ("/workflow-engine/api/runs?offset=-1", "offset"),
    ("/workflow-engine/api/runs?limit=100000", "limit"),
    ("/workflow-engine/api/runs?limit=abc", "limit"),
    ("/workflow-engine/api/runs?status=DONE", "status"),
    (f"/workflow-engine/api/runs?dag_id={'d' * 300}", "dag_id"),
    ("/workflow-engine/api/costs?since=yesterday-ish", "since"),
    (f"/workflow-engine/api/costs?since={'2026' * 30}", "since"),
    (f"/workflow-engine/api/runs/{'r' * 300}", "workflow_run_id"),
    (f"/workflow-engine/api/dags/{'d' * 300}/runs/x", "dag_id"),
]


def test_bad_parameters_are_422_naming_the_parameter(down: DownUI) -> None:
    for path, name in BAD_PARAMETERS:
        code, body, _ = down.client.request("GET", path)
        assert code == 422, (path, code, body)
        [error] = body["detail"]
        assert error["loc"][-1] == name, (path, body)
        assert error["msg"], body
    code, body, _ = down.client.request("GET", "/workflow-engine/api/runs?status=DONE")
    assert "Unknown status 'DONE'" in body["detail"][0]["msg"]
    code, body, _ = down.client.request("GET", "/workflow-engine/api/costs?since=yesterday-ish")
    assert "Cannot read 'yesterday-ish'" in body["detail"][0]["msg"]
    # A page says the same, in HTML.
    code, page, _ = down.client.request("GET", "/workflow-engine/runs?offset=99999999999999999999")
    assert code == 422 and "offset" in page and "Bad request" in page
    # The costs page's chart takes 7, 30 or 90 days, stacked by model or DAG.
    for query, name in (("days=5", "days"), ("by=topic", "by")):
        code, page, _ = down.client.request("GET", f"/workflow-engine/costs?{query}")
        assert code == 422 and "Bad request" in page and f"{name}:" in page, (query, page)
    # The CSV exports check their parameters too.
    code, body, _ = down.client.request("GET", "/workflow-engine/api/costs.csv?since=never")
    assert code == 422 and body["detail"][0]["loc"] == ["query", "since"]
    code, body, _ = down.client.request(
        "GET", f"/workflow-engine/api/runs/{'r' * 300}/ai_calls.csv"
    )
    assert code == 422 and body["detail"][0]["loc"] == ["path", "workflow_run_id"]


def test_database_errors_hide_connection_details(down: DownUI) -> None:
    paths = [
        "/workflow-engine/api/runs",
        "/workflow-engine/api/runs?offset=10",
        "/workflow-engine/api/runs/abc",
        "/workflow-engine/api/dags/d/runs/r",
        "/workflow-engine/api/costs",
    ]
    ids = []
    for path in paths:
        code, body, headers = down.client.request("GET", path)
        assert code == 503, (path, code, body)
        assert not _leaks(body, down.port), (path, body)
        assert body["detail"].startswith("The workflow engine's database is unavailable.")
        assert (
            body["request_id"] in body["detail"] and headers["x-request-id"] == body["request_id"]
        )
        ids.append(body["request_id"])
    for user in ("limited",):
        code, body, _ = down.client.request("GET", "/workflow-engine/api/runs", user=user)
        assert code == 503 and not _leaks(body, down.port)
    code, page, headers = down.client.request("GET", "/workflow-engine/runs")
    assert code == 503 and not _leaks(page, down.port)
    assert headers["x-request-id"] in page
    # The server log has the details, under each id.
    log = down.log.read_text(errors="replace")
    for request_id in [*ids, headers["x-request-id"]]:
        line = next(x for x in log.splitlines() if request_id in x)
        assert SECRET_DB in line and str(down.port) in line, line
    assert len(set(ids)) == len(ids)


def test_valid_ids_with_slashes_reach_the_database(down: DownUI) -> None:
    quoted = urllib.parse.quote("manual__2026/01", safe="")
    code, body, _ = down.client.request("GET", f"/workflow-engine/api/dags/d/runs/{quoted}")
    assert code == 503 and not _leaks(body, down.port)  # valid: it reaches the database


def test_pages_use_a_connection_stored_in_airflows_database(
    down: DownUI, airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    """Last in this module (the api-server keeps the reader it opens): the UI resolves the
    engine's database like tasks and the CLI do, a ``workflow_engine_default`` made with
    ``airflow connections add`` ahead of ``[workflow_engine] sql_alchemy_conn``."""
    import json

    from airflow_workflow_engine.hooks.engine import EngineSettings, kernel_for
    from airflow_workflow_engine.kernel.commands import RunCreate
    from airflow_workflow_engine.persistence.sql import migrate
    from tests.integration.airflow import workflows as wf
    from tests.integration.airflow.fixtures import run_airflow

    stored = tmp_path / "stored.db"
    migrate(f"sqlite:///{stored}")
    settings = EngineSettings(sql_url=f"sqlite:///{stored}", blob_store=str(tmp_path / "b"))
    made = kernel_for(settings, [wf.linear]).dispatch(
        RunCreate(workflow_id="it-linear", input={"name": "stored"})
    )
    conn = json.dumps({"conn_type": "sqlite", "host": str(stored)})
    added = run_airflow(
        ["connections", "add", "workflow_engine_default", "--conn-json", conn], airflow_env.env
    )
    assert added.returncode == 0, added.stderr[-3000:]
    try:
        code, body, _ = down.client.request("GET", "/workflow-engine/api/runs")
        assert code == 200, body
        assert [r["workflow_run_id"] for r in body["runs"]] == [made.workflow_run_id]
    finally:
        removed = run_airflow(["connections", "delete", "workflow_engine_default"], airflow_env.env)
        assert removed.returncode == 0, removed.stderr[-3000:]
