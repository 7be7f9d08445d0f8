"""The DAG-run mapping, without Airflow: run keys, clear versus retry, task verdicts."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from airflow_workflow_engine.host.runs import (
    first_try_since_clear,
    is_stage_operator,
    is_stage_task,
    run_key,
    run_key_candidates,
    split_run_key,
    task_verdict,
    was_cleared,
)
from airflow_workflow_engine.kernel.commands import JobExecuteResult


def test_run_key_round_trips() -> None:
    assert run_key("d", "manual__1") == "d/manual__1"
    assert run_key("d", "r", "g") == "d/r/g"
    assert split_run_key("d/r/g") == ("d", "r", "g")
    assert split_run_key("d/r") == ("d", "r", None)
    assert split_run_key("no-slash") == (None, None, None)
    assert split_run_key(None) == (None, None, None)


def test_run_key_candidates_are_most_specific_first() -> None:
    assert run_key_candidates("d", "r", "a.b.stage") == ["d/r/a.b", "d/r/a", "d/r"]
    assert run_key_candidates("d", "r", "stage") == ["d/r"]


@pytest.mark.parametrize(
    ("max_tries", "retries", "attempt", "finished", "cleared"),
    [
        (2, 2, 1, True, False),  # never cleared: first try is 1
        (None, 2, 1, True, False),  # no max_tries: nothing to detect
        (3, 2, 1, True, True),  # cleared after try 1: a finished row of try 1 is replaced
        (3, 2, 2, True, False),  # a row of this series of tries: a duplicate delivery
        (3, 2, 1, False, False),  # not finished: nothing to rerun
    ],
)
def test_clear_versus_retry(
    max_tries: int | None, retries: int, attempt: int, finished: bool, cleared: bool
) -> None:
    assert (
        was_cleared(
            stage_finished=finished, stage_attempt=attempt, max_tries=max_tries, retries=retries
        )
        is cleared
    )


def test_first_try_since_clear() -> None:
    # Airflow's clear sets max_tries = try_number + retries.
    assert first_try_since_clear(max_tries=3, retries=3) == 1
    assert first_try_since_clear(max_tries=2 + 3, retries=3) == 3


def _result(**fields: object) -> JobExecuteResult:
    base: dict[str, object] = {"workflow_run_id": "r1", "stage_id": "s", "attempt": 1}
    return JobExecuteResult.model_validate({**base, **fields})


def test_task_verdicts() -> None:
    assert task_verdict(_result(outcome="completed"), "s").action == "succeed"
    assert task_verdict(_result(outcome="completed"), "s").transition
    assert task_verdict(_result(outcome="suspended"), "s").action == "wait"
    retry = task_verdict(_result(outcome="failed", retry=True, error="boom"), "s")
    assert retry.action == "retry" and "attempt 1 failed: boom" in retry.message
    failed = task_verdict(_result(outcome="failed", error="boom"), "s")
    assert failed.action == "fail" and failed.transition and "failed: boom" in failed.message
    ghost = task_verdict(_result(outcome="completed", ghost=True), "s")
    assert ghost.action == "fail" and not ghost.transition and "ghost" in ghost.message
    gone = task_verdict(_result(outcome="cancelled", error="run cancelled"), "s")
    assert gone.action == "fail" and "no longer active (run cancelled)" in gone.message


def test_stage_tasks_are_recognised_without_importing_operators() -> None:
    assert is_stage_task(SimpleNamespace(operator="AsyncBatchStageOperator"))
    assert is_stage_task(SimpleNamespace(task=SimpleNamespace(task_type="StageOperator")))
    assert not is_stage_task(SimpleNamespace(operator="PythonOperator"))
    assert not is_stage_task(SimpleNamespace())
    assert not is_stage_operator(SimpleNamespace())


def test_host_never_imports_airflow() -> None:
    code = (
        "import sys, airflow_workflow_engine.host.runs, airflow_workflow_engine.host.wait, "
        "airflow_workflow_engine.host.queries, airflow_workflow_engine.host.derive, "
        "airflow_workflow_engine.host.approvals, airflow_workflow_engine.host.ports, "
        "airflow_workflow_engine.host.format, airflow_workflow_engine.host.links\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
