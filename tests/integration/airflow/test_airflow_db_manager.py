"""``airflow db migrate`` / ``check-migrations`` / ``reset`` with the provider's DB manager,
each on a fresh Airflow home, run as real ``airflow`` subprocesses.

One rule for every process: the engine's database is the connection
``workflow_engine_default`` (wherever Airflow keeps it: environment, secrets backend or
Airflow's database), else ``[workflow_engine] sql_alchemy_conn``. ``airflow db migrate``
creates the ``wfe_`` tables there, and only there; with neither set it creates nothing and
says what to set (stage tasks and the CLI could not reach tables made elsewhere)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from airflow_workflow_engine.persistence.sql.migrate import HEAD_REVISION
from tests.integration.airflow.fixtures import AIRFLOW_MARKS, airflow_env_vars, run_airflow

pytestmark = AIRFLOW_MARKS

OUR_TABLES = {
    "wfe_workflow_runs",
    "wfe_workflow_stages",
    "wfe_workflow_logs",
    "wfe_annotations",
    "wfe_outbox_events",
    "wfe_idempotency_keys",
    "wfe_ai_calls",
    "wfe_ai_cost_rollup",
}
SETTING = "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN"


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _state(db: Path) -> tuple[set[str], str | None, str | None]:
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        ours = conn.execute("SELECT version_num FROM wfe_alembic_version").fetchone()
        theirs = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return tables, ours[0] if ours else None, theirs[0] if theirs else None


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def test_migrate_check_and_reset_beside_airflows_tables(tmp_path: Path) -> None:
    """The engine configured on Airflow's own database: the tables go beside Airflow's."""
    db = tmp_path / "airflow.db"
    env = airflow_env_vars(tmp_path, **{SETTING: f"sqlite:///{db}"})

    first = run_airflow(["db", "migrate"], env)
    assert first.returncode == 0, first.stderr[-4000:]
    assert "Migrating the workflow engine's tables in Airflow's metadata database" in (
        first.stdout + first.stderr
    )
    tables, ours, theirs = _state(db)
    assert tables >= OUR_TABLES | {"wfe_alembic_version", "alembic_version", "dag_run"}
    assert ours == HEAD_REVISION and theirs  # two histories, two version tables

    again = run_airflow(["db", "migrate"], env)  # idempotent
    assert again.returncode == 0, again.stderr[-4000:]
    assert _state(db)[1] == HEAD_REVISION

    check = run_airflow(["db", "check-migrations", "-t", "20"], env)
    assert check.returncode == 0, check.stderr[-4000:]

    reset = run_airflow(["db", "reset", "-y"], env)
    assert reset.returncode == 0, reset.stderr[-4000:]
    tables, ours, _ = _state(db)
    assert tables >= OUR_TABLES and ours == HEAD_REVISION

    # The CLI finds them where migrate put them.
    listed = run_airflow(["workflow-engine", "runs", "list", "-o", "json"], env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert json.loads(listed.stdout) == []


def test_migrate_with_no_engine_database_creates_nothing_and_says_what_to_set(
    tmp_path: Path,
) -> None:
    env = airflow_env_vars(tmp_path)
    assert SETTING not in env and "AIRFLOW_CONN_WORKFLOW_ENGINE_DEFAULT" not in env

    migrated = run_airflow(["db", "migrate"], env)
    output = _ok(migrated)
    assert "wfe_ tables were NOT created" in output
    assert SETTING in output and "'workflow_engine_default'" in output
    assert "[workflow_engine] sql_alchemy_conn" in output
    tables = _tables(tmp_path / "airflow.db")
    assert "dag_run" in tables and not {t for t in tables if t.startswith("wfe_")}

    check = run_airflow(["db", "check-migrations", "-t", "20"], env)
    assert check.returncode == 0, check.stderr[-4000:]

    # Every process says the same: the CLI, like a stage task, names the setting.
    for args in (["runs", "list"], ["db", "migrate"]):
        done = run_airflow(["workflow-engine", *args], env)
        assert done.returncode == 1, done
        assert "no database configured" in done.stderr and SETTING in done.stderr, done.stderr


def test_connection_stored_in_airflows_database_wins_everywhere(tmp_path: Path) -> None:
    """A ``workflow_engine_default`` made with ``airflow connections add`` (as in the UI or the
    REST API) is the engine's database for ``airflow db migrate`` and the CLI, ahead of
    ``[workflow_engine] sql_alchemy_conn``; ``--conn-id`` finds stored connections too."""
    env = airflow_env_vars(tmp_path)
    _ok(run_airflow(["db", "migrate"], env))  # Airflow's tables: where connections are kept
    engine_db, other_db, decoy_db = (tmp_path / n for n in ("engine.db", "other.db", "decoy.db"))
    _ok(
        run_airflow(
            [
                "connections",
                "add",
                "workflow_engine_default",
                "--conn-uri",
                f"sqlite:///{engine_db}",
            ],
            env,
        )
    )
    _ok(
        run_airflow(
            [
                "connections",
                "add",
                "wfe_other",
                "--conn-json",
                json.dumps({"conn_type": "sqlite", "host": str(other_db)}),
            ],
            env,
        )
    )
    env[SETTING] = f"sqlite:///{decoy_db}"  # the connection wins over the option

    output = _ok(run_airflow(["db", "migrate"], env))
    assert f"Migrating the workflow engine's tables in SQLite database '{engine_db}'" in output
    assert _tables(engine_db) >= OUR_TABLES and not decoy_db.exists()

    current = _ok(run_airflow(["workflow-engine", "db", "current"], env))
    assert f"SQLite database '{engine_db}'" in current and "up to date" in current
    listed = run_airflow(["workflow-engine", "runs", "list", "-o", "json"], env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert json.loads(listed.stdout) == []

    other = run_airflow(["workflow-engine", "db", "migrate", "--conn-id", "wfe_other"], env)
    assert f"SQLite database '{other_db}'" in _ok(other)
    assert _tables(other_db) >= OUR_TABLES
