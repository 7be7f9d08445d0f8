"""A least-privilege engine role on real PostgreSQL (``airflow workflow-engine db grant``).

The deployment the docs describe (docs/deploy.md): one PostgreSQL database for Airflow and the
engine; Airflow's owner (a plain, non-superuser role owning the database) runs ``airflow db
migrate``, which creates Airflow's tables and, through the provider's DB manager, the
``wfe_`` tables; every other process of the engine uses a role that may only read and write
those. Here, with real ``airflow`` subprocesses:

- ``db grant ROLE --print-sql`` prints the statements and changes nothing;
- ``db grant ROLE`` (as the owner) gives the role its rights; a workflow then runs as that
  role: runs, stages (rerun deletes some), logs, annotations, an approval, outbox events
  delivered, AI ledger rows; and the CLI (``approve``) works;
- the role cannot read Airflow's ``connection``, ``variable`` or ``dag_run``, cannot CREATE
  or DROP a table, and cannot DELETE from the AI cost ledger: permission denied, each;
- both layouts: the tables beside Airflow's (``public``) and in a schema of their own
  (``search_path`` in the engine URL), where Airflow's tables are not even on its path.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, define_stage
from airflow_workflow_engine.definitions.context import StageContext
from airflow_workflow_engine.kernel.commands import OutboxFlush, RunCreate, RunRerunFrom
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.persistence.sql.grants import TABLE_PRIVILEGES
from tests.integration.airflow.fixtures import AIRFLOW_MARKS, airflow_env_vars, run_airflow

pytest_plugins = ["tests.postgres_fixtures"]
pytestmark = [*AIRFLOW_MARKS, pytest.mark.postgres]

OWNER, ENGINE = "airflow_owner", "wfe_engine"
SETTING = "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN"


class Doc(BaseModel):
    text: str


class Said(BaseModel):
    text: str


def _ask(ctx: StageContext[Doc, Any]) -> Said:
    ctx.annotate("reviewed", {"by": "model"})
    return Said(text=ctx.ai.generate_text("mock:echo", ctx.input.text).text)


def _shout(ctx: StageContext[Said, Any]) -> Said:
    ctx.log("INFO", "shouting")
    return Said(text=ctx.input.text.upper())


WORKFLOW = (
    WorkflowBuilder("least_privilege", "Least privilege", input=Doc, output=Said)
    .pipe(define_stage(id="ask", input=Doc, output=Said, execute=_ask))
    .pipe(define_stage(id="shout", input=Said, output=Said, execute=_shout))
    .build()
)


@dataclass
class Deployment:
    owner_url: str
    engine_url: str
    schema: str | None
    env: dict[str, str]

    def conninfo(self, url: str) -> str:
        return url.replace("postgresql+psycopg://", "postgresql://")


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


def _one(conn: psycopg.Connection[Any], sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _cli(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return run_airflow(["workflow-engine", *args], d.env)


def _denied(conninfo: str, sql: str) -> str:
    """Runs ``sql``; returns PostgreSQL's message, which must be a permission error."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            conn.execute(sql)
    return str(caught.value)


@pytest.fixture(params=[None, "wfe"], ids=["public", "own-schema"])
def deployment(
    request: pytest.FixtureRequest, postgres_server: Any, tmp_path: Path
) -> Iterator[Deployment]:
    """A database owned by a plain role, migrated by ``airflow db migrate`` as that owner, and
    an engine role with no rights yet; the engine URL (every process's) names that role."""
    schema: str | None = request.param
    database = postgres_server.create_database()
    owner_pw, engine_pw = secrets.token_hex(8), secrets.token_hex(8)
    server = postgres_server
    admin = f"host={server.host} port={server.port} user={server.user} password={server.password}"
    with psycopg.connect(f"{admin} dbname={database}", autocommit=True) as conn:
        for role, pw in ((OWNER, owner_pw), (ENGINE, engine_pw)):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}'")
        conn.execute(f'ALTER DATABASE "{database}" OWNER TO {OWNER}')
    base = f"{server.host}:{server.port}/{database}"
    owner_url = f"postgresql+psycopg://{OWNER}:{owner_pw}@{base}"
    engine_url = f"postgresql+psycopg://{ENGINE}:{engine_pw}@{base}"
    if schema:
        engine_url += "?options=" + quote(f"-csearch_path={schema}", safe="")
    env = airflow_env_vars(
        tmp_path,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=owner_url,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=owner_url,  # psycopg 3 is async too
        **{SETTING: engine_url},
    )
    yield Deployment(owner_url, engine_url, schema, env)
    postgres_server.drop_database(database)
    with psycopg.connect(f"{admin} dbname=postgres", autocommit=True) as conn:
        for role in (ENGINE, OWNER):
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _run_workflow_as_engine_role(d: Deployment) -> str:
    """Runs WORKFLOW in-process through the SQL store and ledger on the engine role's URL:
    every kind of row the engine writes, and a rerun (which deletes stages)."""
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.persistence.sql import SqlPersistence
    from airflow_workflow_engine.testing import create_test_kernel, run_to_completion

    store = SqlPersistence(d.engine_url)
    try:
        store.check_schema()  # reads wfe_alembic_version
        ledger = SqlLedger(store.engine)
        kit = create_test_kernel([WORKFLOW], persistence=store, ledger=ledger)
        run_id = kit.kernel.dispatch(
            RunCreate(workflow_id=WORKFLOW.id, input={"text": "hello"}, idempotency_key="lp/1")
        ).workflow_run_id
        run = run_to_completion(kit.kernel, kit.job_transport, run_id)
        assert run.status is Status.COMPLETED and run.output == {"text": "ECHO: HELLO"}, run
        kit.kernel.dispatch(RunRerunFrom(workflow_run_id=run_id, from_stage_id="shout"))
        run = run_to_completion(kit.kernel, kit.job_transport, run_id)
        assert run.status is Status.COMPLETED, run
        flushed = kit.kernel.dispatch(OutboxFlush(max_events=1000))
        assert flushed.published > 0 and not store.list_unpublished_events(limit=10)
        assert len(ledger.entries(workflow_run_id=run_id)) == 1
        keys = [a.key for a in store.list_annotations(run_id)]
        assert keys[0] == "reviewed" and "revision.from_stage_id" in keys, keys
        assert len(store.list_logs(run_id)) >= 1
    finally:
        store.close()
    return run_id


