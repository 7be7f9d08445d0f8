"""The example DAGs (``dags_examples/``) and the Airflow demo.

- every example DAG file imports cleanly into Airflow's DagBag, cheaply (no AI SDK, boto3 or
  SQL models);
- the hand-wired example runs green with ``dag.test(use_executor=True)`` (real task
  processes), and its model calls land in the ledger labelled with the Airflow task;
- ``python -m airflow_workflow_engine.demo`` starts its own Airflow, runs the document
  pipeline to the end (approval included), prints stages, output and costs, and stops every
  process it started.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_workflow_engine.kernel.status import Status
from tests.integration.airflow.fixtures import (
    AIRFLOW_MARKS,
    REPO,
    AirflowEnv,
    airflow_env,
    free_port,
)

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

EXAMPLES = REPO / "dags_examples"
EXAMPLE_DAGS = {
    "document_pipeline_dag.py": "document_pipeline",
    "hand_wired_dag.py": "hand_wired_document",
    "scheduled_dag.py": "daily_digest",
}
DOCUMENT = {
    "title": "Release notes",
    "text": "The Airflow pipeline deploys code daily; the budget covers the model cost.",
}


def _with_examples(env: AirflowEnv) -> AirflowEnv:
    """The session's Airflow with ``dags_examples/`` as its DAG folder (``dag.test`` only
    runs DAGs of the configured bundle), for the DAG runs of one test."""
    return dataclasses.replace(env, env={**env.env, "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES)})


def test_example_dags_import_without_errors(airflow_env: AirflowEnv) -> None:
    found = airflow_env.import_errors(EXAMPLES)
    assert found["import_errors"] == {}
    assert found["dags"] == sorted(EXAMPLE_DAGS.values())


@pytest.mark.parametrize("name", sorted(EXAMPLE_DAGS))
def test_example_dag_files_stay_cheap_to_parse(name: str) -> None:
    code = f"""
import json, runpy, sys, time
import airflow.sdk
before = set(sys.modules)
t = time.perf_counter()
runpy.run_path({str(EXAMPLES / name)!r})
print(json.dumps({{"elapsed": time.perf_counter() - t, "new": sorted(set(sys.modules) - before)}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    heavy = ("openai", "anthropic", "boto3", "botocore", "sqlalchemy", "alembic")
    new: list[str] = data["new"]
    assert not [m for m in new if m.split(".")[0] in heavy or m.startswith("google.genai")]
    assert not [m for m in new if m.startswith("airflow_workflow_engine.persistence")]
    assert data["elapsed"] < 3.0, f"parsing {name} took {data['elapsed']:.2f}s"


def test_scheduled_example_is_daily_with_templated_day() -> None:
    import runpy

    dag = runpy.run_path(str(EXAMPLES / "scheduled_dag.py"))["dag"]
    assert dag.dag_id == "daily_digest"
    assert dag.schedule == "@daily"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.task_dict["collect"].config == {"day": "{{ ds }}"}
    # Every input field has a default: scheduled and backfilled runs need no conf.
    assert all(p.value is not None for p in dag.params.values())


def test_hand_wired_example_runs_green(airflow_env: AirflowEnv) -> None:
    result = _with_examples(airflow_env).run_dag(
        str(EXAMPLES / "hand_wired_dag.py"), "hand_wired_document", DOCUMENT
    )
    assert result.state == "success", result.log[-4000:]
    assert {t: result.ti_state(t) for t in result.tis} == dict.fromkeys(
        ("extract", "check_length", "summarize", "classify", "report"), "success"
    )
    run = airflow_env.kernel_run(result, "hand_wired_document")
    assert run is not None and run.status == Status.COMPLETED
    stages = airflow_env.stages(run.id)
    assert {s: r.execution_group for s, r in stages.items()} == {
        "extract": 0,
        "summarize": 1,
        "classify": 1,
    }
    assert run.output["classify"]["category"] == "engineering"
    # The plain tasks read the stage tasks' XCom summaries.
    assert result.xcom["check_length"] == len(DOCUMENT["text"].split())
    assert "summarize COMPLETED, classify COMPLETED; AI: " in result.xcom["report"]
    # ctx.ai worked in the task processes; each call is a ledger row labelled with the
    # Airflow DAG, task and try, and the stage metrics roll up from the ledger.
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    ledger = SqlLedger(airflow_env.engine_url)
    try:
        rows = ledger.entries(run.id)
    finally:
        ledger.close()
    assert sorted((r.dag_id, r.task_id, r.stage_id, r.attempt) for r in rows) == [
        ("hand_wired_document", "classify", "classify", 1),
        ("hand_wired_document", "summarize", "summarize", 1),
    ]
    assert {r.model_key for r in rows} == {"mock:summarizer", "mock:classifier"}
    tokens = {r.stage_id: r.total_tokens for r in rows}
    assert stages["summarize"].metrics["ai_tokens"] == tokens["summarize"]


def _processes_in(home: Path) -> list[int]:
    """Pids of live processes whose ``AIRFLOW_HOME`` is ``home`` (Linux ``/proc``)."""
    wanted = f"AIRFLOW_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def test_airflow_demo_end_to_end(tmp_path: Path) -> None:
    """``python -m airflow_workflow_engine.demo``: a real Airflow, start to stop (~2 min)."""
    home = tmp_path / "demo-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_workflow_engine.demo",
            "--home",
            str(home),
            "--port",
            str(free_port()),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in home.glob("*.log"))
    assert done.returncode == 0, f"{out[-6000:]}\n{done.stderr[-4000:]}\n{logs}"
    assert "Airflow UI: http://127.0.0.1:" in out and "login: admin / " in out
    assert "/workflow-engine/runs" in out and "its workflow run: http://127.0.0.1:" in out
    for stage_id in ("extract", "summarize", "classify", "embed", "publish"):
        assert f"] {stage_id}" in out
    assert "approving workflow run" in out
    assert "approval.status = 'approved'" in out
    assert "DAG run success" in out and "Run COMPLETED" in out
    assert '"category": "engineering"' in out
    assert "total                           4         " in out  # the cost table's total line
    assert "embed      mock:embedder        2 " in out  # the AI batch, collected in the triggerer
    assert "document_pipeline/summarize try 1" in out  # ledger rows carry the Airflow task
    assert "stopped api-server, scheduler, dag-processor, triggerer" in out
    # Nothing it started is left running.
    assert _processes_in(home.resolve()) == []
