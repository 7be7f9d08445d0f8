"""DAGs run by Airflow: ``dag.test(use_executor=True)`` with the LocalExecutor, a real
execution API server and a real triggerer (see ``fixtures.py``).

Each test checks Airflow's view (task states, try numbers, XCom) against the kernel's rows.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_workflow_engine.kernel.status import Status
from tests.integration.airflow.fixtures import (
    AIRFLOW_MARKS,
    BAD_DAGS,
    AirflowEnv,
    airflow_env,
    policy_registered,
)

pytestmark = AIRFLOW_MARKS
__all__ = ["airflow_env"]  # the fixture, imported so pytest finds it in this module

BUILT = "it_built_dags.py"
HAND = "it_hand_dag.py"


def _statuses(stages: dict[str, Any]) -> dict[str, str]:
    return {sid: rec.status.value for sid, rec in stages.items()}


def test_sync_stages(airflow_env: AirflowEnv) -> None:
    result = airflow_env.run_dag(BUILT, "it_linear", {"name": "ada"})
    assert result.state == "success", result.log[-4000:]
    assert {t: result.try_number(t) for t in result.tis} == {"greet": 1, "shout": 1}
    run = airflow_env.kernel_run(result, "it-linear")
    assert run is not None and run.status == Status.COMPLETED
    assert run.input == {"name": "ada", "times": 2, "style": None, "tags": []}
    assert run.config["shout"] == {"suffix": "?"}
    assert run.output == {"text": "HELLO ADA!!?", "length": 12}
    stages = airflow_env.stages(run.id)
    assert _statuses(stages) == {"greet": "COMPLETED", "shout": "COMPLETED"}
    summary = result.xcom["shout"]
    assert summary["status"] == "COMPLETED" and summary["run_status"] == "COMPLETED"
    assert summary["attempt"] == 1 and summary["output_preview"] == (
        '{"text":"HELLO ADA!!?","length":12}'
    )
    assert result.xcom["greet"]["run_status"] == "RUNNING"
    with airflow_env.store() as store:
        notes = {a.key: a.value for a in store.list_annotations(run.id)}
    # The stage ran in a real task process: Airflow had hidden its own database from it.
    assert notes["test.airflow_sql_alchemy_conn"] == "airflow-db-not-allowed:///"
    assert notes["trigger.source"] == "airflow"
    assert notes["trigger.dag_run_id"] == result.run_id


def test_parallel_group(airflow_env: AirflowEnv) -> None:
    result = airflow_env.run_dag(BUILT, "it_fanout", {"text": "a bb ccc"})
    assert result.state == "success", result.log[-4000:]
    assert set(result.tis) == {"split", "upper", "count", "join"}
    run = airflow_env.kernel_run(result, "it-fanout")
    assert run.status == Status.COMPLETED and run.output == {"text": "A BB CCC", "count": 3}
    stages = airflow_env.stages(run.id)
    assert {sid: rec.execution_group for sid, rec in stages.items()} == {
        "split": 0,
        "upper": 1,
        "count": 1,
        "join": 2,
    }
    assert all(rec.attempt == 1 for rec in stages.values())


def test_deferrable_batch_stage(airflow_env: AirflowEnv) -> None:
    result = airflow_env.run_dag(BUILT, "it_batch", {"items": ["x", "yy", "zzz"]})
    assert result.state == "success", result.log[-4000:]
    assert result.try_number("embed") == 1
    run = airflow_env.kernel_run(result, "it-batch")
    assert run.status == Status.COMPLETED
    assert run.output == {"total": 6, "batch_id": f"batch-{run.id[:8]}"}
    embed = airflow_env.stages(run.id)["embed"]
    assert embed.status == Status.COMPLETED and embed.attempt == 1
    assert airflow_env.blob_count(run.id, "embed", "submissions") == 1
    assert airflow_env.blob_count(run.id, "embed", "polls") == 2
    log = airflow_env.task_log(result, "embed")
    assert "deferring" in log
    trigger_logs = list(
        (airflow_env.home / "logs" / "dag_id=it_batch" / f"run_id={result.run_id}").glob(
            "task_id=embed/*trigger*"
        )
    )
    assert trigger_logs, "the triggerer never ran the trigger"
    trigger_log = "\n".join(p.read_text() for p in trigger_logs)
    assert "polling stage embed" in trigger_log and "Trigger fired event" in trigger_log
    assert result.xcom["embed"]["status"] == "COMPLETED"


def test_batch_stage_sync_fallback_and_resume(airflow_env: AirflowEnv) -> None:
    """deferrable=False polls in the task; 'ready without output' re-runs execute."""
    result = airflow_env.run_dag(BUILT, "it_batch_sync", {"items": ["ab"]})
    assert result.state == "success", result.log[-4000:]
    run = airflow_env.kernel_run(result, "it-batch")
    assert run.status == Status.COMPLETED and run.output["total"] == 2
    assert airflow_env.blob_count(run.id, "embed", "submissions") == 1
    assert airflow_env.blob_count(run.id, "embed", "resumes") == 1
    assert "deferring" not in airflow_env.task_log(result, "embed")


def test_retries_are_attempts(airflow_env: AirflowEnv) -> None:
    result = airflow_env.run_dag(BUILT, "it_flaky", {})
    assert result.state == "success", result.log[-4000:]
    assert result.try_number("flaky") == 3
    run = airflow_env.kernel_run(result, "it-flaky")
    assert run.status == Status.COMPLETED and run.output == {"attempt": 3}
    assert airflow_env.stages(run.id)["flaky"].attempt == 3
    assert result.xcom["flaky"]["attempt"] == 3
    with airflow_env.store() as store:
        failures = [e.payload for e in store.list_events(run.id) if e.type == "stage:failed"]
    assert [(f["attempt"], f["will_retry"]) for f in failures] == [(1, True), (2, True)]
    log = airflow_env.task_log(result, "flaky")
    assert "transient failure on attempt 1" in log and "Airflow retries the task" in log


def test_non_retryable_failure_is_not_retried(airflow_env: AirflowEnv) -> None:
    result = airflow_env.run_dag(BUILT, "it_fatal", {})
    assert result.state == "failed"
    assert result.ti_state("fatal") == "failed" and result.try_number("fatal") == 1
    run = airflow_env.kernel_run(result, "it-fatal")
    assert run.status == Status.FAILED
    assert "the input can never work" in (run.error_message or "")
    assert "Stage 'fatal' failed: the input can never work" in airflow_env.task_log(result, "fatal")


def test_ghost_result_is_discarded_and_not_retried(airflow_env: AirflowEnv) -> None:
    result = airflow_env.run_dag(BUILT, "it_ghost", {})
    assert result.state == "failed"
    assert result.try_number("ghost") == 1  # retries=2, yet no retry
    run = airflow_env.kernel_run(result, "it-ghost")
    assert run.status == Status.CANCELLED
    stage = airflow_env.stages(run.id)["ghost"]
    assert stage.status == Status.CANCELLED and stage.output is None
    assert "ghost" in airflow_env.task_log(result, "ghost")


def test_hand_wired_dag_with_a_plain_task(airflow_env: AirflowEnv) -> None:
    result = airflow_env.run_dag(HAND, "it_hand", {"text": "hello"})
    assert result.state == "success", result.log[-4000:]
    assert result.xcom["note"] == "measure is COMPLETED"
    run = airflow_env.kernel_run(result, "it_hand")
    assert run.status == Status.COMPLETED
    assert run.output == {"report": "'hello' has 5 characters"}
    stages = airflow_env.stages(run.id)
    assert {sid: rec.execution_group for sid, rec in stages.items()} == {
        "measure": 0,
        "report": 1,
    }


def test_bad_conf_fails_naming_the_field_and_writes_nothing(airflow_env: AirflowEnv) -> None:
    result = airflow_env.run_dag(HAND, "it_hand", {"text": "x"})
    assert result.state == "failed"
    assert result.ti_state("measure") == "failed" and result.try_number("measure") == 1
    assert result.ti_state("report") == "upstream_failed"
    log = airflow_env.task_log(result, "measure")
    assert "Invalid input for workflow 'it_hand': text: String should have at least 3" in log
    assert airflow_env.kernel_run(result, "it_hand") is None
    from sqlalchemy import text

    with airflow_env.store() as store, store.engine.connect() as conn:
        keys = conn.execute(
            text("SELECT count(*) FROM wfe_idempotency_keys WHERE key = :k"),
            {"k": f"it_hand/{result.run_id}"},
        ).scalar()
    assert keys == 0


def test_build_dag_params_reject_bad_conf_at_trigger_time(airflow_env: AirflowEnv) -> None:
    """With params from the input model, Airflow refuses the conf before any task runs."""
    result = airflow_env.run_dag(BUILT, "it_linear", {"name": "ada", "times": 99})
    assert result.error is not None and "times" in result.error, result.log[-3000:]


def test_mis_wired_dag_is_an_import_error(airflow_env: AirflowEnv) -> None:
    if not policy_registered():
        pytest.skip(
            "the airflow.policy entry point is not installed (pyproject.toml needs "
            "[project.entry-points.'airflow.policy'] workflow_engine = "
            "'airflow_workflow_engine.dag'); the check then runs when a stage task executes"
        )
    found = airflow_env.import_errors(BAD_DAGS)
    assert found["dags"] == []
    (message,) = found["import_errors"].values()
    assert "DAG 'it_bad_wiring': stage task 'report' (stage 'report') depends on" in message
    assert "Chain them: measure >> report" in message


def test_engine_tables_live_in_their_own_file(airflow_env: AirflowEnv) -> None:
    """`airflow db migrate` put the wfe_ tables where [workflow_engine] points, not in
    Airflow's database."""
    import sqlite3

    def tables(path: str) -> set[str]:
        with sqlite3.connect(path) as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    engine = tables(str(airflow_env.home / "engine.db"))
    airflow = tables(str(airflow_env.home / "airflow.db"))
    assert {"wfe_workflow_runs", "wfe_workflow_stages", "wfe_alembic_version"} <= engine
    assert not {t for t in airflow if t.startswith("wfe_")}
    assert "dag_run" in airflow
