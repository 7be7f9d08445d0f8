"""The embedded Airflow's setup (no process started): home, environment, ports, and the
refusal to delete a directory it did not create. Starting it is covered by the demo's and the
end-to-end tests."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest

from airflow_workflow_engine.testing.cluster import (
    ADMIN_USER,
    ClusterError,
    EmbeddedAirflow,
    free_port,
)


def test_prepare_defaults_to_two_sqlite_files_in_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    airflow = EmbeddedAirflow.prepare(home, tmp_path, port=0)
    env = airflow.env
    assert airflow.db_url == f"sqlite:///{home}/airflow.db"
    assert airflow.engine_url == f"sqlite:///{home}/engine.db"
    assert airflow.blob_root == home / "blobs"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "True"
    assert env["AIRFLOW__API__BASE_URL"] == airflow.url == f"http://127.0.0.1:{airflow.port}"
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in env
    assert airflow.cwd == home.resolve()
    passwords = home / "simple_auth_manager_passwords.json"
    assert json.loads(passwords.read_text()) == {ADMIN_USER: airflow.password}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600


def test_prepare_keeps_the_password_of_an_existing_home(tmp_path: Path) -> None:
    first = EmbeddedAirflow.prepare(tmp_path / "home", tmp_path, port=0)
    again = EmbeddedAirflow.prepare(tmp_path / "home", tmp_path, port=0, fresh=False)
    assert again.password == first.password
    # fresh: a home it created is recreated, with a new password.
    (tmp_path / "home" / "airflow.db").write_text("old")
    fresh = EmbeddedAirflow.prepare(tmp_path / "home", tmp_path, port=0)
    assert fresh.password != first.password
    assert not (tmp_path / "home" / "airflow.db").exists()


def test_prepare_never_deletes_a_directory_it_did_not_create(tmp_path: Path) -> None:
    home = tmp_path / "mine"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    with pytest.raises(ClusterError, match=r"not a demo home \(no \.wfe-demo-home file\)"):
        EmbeddedAirflow.prepare(home, tmp_path, port=0)
    assert (home / "notes.txt").read_text() == "keep me"


def test_prepare_with_a_database_url_puts_the_engine_beside_airflow(tmp_path: Path) -> None:
    url = "postgresql+psycopg://u@127.0.0.1:5432/db"
    airflow = EmbeddedAirflow.prepare(
        tmp_path / "home",
        tmp_path,
        db_url=url,
        port=0,
        parallelism=2,
        paused_at_creation=False,
        cwd=tmp_path,
        extra_env={"AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2"},
    )
    assert airflow.db_url == airflow.engine_url == url
    assert airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == url
    assert airflow.env["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert airflow.env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert airflow.env["AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC"] == "2"
    assert airflow.cwd == tmp_path


def test_prepare_names_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        port = busy.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {port} on 127.0.0.1 is in use"):
            EmbeddedAirflow.prepare(tmp_path / "home", tmp_path, port=port)


def test_prepare_leaves_the_callers_airflow_settings_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW_HOME", "/elsewhere")
    airflow = EmbeddedAirflow.prepare(tmp_path / "home", tmp_path, port=0)
    assert airflow.env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert airflow.env["AIRFLOW_HOME"] == str((tmp_path / "home").resolve())


def test_the_helper_imports_no_airflow() -> None:
    """It runs ``airflow`` as subprocesses: importing it loads no Airflow code."""
    import subprocess
    import sys

    code = (
        "import sys, airflow_workflow_engine.testing.cluster; "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
