"""``airflow workflow-engine ...``: the provider's CLI, run as a real ``airflow`` subprocess
against the session's Airflow (see ``fixtures.py``) after real DAG runs.

- ``runs list`` / ``runs show`` agree with the kernel's rows;
- ``costs`` agrees with the AI cost ledger (the hand-wired example DAG calls ``ctx.ai``);
- ``approve`` / ``reject`` write the annotations ``ApprovalSensor`` reads;
- ``rerun`` and ``backfill-rerun`` clear the right task instances and queue the DAG runs
  (``--dry-run`` and a "no" change nothing);
- unknown DAGs, runs and stages, a missing database setting and unmigrated tables exit 1
  with one line that says what exists or what to do, and no traceback.

Airflow's state is read straight from the home's SQLite metadata database: Airflow's
configuration is process-global (this process has a throwaway home of its own), and the
session's api-server serves only the execution API.

The tests of one module share two runs of ``it_fanout`` (split -> [upper, count] -> join) and
run in file order: the dry runs first, then the clears.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_workflow_engine.ai.ledger import money
from airflow_workflow_engine.host.format import money_text
from airflow_workflow_engine.kernel.status import Status
from tests.integration.airflow.fixtures import (
    AIRFLOW_MARKS,
    REPO,
    AirflowEnv,
    DagRunResult,
    airflow_bin,
    airflow_env,
)

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

BUILT = "it_built_dags.py"
FANOUT = "it_fanout"
EXAMPLES = REPO / "dags_examples"
HAND_WIRED = "hand_wired_document"
DOCUMENT = {
    "title": "Release notes",
    "text": "The Airflow pipeline deploys code daily; the budget covers the model cost.",
}


# -- helpers ----------------------------------------------------------------------------------


def cli(
    env: dict[str, str], *args: str, answer: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``airflow workflow-engine <args>`` in a subprocess; ``answer`` goes to its stdin."""
    return subprocess.run(
        [airflow_bin(), "workflow-engine", *args],
        env=env,
        cwd=REPO,
        input=answer,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(done))


@dataclasses.dataclass
class AirflowRun:
    """A DAG run and its task instances, as Airflow's metadata database has them."""

    state: str
    clear_number: int
    logical_date: datetime
    #: ``{task_id: (state, try_number, max_tries)}``
    tis: dict[str, tuple[str | None, int, int]]