def test_engine_role_runs_workflows_and_cannot_touch_airflows_tables(
    deployment: Deployment,
) -> None:
    d = deployment
    migrated = run_airflow(["db", "migrate"], d.env)
    _ok(migrated)
    owner, engine = d.conninfo(d.owner_url), d.conninfo(d.engine_url)
    where = f"{d.schema}." if d.schema else "public."
    with psycopg.connect(owner) as conn:  # the owner made both histories, where expected
        assert _one(conn, "SELECT count(*) FROM public.dag_run") == 0
        assert _one(conn, f"SELECT version_num FROM {where}wfe_alembic_version")
        owners = {
            r[0]
            for r in conn.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename LIKE 'wfe\\_%%' "
                "AND schemaname = %s",
                (d.schema or "public",),
            )
        }
        assert owners == {OWNER}

    printed = _ok(_cli(d, "db", "grant", ENGINE, "--print-sql"))
    qualified = f"{d.schema}." if d.schema else ""  # else the owner's search_path: public
    assert f"GRANT SELECT, INSERT ON TABLE {qualified}wfe_annotations TO {ENGINE};" in printed
    assert f"GRANT SELECT, INSERT, UPDATE ON TABLE {qualified}wfe_ai_calls TO {ENGINE};" in printed
    assert "CREATE TABLE" not in printed and "ALL PRIVILEGES" not in printed
    # Printing changed nothing: the role still reads nothing of ours.
    _denied(engine, f"SELECT * FROM {where}wfe_workflow_runs")

    if d.schema is None:  # the same code path for both layouts: checked once
        missing = _cli(d, "db", "grant", "no_such_role")
        assert missing.returncode == 1 and "'no_such_role' does not exist" in missing.stderr
        _ok(_cli(d, "db", "grant", ENGINE))  # granted twice: revoke all, grant the same again

    granted = _ok(_cli(d, "db", "grant", ENGINE))
    assert f"Granted role '{ENGINE}'" in granted and "wfe_ai_calls" in granted

    run_id = _run_workflow_as_engine_role(d)
    # The CLI as the engine role: finds the run (checks the revision) and writes an approval.
    approved = _ok(_cli(d, "approve", "--workflow-run-id", run_id, "--by", "alice"))
    assert "Approved" in approved and "annotation(s) written" in approved

    # Airflow's tables: not readable (with the engine's own schema they are not even on its
    # search_path, so they are named with theirs).
    for table in ("connection", "variable", "dag_run"):
        message = _denied(engine, f"SELECT * FROM public.{table}")
        assert f"permission denied for table {table}" in message
    # No DDL: not in Airflow's schema, not in the engine's, not on the engine's tables.
    _denied(engine, f"CREATE TABLE {where}wfe_sneaky (id int)")
    _denied(engine, "CREATE TABLE public.sneaky (id int)")
    assert "must be owner" in _denied(engine, "DROP TABLE wfe_workflow_runs")
    assert "must be owner" in _denied(engine, "ALTER TABLE wfe_ai_calls ADD COLUMN x int")
    # The ledger is append-only for the engine: what was spent cannot be erased.
    _denied(engine, "DELETE FROM wfe_ai_calls")
    _denied(engine, "TRUNCATE wfe_workflow_runs")
    with psycopg.connect(engine) as conn:  # what it holds is exactly the map
        rows = conn.execute(
            "SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type) "
            "FROM information_schema.role_table_grants WHERE grantee = %s GROUP BY table_name",
            (ENGINE,),
        ).fetchall()
    assert {t: set(p.split(",")) for t, p in rows} == {
        t: set(p) for t, p in TABLE_PRIVILEGES.items()
    }


def test_an_engine_role_on_airflows_database_is_airflows_database() -> None:
    """So ``airflow db migrate`` migrates the engine's tables as Airflow's owner, on its own
    connection, when the engine URL names a least-privilege role on the same database."""
    from airflow_workflow_engine.hooks.db_manager import _same_database

    owner = "postgresql://airflow:x@db:5432/airflow"
    assert _same_database(owner, "postgresql+psycopg://wfe_engine:y@db:5432/airflow")
    assert _same_database(
        owner, "postgresql://wfe_engine@db:5432/airflow?options=-csearch_path%3Dwfe"
    )
    assert not _same_database(owner, "postgresql://wfe_engine:y@db:5432/engine")
    assert not _same_database(owner, "postgresql://airflow:x@other:5432/airflow")
