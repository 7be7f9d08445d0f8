"""Every form of the engine's database setting an Airflow user may type, resolved through
Airflow's own connection machinery (``AIRFLOW_CONN_...`` parsed by Airflow, as a task and as
the CLI read it) and used for real: the engine creates a run in a real PostgreSQL or SQLite
database, which is then read back from that database directly."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.airflow.fixtures import AIRFLOW_MARKS, airflow_env

__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

pytestmark = AIRFLOW_MARKS

CONN_VAR = "AIRFLOW_CONN_WORKFLOW_ENGINE_DEFAULT"
CONF_VAR = "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN"


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache

    for var in (CONN_VAR, CONF_VAR):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", str(tmp_path / "blobs"))
    monkeypatch.chdir(tmp_path)  # a relative SQLite path must not depend on the cwd
    reset_kernel_cache()
    yield
    reset_kernel_cache()


@pytest.fixture(scope="module")
def pg(postgres_server: Any) -> Iterator[dict[str, Any]]:
    """One migrated PostgreSQL database, its parts and its canonical URL."""
    from airflow_workflow_engine.persistence.sql import migrate

    name = postgres_server.create_database()
    migrate(postgres_server.url(name))
    try:
        yield {
            "user": postgres_server.user,
            "password": postgres_server.password,
            "host": postgres_server.host,
            "port": postgres_server.port,
            "db": name,
            "url": postgres_server.url(name),
        }
    finally:
        postgres_server.drop_database(name)


def _uri(scheme: str, pg: dict[str, Any], query: str = "") -> str:
    auth = f"{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}"
    return f"{scheme}://{auth}/{pg['db']}{query}"


def _json(conn_type: str, pg: dict[str, Any], extra: dict[str, Any]) -> str:
    return json.dumps(
        {
            "conn_type": conn_type,
            "host": pg["host"],
            "port": pg["port"],
            "login": pg["user"],
            "password": pg["password"],
            "schema": pg["db"],
            "extra": extra,
        }
    )


POSTGRES_FORMS: dict[str, tuple[str, Any]] = {
    "postgres://": (CONN_VAR, lambda pg: _uri("postgres", pg)),
    "postgresql://": (CONN_VAR, lambda pg: _uri("postgresql", pg)),
    "postgresql+psycopg://": (CONN_VAR, lambda pg: _uri("postgresql+psycopg", pg)),
    "postgresql+psycopg2://": (CONN_VAR, lambda pg: _uri("postgresql+psycopg2", pg)),
    "uri with sslmode": (
        CONN_VAR,
        lambda pg: _uri("postgresql", pg, "?sslmode=disable&connect_timeout=10"),
    ),
    "workflow-engine://": (CONN_VAR, lambda pg: _uri("workflow-engine", pg)),
    "json postgres, provider extras": (
        CONN_VAR,
        # cursor is the postgres provider's own extra: libpq would refuse it.
        lambda pg: _json("postgres", pg, {"sslmode": "prefer", "cursor": "dictcursor"}),
    ),
    "json workflow_engine, psycopg2 driver": (
        CONN_VAR,
        lambda pg: _json("workflow_engine", pg, {"driver": "postgresql+psycopg2"}),
    ),
    "config postgres://": (CONF_VAR, lambda pg: _uri("postgres", pg)),
    "config postgresql+psycopg2://": (CONF_VAR, lambda pg: _uri("postgresql+psycopg2", pg)),
}


def _round_trip(source: str) -> Any:
    """A run created through the hook's kernel; returns the hook's settings."""
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.kernel.commands import RunCreate
    from tests.integration.airflow import workflows as wf

    hook = WorkflowEngineHook()
    ok, message = hook.test_connection()
    assert ok, message
    key = f"forms/{uuid.uuid4().hex}"
    kernel = hook.get_kernel(wf.linear)
    kernel.dispatch(RunCreate(workflow_id="it-linear", input={"name": source}, idempotency_key=key))
    return hook.get_settings(), key


def _stored(url: str, key: str) -> Any:
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    with SqlPersistence(url) as store:
        return store.get_run_by_idempotency_key(key)


@pytest.mark.parametrize("form", list(POSTGRES_FORMS))
def test_postgres_forms(form: str, pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    var, make = POSTGRES_FORMS[form]
    monkeypatch.setenv(var, make(pg))
    settings, key = _round_trip(form)
    assert settings.sql_url.startswith("postgresql+psycopg://")
    assert settings.source == (
        "connection 'workflow_engine_default'"
        if var == CONN_VAR
        else "[workflow_engine] sql_alchemy_conn"
    )
    run = _stored(pg["url"], key)
    assert run is not None and run.input["name"] == form
    if var == CONN_VAR:
        # A task reads the connection through the Task SDK: it must get the same URL.
        from airflow.sdk import BaseHook

        from airflow_workflow_engine.hooks.engine import build_sql_url

        task_side = build_sql_url(BaseHook.get_connection("workflow_engine_default"))
        assert task_side.render_as_string(hide_password=False) == settings.sql_url


def test_sqlite_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_workflow_engine.persistence.sql import migrate

    home = Path(os.environ["AIRFLOW_HOME"])
    relative = f"wfe-forms-{uuid.uuid4().hex[:8]}/engine.db"
    absolute = tmp_path / "abs" / "engine.db"
    for path in (home / relative, absolute):
        path.parent.mkdir(parents=True, exist_ok=True)
        migrate(f"sqlite:///{path}")
    forms = {
        "sqlite:////abs": (CONN_VAR, f"sqlite:///{absolute}", absolute),
        "sqlite:///relative": (CONN_VAR, f"sqlite:///{relative}", home / relative),
        "json sqlite, host": (
            CONN_VAR,
            json.dumps({"conn_type": "sqlite", "host": str(absolute)}),
            absolute,
        ),
        "json workflow_engine, relative schema": (
            CONN_VAR,
            json.dumps(
                {"conn_type": "workflow_engine", "schema": relative, "extra": {"driver": "sqlite"}}
            ),
            home / relative,
        ),
        "config sqlite:///relative": (CONF_VAR, f"sqlite:///{relative}", home / relative),
    }
    for form, (var, value, where) in forms.items():
        from airflow_workflow_engine.hooks.engine import reset_kernel_cache

        for other in (CONN_VAR, CONF_VAR):
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(var, value)
        reset_kernel_cache()
        settings, key = _round_trip(form)
        assert settings.sql_url == f"sqlite:///{where}", form
        run = _stored(f"sqlite:///{where}", key)
        assert run is not None and run.input["name"] == form, form
    assert not (tmp_path / "wfe-forms").exists()  # nothing went to the working directory


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (CONN_VAR, "mongodb://u:p@h/db", "type 'mongodb', which names no database"),
        (CONN_VAR, "sqlite://", "SQLite connection without a file"),
        (CONN_VAR, '{"conn_type": "postgres", "schema": "db"}', "has no host"),
        (CONF_VAR, "mongodb://u:p@h/db", "scheme 'mongodb', which names no database"),
        (CONF_VAR, "not a url", "is not a database URL"),
    ],
)
def test_unusable_forms_say_what_is_wrong(
    var: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_workflow_engine.hooks.engine import EngineNotConfiguredError, WorkflowEngineHook

    monkeypatch.setenv(var, value)
    with pytest.raises(EngineNotConfiguredError, match=message) as exc:
        WorkflowEngineHook().get_settings()
    assert "p@h" not in str(exc.value)  # no password in the message


def test_postgres_without_a_driver_names_the_package(tmp_path: Path) -> None:
    """Neither psycopg nor psycopg2 importable (a fresh interpreter where both are hidden):
    the error says which package to install, whatever DB-API the URL names."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['psycopg'] = sys.modules['psycopg2'] = None\n"
        "from airflow_workflow_engine.hooks.engine import WorkflowEngineHook\n"
        "try:\n"
        "    WorkflowEngineHook().get_settings()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    for url in ("postgresql+psycopg2://u:pw@h/db", "postgres://u:pw@h/db"):
        env = {**os.environ, CONN_VAR: url}
        env.pop(CONF_VAR, None)
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out = done.stdout
        assert "EngineNotConfiguredError" in out and "no PostgreSQL driver is installed" in out
        assert "airflow-workflow-engine[postgres]" in out and "psycopg[binary]" in out
        assert "pw" not in out


def test_a_stage_task_uses_an_env_var_postgresql_psycopg_connection(
    airflow_env: Any, pg: dict[str, Any]
) -> None:
    """The issue's case on real Airflow: ``AIRFLOW_CONN_WORKFLOW_ENGINE_DEFAULT=
    postgresql+psycopg://...`` given to every Airflow process; the DAG's stage tasks run and
    write their workflow run to that PostgreSQL database (not the option's SQLite file)."""
    import dataclasses

    from airflow_workflow_engine.kernel.status import Status

    env = {**airflow_env.env, CONN_VAR: _uri("postgresql+psycopg", pg)}
    with_pg = dataclasses.replace(airflow_env, env=env)
    result = with_pg.run_dag("it_hand_dag.py", "it_hand", {"text": "psycopg url"})
    assert result.state == "success", result.log[-4000:]
    run = _stored(pg["url"], f"it_hand/{result.run_id}")
    assert run is not None and run.status == Status.COMPLETED
    assert airflow_env.kernel_run(result, "it_hand") is None