def airflow_run(env: AirflowEnv, dag_id: str, run_id: str) -> AirflowRun:
    with closing(sqlite3.connect(env.home / "airflow.db")) as db:
        state, clear_number, logical = db.execute(
            "SELECT state, clear_number, logical_date FROM dag_run WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ).fetchone()
        rows = db.execute(
            "SELECT task_id, state, try_number, max_tries FROM task_instance "
            "WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ).fetchall()
    when = datetime.fromisoformat(logical).replace(tzinfo=timezone.utc)  # stored as naive UTC
    return AirflowRun(state, clear_number, when, {t: (s, n, m) for t, s, n, m in rows})


# -- shared DAG runs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fanout(airflow_env: AirflowEnv) -> tuple[DagRunResult, DagRunResult]:
    """Two finished runs of ``it_fanout``, the first one older."""
    first = airflow_env.run_dag(BUILT, FANOUT, {"text": "a bb ccc"})
    second = airflow_env.run_dag(BUILT, FANOUT, {"text": "dd ee"})
    for result in (first, second):
        assert result.state == "success", result.log[-4000:]
    return first, second


@pytest.fixture(scope="module")
def hand_wired(airflow_env: AirflowEnv) -> DagRunResult:
    """A run of the hand-wired example DAG, whose stages call ``ctx.ai`` (mock models)."""
    examples = dataclasses.replace(
        airflow_env, env={**airflow_env.env, "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES)}
    )
    result = examples.run_dag(str(EXAMPLES / "hand_wired_dag.py"), HAND_WIRED, DOCUMENT)
    assert result.state == "success", result.log[-4000:]
    return result


# -- the definition module -------------------------------------------------------------------


def test_definition_module_is_cheap_to_import() -> None:
    """Airflow imports it on every CLI start: standard library only, no SDKs or SQLAlchemy."""
    code = (
        "import json, sys; before = set(sys.modules); "
        "import airflow_workflow_engine.cli.definition; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    new = json.loads(done.stdout)
    heavy = {"airflow", "sqlalchemy", "alembic", "openai", "boto3", "botocore", "pydantic"}
    assert not [m for m in new if m.split(".")[0] in heavy or m.startswith("google.genai")]
    from airflow_workflow_engine.cli import definition
    from airflow_workflow_engine.hooks.engine import DEFAULT_CONN_ID

    assert definition.DEFAULT_CONN_ID == DEFAULT_CONN_ID
    (group,) = definition.get_workflow_engine_cli_commands()
    assert group.name == "workflow-engine"
    assert sorted(c.name for c in group.subcommands) == [
        "approvals",
        "approve",
        "backfill-rerun",
        "costs",
        "db",
        "events",
        "reject",
        "rerun",
        "runs",
    ]


# -- runs --------------------------------------------------------------------------------------


def test_runs_list_and_show_agree_with_the_kernel(
    airflow_env: AirflowEnv, fanout: tuple[DagRunResult, DagRunResult]
) -> None:
    first, second = fanout
    runs = {r.run_id: airflow_env.kernel_run(r, "it-fanout") for r in fanout}
    listed = ok_json(cli(airflow_env.env, "runs", "list", "--dag-id", FANOUT, "-o", "json"))
    by_key = {row["idempotency_key"]: i for i, row in enumerate(listed)}
    keys = [f"{FANOUT}/{first.run_id}", f"{FANOUT}/{second.run_id}"]
    assert set(keys) <= set(by_key)
    assert by_key[keys[1]] < by_key[keys[0]]  # newest first
    assert {row["dag_id"] for row in listed} == {FANOUT}
    for result in fanout:
        row = listed[by_key[f"{FANOUT}/{result.run_id}"]]
        run = runs[result.run_id]
        assert row["workflow_run_id"] == run.id and row["workflow_id"] == "it-fanout"
        assert row["dag_run_id"] == result.run_id
        assert row["status"] == run.status.value == "COMPLETED"
        assert row["total_cost"] == format(money(run.total_cost).normalize(), "f")
        assert row["total_tokens"] == run.total_tokens
        assert row["completed_at"] is not None

    run = runs[first.run_id]
    shown = ok_json(cli(airflow_env.env, "runs", "show", FANOUT, first.run_id, "-o", "json"))
    assert shown["workflow_run_id"] == run.id and shown["input"] == run.input
    assert shown["error"] is None and shown["status"] == "COMPLETED"
    stages = airflow_env.stages(run.id)
    assert [s["stage_id"] for s in shown["stages"]] == ["split", "upper", "count", "join"]
    for stage in shown["stages"]:
        rec = stages[stage["stage_id"]]
        assert (stage["status"], stage["attempt"], stage["execution_group"]) == (
            rec.status.value,
            rec.attempt,
            rec.execution_group,
        )
        assert stage["duration_seconds"] is not None and stage["output_ref"] is None
    assert shown["stages"][-1]["output_preview"] == '{"text":"A BB CCC","count":3}'
    notes = {a["key"]: a["value"] for a in shown["annotations"]}
    assert notes["trigger.dag_run_id"] == first.run_id

    table = ok(cli(airflow_env.env, "runs", "show", "--workflow-run-id", run.id))
    assert f"Workflow run {run.id} (workflow it-fanout)" in table
    assert f"DAG run:   {FANOUT}/{first.run_id}" in table
    assert "Stages (4):" in table and '{"text":"A BB CCC","count":3}' in table
    assert 'trigger.source = "airflow"' in table


# -- costs ---------------------------------------------------------------------------------


def test_costs_agree_with_the_ledger(airflow_env: AirflowEnv, hand_wired: DagRunResult) -> None:
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    run = airflow_env.kernel_run(hand_wired, HAND_WIRED)
    assert run is not None and run.status == Status.COMPLETED
    data = ok_json(
        cli(
            airflow_env.env,
            "costs",
            "--dag-id",
            HAND_WIRED,
            "--run-id",
            hand_wired.run_id,
            "-o",
            "json",
        )
    )
    ledger = SqlLedger(airflow_env.engine_url)
    try:
        entries = ledger.entries(run.id)
        by_dag = [r for r in ledger.rollup(("dag_id",)) if r.group["dag_id"] == HAND_WIRED]
    finally:
        ledger.close()
    assert data["group_by"] == ["stage_id", "model_key"]
    assert data["filters"]["workflow_run_id"] == run.id
    assert {(r["stage_id"], r["model_key"]) for r in data["rows"]} == {
        ("summarize", "mock:summarizer"),
        ("classify", "mock:classifier"),
    }
    total = data["total"]
    assert total["calls"] == len(entries) == 2
    assert total["input_tokens"] == sum(e.input_tokens for e in entries)
    assert total["output_tokens"] == sum(e.output_tokens for e in entries)
    spent = money(sum((e.cost for e in entries if e.cost is not None), start=0))
    assert total["cost"] == format(spent.normalize(), "f")
    assert total["total_tokens"] == run.total_tokens

    # The DAG's spend over every run, as a plain table, matches the ledger's roll-up.
    plain = ok(
        cli(airflow_env.env, "costs", "--dag-id", HAND_WIRED, "--by", "model", "-o", "plain")
    )
    (dag_total,) = by_dag
    header, *_, last = plain.strip().splitlines()
    assert header.split() == [
        "MODEL", "CALLS", "ERRORS", "INPUT", "TOKENS", "OUTPUT", "TOKENS", "TOTAL", "TOKENS", "COST"
    ]  # fmt: skip
    assert last.split() == [
        "TOTAL",
        str(dag_total.calls),
        str(dag_total.errors),
        str(dag_total.input_tokens),
        str(dag_total.output_tokens),
        str(dag_total.total_tokens),
        f"${dag_total.cost:.6f}",
    ]
    assert "mock:summarizer" in plain and "mock:classifier" in plain
    table = ok(cli(airflow_env.env, "costs", "--dag-id", HAND_WIRED, "--by", "model"))
    assert "mock:summarizer" in table and "TOTAL" in table and f"${dag_total.cost:.6f}" in table


def test_backfill_rerun_dry_run_estimates_from_the_ledger(
    airflow_env: AirflowEnv, hand_wired: DagRunResult
) -> None:
    """``--dry-run`` shows what the stages to rerun spent last time (summarize and classify
    are downstream of extract), from the ledger; nothing is cleared."""
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    examples = {**airflow_env.env, "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES)}
    run = airflow_env.kernel_run(hand_wired, HAND_WIRED)
    before = airflow_run(airflow_env, HAND_WIRED, hand_wired.run_id)
    day = before.logical_date.isoformat()
    ledger = SqlLedger(airflow_env.engine_url)
    try:
        spent, tokens = ledger.totals(run.id)
    finally:
        ledger.close()
    assert spent > 0
    said = ok(
        cli(
            examples,
            "backfill-rerun",
            HAND_WIRED,
            "--from-stage",
            "extract",
            "--start-date",
            day,
            "--end-date",
            day,
            "--dry-run",
        )
    )
    assert f"[1/1] {hand_wired.run_id}: " in said
    assert f"last time {money_text(spent)}, {tokens} tokens" in said
    assert "Planning" in said and "1/1" in said  # the progress bar's final state
    assert (
        f"Estimated AI cost (what these stages spent last time): {money_text(spent)}, "
        f"{tokens} tokens." in said
    )
    after = airflow_run(airflow_env, HAND_WIRED, hand_wired.run_id)
    assert after == before


# -- approvals -----------------------------------------------------------------------------


def test_approve_and_reject_write_approval_annotations(
    airflow_env: AirflowEnv, fanout: tuple[DagRunResult, DagRunResult]
) -> None:
    second = fanout[1]
    run = airflow_env.kernel_run(second, "it-fanout")
    said = ok(
        cli(airflow_env.env, "approve", FANOUT, second.run_id, "--by", "alice", "--comment", "ok")
    )
    assert f"Approved DAG run {FANOUT}/{second.run_id} (workflow run {run.id}" in said
    ok(
        cli(
            airflow_env.env,
            "reject",
            "--workflow-run-id",
            run.id,
            "--by",
            "bob",
            "--stage-id",
            "join",
        )
    )
    with airflow_env.store() as store:
        notes = store.list_annotations(run.id, key_prefix="approval.")
    assert [(a.key, a.value, a.actor.id) for a in notes] == [
        ("approval.status", "approved", "alice"),
        ("approval.approver", "alice", "alice"),
        ("approval.comment", "ok", "alice"),
        ("approval.status", "rejected", "bob"),
        ("approval.approver", "bob", "bob"),
        ("approval.stage_id", "join", "bob"),
    ]
    assert {a.actor.kind for a in notes} == {"user"}


# -- rerun ---------------------------------------------------------------------------------


def test_rerun_dry_run_and_no_change_nothing(
    airflow_env: AirflowEnv, fanout: tuple[DagRunResult, DagRunResult]
) -> None:
    first = fanout[0]
    before = airflow_run(airflow_env, FANOUT, first.run_id)
    assert before.state == "success"
    args = ["rerun", FANOUT, first.run_id, "--from-stage", "upper"]

    dry = ok(cli(airflow_env.env, *args, "--only", "--dry-run"))
    assert "Rerun from stage 'upper' only: 1 task instance(s) to clear" in dry
    assert "upper: COMPLETED, attempt 1" in dry and "join" not in dry.split("to clear:")[1]
    assert "Dry run: nothing was cleared." in dry

    refused = ok(cli(airflow_env.env, *args, answer="n\n"))
    assert "and everything downstream: 2 task instance(s) to clear" in refused
    lines = refused.splitlines()
    assert any(line.split()[:2] == ["upper", "success"] for line in lines)
    assert any(line.split()[:2] == ["join", "success"] for line in lines)
    assert "Cancelled, nothing was cleared." in refused
    assert airflow_run(airflow_env, FANOUT, first.run_id) == before


def test_rerun_clears_the_stage_and_downstream(
    airflow_env: AirflowEnv, fanout: tuple[DagRunResult, DagRunResult]
) -> None:
    first = fanout[0]
    before = airflow_run(airflow_env, FANOUT, first.run_id)
    said = ok(cli(airflow_env.env, "rerun", FANOUT, first.run_id, "--from-stage", "upper", "-y"))
    assert f"Cleared 2 task instance(s) of DAG run {FANOUT}/{first.run_id}" in said
    assert "the DAG run is queued" in said
    after = airflow_run(airflow_env, FANOUT, first.run_id)
    assert after.state == "queued" and after.clear_number == before.clear_number + 1
    assert {t: s for t, (s, _, _) in after.tis.items()} == {
        "split": "success",
        "upper": None,
        "count": "success",
        "join": None,
    }
    # Airflow's clear: one more try allowed for the cleared tasks, none for the others.
    assert after.tis["upper"][2] == before.tis["upper"][2] + 1
    assert after.tis["split"] == before.tis["split"]
    # The engine is left alone: the stage task reruns its stage when it runs again.
    run = airflow_env.kernel_run(first, "it-fanout")
    assert run.status == Status.COMPLETED
    assert airflow_env.stages(run.id)["upper"].status == Status.COMPLETED


def test_backfill_rerun_over_a_date_range(
    airflow_env: AirflowEnv, fanout: tuple[DagRunResult, DagRunResult]
) -> None:
    first, second = fanout
    start = airflow_run(airflow_env, FANOUT, first.run_id).logical_date
    end = airflow_run(airflow_env, FANOUT, second.run_id).logical_date
    said = ok(
        cli(
            airflow_env.env,
            "backfill-rerun",
            FANOUT,
            "--from-stage",
            "split",
            "--start-date",
            start.isoformat(),
            "--end-date",
            end.isoformat(),
            "-y",
        )
    )
    assert f"DAG {FANOUT}: 2 DAG run(s) with a logical date from" in said
    assert f"[1/2] {first.run_id}: cleared 4 task(s); DAG run queued" in said
    assert f"[2/2] {second.run_id}: cleared 4 task(s); DAG run queued" in said
    assert "Cleared 8 task instance(s) in 2 DAG run(s) of it_fanout." in said
    # No --wait: the summary names the queued runs; the bar ends full.
    assert "Summary: 0 rerun, 0 skipped, 0 failed, 2 still running." in said
    assert f"  running  {first.run_id}" in said
    assert "Clearing" in said and "2/2" in said
    assert not list((airflow_env.home / "workflow_engine").glob("backfill-rerun/*.json"))
    for result in fanout:
        after = airflow_run(airflow_env, FANOUT, result.run_id)
        assert after.state == "queued"
        assert {s for s, _, _ in after.tis.values()} == {None}


# -- errors ---------------------------------------------------------------------------------


def _fails(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), done.stderr[-3000:]
    for text in expected:
        assert text in last, last
    return last


def test_unknown_dag_names_the_known_ones(airflow_env: AirflowEnv) -> None:
    done = cli(airflow_env.env, "rerun", "no_such_dag", "x", "--from-stage", "split", "-y")
    _fails(done, "DAG 'no_such_dag' is not in Airflow's database. Known DAGs:", FANOUT)


def test_unknown_dag_run_names_the_newest_runs(
    airflow_env: AirflowEnv, fanout: tuple[DagRunResult, DagRunResult]
) -> None:
    done = cli(airflow_env.env, "rerun", FANOUT, "no_such_run", "--from-stage", "split", "-y")
    _fails(done, f"DAG '{FANOUT}' has no DAG run 'no_such_run'. Its newest runs:", fanout[1].run_id)


def test_unknown_stage_names_the_stages(
    airflow_env: AirflowEnv, fanout: tuple[DagRunResult, DagRunResult]
) -> None:
    done = cli(airflow_env.env, "rerun", FANOUT, fanout[0].run_id, "--from-stage", "nope", "-y")
    _fails(done, f"DAG '{FANOUT}' has no stage 'nope'. Its stages: split, upper, count, join.")


def test_dag_run_without_workflow_run(
    airflow_env: AirflowEnv, fanout: tuple[DagRunResult, DagRunResult]
) -> None:
    done = cli(airflow_env.env, "runs", "show", FANOUT, "no_such_run")
    _fails(done, f"DAG run '{FANOUT}/no_such_run' has no workflow run", fanout[1].run_id)


def test_missing_database_setting(airflow_env: AirflowEnv) -> None:
    env = {
        k: v
        for k, v in airflow_env.env.items()
        if k != "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN"
    }
    done = cli(env, "runs", "list")
    _fails(done, "no database configured", "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN")


def test_tables_not_migrated(airflow_env: AirflowEnv, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    env = {**airflow_env.env, "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN": url}
    current = ok(cli(env, "db", "current"))
    assert "Current revision: -" in current and "the tables are missing" in current
    _fails(cli(env, "runs", "list"), "tables", "are missing", "migrate")
    migrated = ok(cli(env, "db", "migrate"))
    assert "The workflow engine's tables are at revision" in migrated
    assert "(was not created; newest" in migrated


# -- a connection stored in Airflow's database -------------------------------------------------


def test_connection_added_with_airflow_connections_add_is_used_by_tasks_and_the_cli(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    """``workflow_engine_default`` made with ``airflow connections add`` (stored in Airflow's
    database, like one made in the UI or through the REST API): a stage task writes there,
    and the CLI reads there, both ahead of ``[workflow_engine] sql_alchemy_conn`` (which this
    Airflow also sets)."""
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    stored = tmp_path / "stored.db"
    env = airflow_env.env
    assert "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN" in env
    conn = json.dumps({"conn_type": "sqlite", "host": str(stored)})
    added = subprocess.run(
        [airflow_bin(), "connections", "add", "workflow_engine_default", "--conn-json", conn],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr[-3000:]
    try:
        migrated = ok(cli(env, "db", "migrate"))
        assert f"SQLite database '{stored}'" in migrated
        result = airflow_env.run_dag("it_hand_dag.py", "it_hand", {"text": "stored connection"})
        assert result.state == "success", result.log[-4000:]
        key = f"it_hand/{result.run_id}"
        with SqlPersistence(f"sqlite:///{stored}") as store:
            run = store.get_run_by_idempotency_key(key)
        assert run is not None and run.status == Status.COMPLETED  # the task wrote there
        assert airflow_env.kernel_run(result, "it_hand") is None  # not to the option's database
        shown = ok_json(cli(env, "runs", "show", "it_hand", result.run_id, "-o", "json"))
        assert shown["workflow_run_id"] == run.id and shown["status"] == "COMPLETED"
        listed = ok_json(cli(env, "runs", "list", "--dag-id", "it_hand", "-o", "json"))
        assert [r["workflow_run_id"] for r in listed] == [run.id]
    finally:
        removed = subprocess.run(
            [airflow_bin(), "connections", "delete", "workflow_engine_default"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert removed.returncode == 0, removed.stderr[-3000:]
