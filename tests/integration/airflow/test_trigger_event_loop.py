"""``SuspendedStageTrigger`` never blocks the triggerer's event loop: every database
statement and the stage's ``check_completion`` run on a worker thread, not the loop's.

Structural, not timed: the statements record the thread they run on, and a slow database
(each statement sleeps) must leave the loop free to run another coroutine meanwhile. The
work runs in the trigger module's own pool, not the loop's default executor, through which
Airflow's triggerer logs every event (structlog's ``ainfo``): a backlog of polls there held
back every trigger's event.
``benchmarks/triggerer.py`` measures the loop's lateness with 1,000 triggers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.airflow.fixtures import AIRFLOW_MARKS

pytestmark = AIRFLOW_MARKS


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from airflow_workflow_engine.hooks.engine import reset_kernel_cache, settings_from_config
    from airflow_workflow_engine.persistence.sql import migrate

    url = f"sqlite:///{tmp_path}/engine.db"
    migrate(url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN", url)
    monkeypatch.setenv("AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE", str(tmp_path / "blobs"))
    reset_kernel_cache()
    yield settings_from_config()
    reset_kernel_cache()


def _suspended_run(kernel: Any) -> str:
    from airflow_workflow_engine.kernel.commands import (
        JobExecute,
        RunClaimPending,
        RunCreate,
        RunTransition,
    )

    run_id = kernel.dispatch(
        RunCreate(
            workflow_id="it-batch",
            input={"items": ["a", "bb"]},
            config={"embed": {"poll_interval": 0.2, "polls_needed": 2, "mode": "output"}},
        )
    ).workflow_run_id
    kernel.dispatch(RunClaimPending(workflow_run_id=run_id))
    assert kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="prepare")).outcome == (
        "completed"
    )
    kernel.dispatch(RunTransition(workflow_run_id=run_id))
    assert kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="embed")).outcome == (
        "suspended"
    )
    return str(run_id)


def test_polls_run_off_the_event_loop_and_a_slow_database_leaves_it_free(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import event

    from airflow_workflow_engine.hooks.engine import kernel_for
    from airflow_workflow_engine.triggers.suspended import SuspendedStageTrigger
    from tests.integration.airflow import workflows

    kernel = kernel_for(settings, workflows.batch)
    run_id = _suspended_run(kernel)

    statement_threads: list[int] = []
    thread_names: set[str] = set()
    in_flight = 0
    ticks_during_statements = 0

    def slow_statement(*args: Any) -> None:
        nonlocal in_flight
        statement_threads.append(threading.get_ident())
        thread_names.add(threading.current_thread().name)
        in_flight += 1
        try:
            time.sleep(0.05)  # a slow database
        finally:
            in_flight -= 1

    # The stage's check_completion counts its polls with workflows._bump.
    check_threads: list[int] = []
    real_bump = workflows._bump

    def recording_bump(*args: Any, **kwargs: Any) -> Any:
        check_threads.append(threading.get_ident())
        return real_bump(*args, **kwargs)

    monkeypatch.setattr(workflows, "_bump", recording_bump)
    event.listen(kernel.persistence.engine, "before_cursor_execute", slow_statement)
    trigger = SuspendedStageTrigger(
        workflow_run_id=run_id,
        stage_id="embed",
        workflow_ref="tests.integration.airflow.workflows:batch",
        poll_interval=0.2,
        conn_id=None,
    )

    async def main() -> tuple[int, list[Any]]:
        nonlocal ticks_during_statements
        done = asyncio.Event()

        async def other_coroutine() -> None:
            nonlocal ticks_during_statements
            while not done.is_set():
                if in_flight:
                    ticks_during_statements += 1
                await asyncio.sleep(0.005)

        other = asyncio.create_task(other_coroutine())
        events = [e async for e in trigger.run()]
        done.set()
        await other
        return threading.get_ident(), events

    try:
        loop_thread, events = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        event.remove(kernel.persistence.engine, "before_cursor_execute", slow_statement)

    assert [e.payload["status"] for e in events] == ["completed"]
    assert statement_threads, "the trigger ran no SQL"
    assert loop_thread not in statement_threads
    assert check_threads and loop_thread not in check_threads
    # Not the loop's default executor (asyncio_N threads), which Airflow's logging needs.
    assert thread_names and all(n.startswith("wfe-trigger") for n in thread_names), thread_names
    # While the slow statements ran, the loop kept running the other coroutine.
    assert ticks_during_statements > 0
