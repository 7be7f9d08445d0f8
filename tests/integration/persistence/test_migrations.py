"""The engine's Alembic history on SQLite and PostgreSQL, next to tables that are not ours."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from airflow_workflow_engine.errors import DatabaseUnavailableError
from airflow_workflow_engine.persistence.sql import (
    HEAD_REVISION,
    VERSION_TABLE,
    current_revision,
    downgrade,
    metadata,
    migrate,
)
from airflow_workflow_engine.persistence.sql.engine import make_engine
from airflow_workflow_engine.persistence.sql.migrate import (
    alembic_config,
    include_name,
    include_object,
)

pytest_plugins = ["tests.postgres_fixtures"]
pytestmark = pytest.mark.integration

OUR_TABLES = {t.name for t in metadata.sorted_tables}
AIRFLOW_REVISION = "5f2621c13b39"  # any foreign revision id: it must survive untouched


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'airflow.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database that already holds "Airflow's" tables and version table."""
    eng = make_engine(db_url)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(text(f"INSERT INTO alembic_version VALUES ('{AIRFLOW_REVISION}')"))
        conn.execute(text("CREATE TABLE dag (dag_id VARCHAR(250) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO dag VALUES ('example')"))
    yield eng
    eng.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _airflow_state(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        versions = list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
        dags = list(conn.execute(text("SELECT dag_id FROM dag")).scalars())
    return versions, dags


def test_head_revision_matches_the_scripts() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD_REVISION]
    for revision in script.walk_revisions():
        assert revision.module.downgrade is not None  # every step is reversible


def test_up_down_up_leaves_airflow_alone(engine: Engine) -> None:
    before = _airflow_state(engine)
    assert current_revision(engine) is None

    migrate(engine)
    assert current_revision(engine) == HEAD_REVISION
    assert _tables(engine) == OUR_TABLES | {VERSION_TABLE, "alembic_version", "dag"}
    assert _airflow_state(engine) == before

    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert _tables(engine) == {VERSION_TABLE, "alembic_version", "dag"}
    assert _airflow_state(engine) == before

    migrate(engine, "head")
    assert current_revision(engine) == HEAD_REVISION
    assert _tables(engine) >= OUR_TABLES
    assert _airflow_state(engine) == before


def test_migrate_twice_is_a_no_op(engine: Engine, db_url: str) -> None:
    migrate(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO wfe_idempotency_keys (key, command_type, state, created_at) "
                "VALUES ('k', 'c', 'completed', CURRENT_TIMESTAMP)"
            )
        )
    migrate(db_url)
    migrate(engine)
    assert current_revision(db_url) == HEAD_REVISION
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM wfe_idempotency_keys")).scalar_one() == 1
        versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
        assert list(versions) == [HEAD_REVISION]


def test_tables_py_and_the_migrations_agree(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "include_name": include_name,
                "include_object": include_object,
                "compare_type": True,
                "target_metadata": metadata,
            },
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_migrations_see_only_our_tables(engine: Engine) -> None:
    """Autogenerate against an empty history must not want to drop Airflow's tables."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_name": include_name,
                "include_object": include_object,
                "target_metadata": metadata,
            },
        )
        diff = compare_metadata(context, metadata)
    assert diff
    assert {d[0] for d in diff} == {"add_table", "add_index"}
    assert all(d[1].name in OUR_TABLES or d[1].table.name in OUR_TABLES for d in diff)


def test_alembic_commands_with_a_url_work_too(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The way Airflow's DB managers drive Alembic: a config with ``sqlalchemy.url``."""
    command.upgrade(alembic_config(url=db_url), "head", sql=True)  # offline: prints the DDL
    ddl = capsys.readouterr().out
    assert "CREATE TABLE wfe_workflow_runs" in ddl
    assert VERSION_TABLE in ddl
    assert current_revision(db_url) is None
    command.upgrade(alembic_config(url=db_url), "head")
    assert current_revision(db_url) == HEAD_REVISION
    command.downgrade(alembic_config(url=db_url), "base")
    assert current_revision(db_url) is None


def test_concurrent_migrations_do_not_collide(db_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        try:
            migrate(db_url)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert current_revision(db_url) == HEAD_REVISION


def test_concurrent_migrating_processes_do_not_collide(db_url: str) -> None:
    from airflow_workflow_engine.persistence.sql.migrate import migrate as migrate_function

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=migrate_function, args=(db_url,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert current_revision(db_url) == HEAD_REVISION


def test_migrate_an_unreachable_database() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://airflow:hunter2@127.0.0.1:{port}/airflow"
    with pytest.raises(DatabaseUnavailableError) as info:
        migrate(url)
    assert "airflow" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(DatabaseUnavailableError):
        current_revision(url)


def test_the_cost_rollup_is_backfilled_from_existing_ledger_rows(engine: Engine) -> None:
    """0004 on a ledger that already holds calls (over days, models, DAGs, no DAG, unknown
    prices, errors): the roll-up equals the ledger's aggregate; downgrade drops only it."""
    from sqlalchemy import func, insert, select

    from airflow_workflow_engine.ai.sql_ledger import SqlLedger
    from airflow_workflow_engine.persistence.sql.tables import ai_calls
    from tests.unit.ai.test_cost_rollup import entry, ledger_aggregate, table_rows

    migrate(engine, "0003")
    old = [entry(i) for i in range(40)]
    with engine.begin() as conn:
        conn.execute(
            insert(ai_calls),
            [{**e.model_dump(), "cost": None if e.cost is None else float(e.cost)} for e in old],
        )
    migrate(engine)
    assert current_revision(engine) == HEAD_REVISION
    backfilled = table_rows(engine)
    assert len(backfilled) > 20
    assert backfilled == ledger_aggregate(engine)

    ledger = SqlLedger(engine)
    for i in range(40, 50):  # new calls add to the backfilled rows
        ledger.record(entry(i))
    assert table_rows(engine) == ledger_aggregate(engine)
    for dims in (("model", "day"), ("dag",), ("day",), ()):
        assert ledger.rollup(dims) == ledger.scan_rollup(dims)

    downgrade(engine, "0003")
    assert "wfe_ai_cost_rollup" not in _tables(engine)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ai_calls)).scalar_one() == 50
    migrate(engine)
    assert table_rows(engine) == ledger_aggregate(engine)
