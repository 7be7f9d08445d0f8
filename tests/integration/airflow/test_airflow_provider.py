"""Provider registration and ``WorkflowEngineHook``: settings, URLs, kernel, UI, test button."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.airflow.fixtures import AIRFLOW_MARKS, provider_registered

pytestmark = AIRFLOW_MARKS


@pytest.fixture(autouse=True)
def _fresh_kernels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache

    for var in ("SQL_ALCHEMY_CONN", "BLOB_STORE", "BLOB_AWS_CONN_ID", "OUTPUT_BLOB_THRESHOLD"):
        monkeypatch.delenv(f"AIRFLOW__WORKFLOW_ENGINE__{var}", raising=False)
    reset_kernel_cache()
    yield
    reset_kernel_cache()


def _conn(**fields: Any) -> Any:
    from airflow.sdk import Connection

    if "extra" in fields and not isinstance(fields["extra"], str):
        fields["extra"] = json.dumps(fields["extra"])
    fields.setdefault("conn_id", "wfe")
    return Connection(**fields)


# -- provider metadata --------------------------------------------------------------------


def test_provider_info_matches_airflows_schema() -> None:
    import airflow
    import jsonschema  # type: ignore[import-untyped]

    from airflow_workflow_engine.get_provider_info import get_provider_info

    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-workflow-engine"
    assert info["connection-types"] == [
        {
            "connection-type": "workflow_engine",
            "hook-class-name": "airflow_workflow_engine.hooks.engine.WorkflowEngineHook",
            "hook-name": "Workflow Engine",
        },
        {
            "connection-type": "workflow_engine_llm",
            "hook-class-name": "airflow_workflow_engine.hooks.llm.WorkflowEngineLLMHook",
            "hook-name": "Workflow Engine LLM",
        },
    ]
    assert info["db-managers"] == [
        "airflow_workflow_engine.hooks.db_manager.WorkflowEngineDBManager"
    ]
    assert info["extra-links"] == ["airflow_workflow_engine.operators.links.WorkflowRunLink"]
    assert info["plugins"] == [
        {
            "name": "workflow_engine",
            "plugin-class": "airflow_workflow_engine.plugins.plugin.WorkflowEnginePlugin",
        }
    ]
    options = info["config"]["workflow_engine"]["options"]
    assert set(options) == {
        "sql_alchemy_conn",
        "blob_store",
        "blob_aws_conn_id",
        "output_blob_threshold",
        "llm_conn_ids",
        "ai_run_max_cost",
        "event_plugins",
        "event_max_retries",
        "ai_metrics",
    }
    assert options["sql_alchemy_conn"]["sensitive"] is True
    assert options["ai_run_max_cost"]["type"] == "float"
    assert options["ai_metrics"]["type"] == "boolean"
    assert all(o["description"] for o in options.values())
    # Every module and class it names imports.
    from airflow.sdk._shared.module_loading import import_string

    for item in info["connection-types"]:
        import_string(item["hook-class-name"])
    for name in info["db-managers"]:
        import_string(name)
    for name in info["extra-links"]:
        assert import_string(name)().name == "Workflow run"
    for plugin in info["plugins"]:
        assert import_string(plugin["plugin-class"]).name == plugin["name"]
    assert info["cli"] == [
        "airflow_workflow_engine.cli.definition.get_workflow_engine_cli_commands"
    ]
    [group] = import_string(info["cli"][0])()
    assert group.name == "workflow-engine"
    assert {c.name for c in group.subcommands} >= {"runs", "costs", "rerun", "backfill-rerun"}
    for group in ("hooks", "triggers", "operators"):
        for entry in info[group]:
            for module in entry["python-modules"]:
                __import__(module)


@pytest.mark.skipif(
    not provider_registered(),
    reason="the apache_airflow_provider entry point is not installed (pyproject.toml needs "
    "[project.entry-points.apache_airflow_provider]; then reinstall the package)",
)
def test_airflow_discovers_the_provider() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()  # type: ignore[no-untyped-call]
    assert "airflow-workflow-engine" in manager.providers
    assert "airflow_workflow_engine.hooks.db_manager.WorkflowEngineDBManager" in (
        manager.db_managers
    )
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    runtime = ProvidersManagerTaskRuntime()  # type: ignore[no-untyped-call]
    hook = runtime.hooks["workflow_engine"]
    assert hook is not None and hook.hook_class_name.endswith("WorkflowEngineHook")
    llm = runtime.hooks["workflow_engine_llm"]
    assert llm is not None and llm.hook_class_name.endswith("WorkflowEngineLLMHook")


# -- SQLAlchemy URLs from connections -----------------------------------------------------


def test_postgres_url_is_built_from_parts_not_get_uri() -> None:
    from airflow.sdk import Connection

    from airflow_workflow_engine.hooks.engine import build_sql_url

    conn = Connection.from_uri(
        "postgresql://user:p%40ss@db.local:5433/airflow?sslmode=require", conn_id="pg"
    )
    assert conn.get_uri().startswith("postgres://")  # what SQLAlchemy 2 rejects
    url = build_sql_url(conn)
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "user",
        "p@ss",
        "db.local",
        5433,
        "airflow",
    )
    assert dict(url.query) == {"sslmode": "require"}


def test_sqlite_path_survives_the_connection_round_trip(tmp_path: Path) -> None:
    from airflow.sdk import Connection

    from airflow_workflow_engine.hooks.engine import build_sql_url

    path = tmp_path / "engine.db"
    conn = Connection.from_uri(f"sqlite:///{path}", conn_id="lite")
    assert "%2F" in conn.get_uri()  # Airflow's URI percent-encodes the path
    again = Connection.from_uri(conn.get_uri(), conn_id="lite")  # the secrets cache does this
    for c in (conn, again):
        url = build_sql_url(c)
        assert url.render_as_string() == f"sqlite:///{path}"


def test_workflow_engine_connection_fields() -> None:
    from airflow_workflow_engine.hooks.engine import EngineNotConfiguredError, build_sql_url

    url = build_sql_url(
        _conn(
            conn_type="workflow_engine",
            host="h",
            login="u",
            password="pw",
            schema="db",
            extra={"blob_store": "/x", "connect_timeout": 5},
        )
    )
    assert url.render_as_string(hide_password=False) == (
        "postgresql+psycopg://u:pw@h/db?connect_timeout=5"
    )
    lite = build_sql_url(
        _conn(conn_type="workflow_engine", host="/data/e.db", extra={"driver": "sqlite"})
    )
    assert lite.render_as_string() == "sqlite:////data/e.db"
    with pytest.raises(EngineNotConfiguredError, match="no host"):
        build_sql_url(_conn(conn_type="workflow_engine", schema="db"))
    with pytest.raises(EngineNotConfiguredError, match="without a file"):
        build_sql_url(_conn(conn_type="sqlite"))
    with pytest.raises(EngineNotConfiguredError, match="'driver' extra"):
        build_sql_url(_conn(conn_type="http", host="h"))


# -- settings -----------------------------------------------------------------------------


def test_settings_from_config_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path}/e.db")
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", "s3://bucket/some/prefix")
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__OUTPUT_BLOB_THRESHOLD", "1024")
    settings = WorkflowEngineHook(conn_id=None).get_settings()
    assert settings.sql_url == f"sqlite:///{tmp_path}/e.db"
    assert settings.blob_store == "s3://bucket/some/prefix"
    assert settings.output_blob_threshold == 1024
    assert settings.conn_id is None and "sql_alchemy_conn" in settings.source
    assert "e.db" not in repr(settings)  # the URL (and its password) stays out of logs


def test_missing_database_says_exactly_what_to_set() -> None:
    from airflow_workflow_engine.hooks.engine import EngineNotConfiguredError, WorkflowEngineHook

    started = time.monotonic()
    with pytest.raises(EngineNotConfiguredError) as exc:
        WorkflowEngineHook().get_kernel()
    message = str(exc.value)
    assert "[workflow_engine] sql_alchemy_conn" in message
    assert "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN" in message
    assert "workflow_engine_default" in message and "airflow db migrate" in message
    assert time.monotonic() - started < 30
    with pytest.raises(EngineNotConfiguredError, match=r"'nope' .* does not exist"):
        WorkflowEngineHook(conn_id="nope").get_settings()


def test_connection_from_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", "sqlite:////not/used.db")
    monkeypatch.setenv(
        "AIRFLOW_CONN_WFE_ENV",
        json.dumps(
            {
                "conn_type": "workflow_engine",
                "host": str(tmp_path / "conn.db"),
                "extra": {"driver": "sqlite", "blob_store": str(tmp_path / "b")},
            }
        ),
    )
    settings = WorkflowEngineHook(conn_id="wfe_env").get_settings()
    assert settings.sql_url == f"sqlite:///{tmp_path / 'conn.db'}"
    assert settings.blob_store == str(tmp_path / "b") and settings.conn_id == "wfe_env"


def test_default_blob_store_is_under_airflow_home(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from airflow_workflow_engine.hooks.engine import settings_from_config

    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", "sqlite:////tmp/x.db")
    settings = settings_from_config()
    assert settings is not None
    assert settings.blob_store == str(
        Path(os.environ["AIRFLOW_HOME"]) / "workflow_engine" / "blobs"
    )


# -- the kernel -----------------------------------------------------------------------------


def test_kernel_is_built_once_per_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.host.ports import AirflowJobTransport, AirflowScheduler
    from airflow_workflow_engine.persistence.sql import SqlPersistence, migrate
    from tests.integration.airflow import workflows as wf

    url = f"sqlite:///{tmp_path}/e.db"
    migrate(url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", str(tmp_path / "blobs"))
    first = WorkflowEngineHook(conn_id=None).get_kernel(wf.linear)
    second = WorkflowEngineHook(conn_id=None).get_kernel([wf.fanout])
    assert first is second
    assert isinstance(first.persistence, SqlPersistence)
    assert isinstance(first.job_transport, AirflowJobTransport)
    assert isinstance(first.scheduler, AirflowScheduler)
    assert first.workflow("it-linear") is wf.linear and first.workflow("it-fanout") is wf.fanout


def test_unmigrated_database_names_airflow_db_migrate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow_workflow_engine.errors import MigrationsNotAppliedError
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path}/e.db")
    kernel = WorkflowEngineHook(conn_id=None).get_kernel()
    with pytest.raises(MigrationsNotAppliedError, match="airflow db migrate"):
        kernel.persistence.list_runs()
    ok, message = WorkflowEngineHook(conn_id=None).test_connection()
    assert not ok and "airflow db migrate" in message


def test_test_connection_ok(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook
    from airflow_workflow_engine.persistence.sql import migrate

    url = f"sqlite:///{tmp_path}/e.db"
    migrate(url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", str(tmp_path / "b"))
    ok, message = WorkflowEngineHook(conn_id=None).test_connection()
    assert ok, message
    assert "SQLite database" in message and "up to date" in message


def test_s3_blob_store_and_amazon_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_workflow_engine.blob.s3 import S3BlobStore
    from airflow_workflow_engine.hooks.engine import EngineNotConfiguredError, EngineSettings
    from airflow_workflow_engine.hooks.kernel_cache import make_blob_store

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = make_blob_store(EngineSettings(sql_url="sqlite:////x.db", blob_store="s3://b/p/q"))
    assert isinstance(store, S3BlobStore) and store.bucket == "b" and store.prefix == "p/q/"
    with pytest.raises(EngineNotConfiguredError, match="no bucket"):
        make_blob_store(EngineSettings(sql_url="sqlite:////x.db", blob_store="s3:///p"))
    with pytest.raises(EngineNotConfiguredError, match="neither a local path"):
        make_blob_store(EngineSettings(sql_url="sqlite:////x.db", blob_store="gs://b"))
    import importlib.util

    if importlib.util.find_spec("airflow.providers.amazon") is None:
        with pytest.raises(EngineNotConfiguredError, match="apache-airflow-providers-amazon"):
            make_blob_store(
                EngineSettings(
                    sql_url="sqlite:////x.db", blob_store="s3://b", blob_aws_conn_id="aws"
                )
            )


def test_ui_field_behaviour() -> None:
    from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

    behaviour = WorkflowEngineHook.get_ui_field_behaviour()
    assert set(behaviour) == {"hidden_fields", "relabeling", "placeholders"}
    extra = json.loads(behaviour["placeholders"]["extra"])
    assert set(extra) == {"driver", "blob_store", "blob_aws_conn_id", "output_blob_threshold"}
    assert WorkflowEngineHook.conn_type == "workflow_engine"
    assert WorkflowEngineHook.default_conn_name == "workflow_engine_default"


def test_db_manager_compares_databases() -> None:
    from airflow_workflow_engine.hooks.db_manager import _same_database

    assert _same_database("sqlite:////a/b.db", "sqlite:////a/./b.db")
    assert not _same_database("sqlite:////a/b.db", "sqlite:////a/c.db")
    assert _same_database("postgresql://u:x@h:5432/db", "postgresql+psycopg://u:y@h:5432/db")
    assert not _same_database("postgresql://u@h/db", "postgresql://u@h/other")
    assert not _same_database("postgresql://u@h/db", "sqlite:////db")
