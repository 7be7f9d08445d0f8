"""``airflow db migrate`` / ``check-migrations`` / ``reset`` with the provider's DB manager,
on a fresh Airflow home whose engine settings name no database of their own: the wfe_ tables
go into Airflow's metadata database, beside Airflow's."""

from __future__ import annotations

import sqlite3
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
}


def _state(db: Path) -> tuple[set[str], str | None, str | None]:
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        ours = conn.execute("SELECT version_num FROM wfe_alembic_version").fetchone()
        theirs = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return tables, ours[0] if ours else None, theirs[0] if theirs else None


def test_migrate_check_and_reset_beside_airflows_tables(tmp_path: Path) -> None:
    env = airflow_env_vars(tmp_path)
    db = tmp_path / "airflow.db"

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
