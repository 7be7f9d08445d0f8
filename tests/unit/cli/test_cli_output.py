"""``airflow workflow-engine`` listings in every ``-o`` format, parsed by Airflow's own CLI
parser and run in-process against a real SQLite engine database (no Airflow metadata DB: the
engine's connection comes from ``AIRFLOW_CONN_WORKFLOW_ENGINE_DEFAULT``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow")

import yaml

from airflow_workflow_engine.ai.ledger import LedgerEntry
from airflow_workflow_engine.ai.sql_ledger import SqlLedger
from airflow_workflow_engine.host.runs import run_key
from airflow_workflow_engine.kernel.commands import RunCreate
from airflow_workflow_engine.persistence.sql import SqlPersistence
from airflow_workflow_engine.testing import create_test_kernel
from tests.backends import _sqlite_template
from tests.workflows import ALL_WORKFLOWS

#: Small enough that ``str(float)`` would print ``4.36e-08``.
TINY = Decimal("0.0000000436")


@pytest.fixture
def engine_db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """Two workflow runs of DAG ``d`` and two ledger rows, in a migrated SQLite file."""
    path = tmp_path / "wfe.db"
    shutil.copyfile(_sqlite_template(request), path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("AIRFLOW_CONN_WORKFLOW_ENGINE_DEFAULT", url)
    store = SqlPersistence(url)
    kit = create_test_kernel(ALL_WORKFLOWS, persistence=store)
    ids = []
    for rid in ("r1", "r2"):
        created = kit.kernel.dispatch(
            RunCreate(
                workflow_id="doc",
                input={"title": "t", "body": "x"},
                idempotency_key=run_key("d", rid),
            )
        )
        ids.append(str(created.workflow_run_id))
        kit.clock.advance(1)
    ledger = SqlLedger(store.engine)
    for i, cost in enumerate((TINY, Decimal("1.25"))):
        ledger.record(
            LedgerEntry(
                call_type="text",
                provider="openai",
                model_key="gpt-mini",
                input_tokens=10 + i,
                output_tokens=5,
                cost=cost,
                workflow_run_id=ids[i],
                stage_id="summarize",
                dag_id="d",
            )
        )
    try:
        yield {"ids": ids, "url": url}
    finally:
        store.close()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Parses ``airflow workflow-engine <argv>`` with Airflow's parser and runs it."""
    from airflow.cli import cli_parser

    args = cli_parser.get_parser().parse_args(["workflow-engine", *argv])
    capsys.readouterr()
    args.func(args)
    return capsys.readouterr().out


LISTINGS = [
    ("runs", "list"),
    ("costs",),
    ("costs", "--by", "model"),
    ("approvals", "list"),
    ("events", "dlq"),
]


def test_every_listing_takes_airflows_output_choices() -> None:
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    for argv in LISTINGS:
        for fmt in ("table", "json", "yaml", "plain"):
            args = parser.parse_args(["workflow-engine", *argv, "-o", fmt])
            assert args.output == fmt
        with pytest.raises(SystemExit):
            parser.parse_args(["workflow-engine", *argv, "--output", "csv"])


def test_runs_list_json_yaml_plain_table(
    engine_db: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = engine_db["ids"]
    as_json = json.loads(run_cli(capsys, "runs", "list", "-o", "json"))
    assert [r["workflow_run_id"] for r in as_json] == ids[::-1]  # newest first
    assert {r["dag_run_id"] for r in as_json} == {"r1", "r2"}
    assert all(isinstance(r["total_tokens"], int) for r in as_json)
    assert all(r["total_cost"] == "0" for r in as_json)  # a decimal string, not a float
    as_yaml = yaml.safe_load(run_cli(capsys, "runs", "list", "--output", "yaml"))
    assert as_yaml == as_json
    plain = run_cli(capsys, "runs", "list", "-o", "plain").splitlines()
    assert plain[0].split()[:2] == ["WORKFLOW", "RUN"]
    assert len(plain) == 3 and all(any(i in line for line in plain) for i in ids)
    table = run_cli(capsys, "runs", "list")
    assert "WORKFLOW RUN" in table and "d/r1" in table and "d/r2" in table
    assert "No workflow runs match." in run_cli(capsys, "runs", "list", "--dag-id", "zz")
    assert json.loads(run_cli(capsys, "runs", "list", "--dag-id", "zz", "-o", "json")) == []


def test_costs_money_is_exact_in_json_and_yaml(
    engine_db: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(run_cli(capsys, "costs", "--by", "run", "-o", "json"))
    costs = sorted(r["cost"] for r in data["rows"])
    assert costs == ["0.0000000436", "1.25"]
    assert data["total"]["cost"] == "1.2500000436"
    assert data["total"]["calls"] == 2
    assert yaml.safe_load(run_cli(capsys, "costs", "--by", "run", "-o", "yaml")) == data
    plain = run_cli(capsys, "costs", "--by", "model", "-o", "plain")
    header, *body = plain.splitlines()
    assert header.split()[:2] == ["MODEL", "CALLS"]
    assert body[0].split()[:2] == ["gpt-mini", "2"] and body[-1].split()[0] == "TOTAL"
    assert "$1.2500" in plain
    table = run_cli(capsys, "costs", "--by", "model")
    assert "gpt-mini" in table and "TOTAL" in table
    assert "No AI calls match." in run_cli(capsys, "costs", "--dag-id", "zz")


def test_approvals_and_events_listings(
    engine_db: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert json.loads(run_cli(capsys, "approvals", "list", "-o", "json")) == []
    assert yaml.safe_load(run_cli(capsys, "approvals", "list", "-o", "yaml")) == []
    assert "No workflow run awaits approval." in run_cli(capsys, "approvals", "list", "-o", "plain")
    run = engine_db["ids"][0]
    events = json.loads(run_cli(capsys, "events", "list", "--workflow-run-id", run, "-o", "json"))
    assert events and events[0]["workflow_run_id"] == run
    assert events[0]["type"]
    assert (
        yaml.safe_load(run_cli(capsys, "events", "list", "--workflow-run-id", run, "-o", "yaml"))
        == events
    )
    plain = run_cli(capsys, "events", "list", "--workflow-run-id", run, "-o", "plain")
    assert plain.splitlines()[0].split()[:3] == ["RUN", "SEQ", "TYPE"]
    assert events[0]["type"] in plain
    table = run_cli(capsys, "events", "list", "--workflow-run-id", run)
    assert "OCCURRED" in table and run in table


def test_runs_show_yaml_matches_json(
    engine_db: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    as_json = json.loads(run_cli(capsys, "runs", "show", "d", "r1", "-o", "json"))
    assert as_json["dag_run_id"] == "r1"
    assert yaml.safe_load(run_cli(capsys, "runs", "show", "d", "r1", "-o", "yaml")) == as_json
