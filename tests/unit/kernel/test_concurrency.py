"""Parallel stages of one run executing and completing at the same time, on every backend."""

from __future__ import annotations

import threading
import time
from typing import Any

from airflow_workflow_engine.kernel.commands import JobExecute, RunClaimPending, RunTransition
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create
from tests.workflows import HOOKS


def test_parallel_stages_run_concurrently_and_commit_gap_free(kit: TestKit) -> None:
    run_id = create(kit)
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="extract"))
    kit.kernel.dispatch(RunTransition(workflow_run_id=run_id))

    # Both bodies must be inside phase 2 at once: this deadlocks (and times out) if the
    # kernel held a lock or a transaction while user code runs.
    both_running = threading.Barrier(2, timeout=20)
    HOOKS["summarize"] = lambda ctx: both_running.wait()
    HOOKS["classify"] = lambda ctx: both_running.wait()
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def execute(stage_id: str) -> None:
        try:
            results[stage_id] = kit.kernel.dispatch(
                JobExecute(workflow_run_id=run_id, stage_id=stage_id)
            )
            results[stage_id + ":transition"] = kit.kernel.dispatch(
                RunTransition(workflow_run_id=run_id)
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=execute, args=(s,)) for s in ("summarize", "classify")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert results["summarize"].outcome == results["classify"].outcome == "completed"
    actions = sorted(
        [results["summarize:transition"].action, results["classify:transition"].action]
    )
    # Whichever ran second saw the group complete and started the next one, exactly once.
    assert actions == ["advanced", "noop"]
    stage_ids = [s.stage_id for s in kit.persistence.list_stages(run_id)]
    assert stage_ids.count("combine") == 1
    events = kit.persistence.list_events(run_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))

    HOOKS.clear()
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED


def test_many_runs_progress_concurrently(kit: TestKit) -> None:
    run_ids = [
        create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}}) for _ in range(6)
    ]
    kit.kernel.dispatch(RunClaimPending(max_runs=10))
    errors: list[BaseException] = []

    def execute(run_id: str) -> None:
        try:
            kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="flaky"))
            kit.kernel.dispatch(RunTransition(workflow_run_id=run_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=execute, args=(r,)) for r in run_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for run_id in run_ids:
        run = kit.persistence.get_run(run_id)
        assert run is not None and run.status == Status.COMPLETED
        events = kit.persistence.list_events(run_id)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def _wait_until_waiting_on_a_lock(kit: TestKit, started: threading.Event) -> None:
    """Returns once the other transaction has started and waits for the run's lock.

    On PostgreSQL that is seen in ``pg_stat_activity`` (its statement began, so its snapshot
    predates our commit: the case that matters). SQLite and the memory store serialize whole
    transactions, so a transaction that waits has read nothing yet: it is enough that it began.
    """
    assert started.wait(20), "the second transition did not start"
    engine = getattr(kit.persistence, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        return
    from sqlalchemy import text

    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(2000):
        with engine.connect() as conn:
            if conn.execute(query).scalar_one():
                return
        time.sleep(0.01)
    raise AssertionError("the second transition never waited for the run's lock")


def test_a_transition_that_waited_for_the_run_lock_sees_the_stages_committed_meanwhile(
    kit: TestKit,
) -> None:
    """Two transitions of one run at once: the second reads the run's stages after the first
    committed the next group's stage rows, so it neither inserts them again nor fails."""
    run_id = create(kit)
    kit.kernel.dispatch(RunClaimPending())
    kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="extract"))
    kit.kernel.dispatch(RunTransition(workflow_run_id=run_id))
    for stage_id in ("summarize", "classify"):
        kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id=stage_id))

    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    second_started = threading.Event()

    def transition(name: str) -> None:
        try:
            if name == "second":
                second_started.set()
            results[name] = kit.kernel.dispatch(RunTransition(workflow_run_id=run_id))
        except BaseException as exc:
            errors.append(exc)

    second = threading.Thread(target=transition, args=("second",))
    insert_stage = kit.persistence.insert_stage

    def insert_while_the_second_waits(stage: Any) -> None:
        # The first transition holds the run's lock here (it starts the next group): the
        # second one begins now and waits for that lock until the first commits.
        if threading.current_thread() is not second and second.ident is None:
            second.start()
            _wait_until_waiting_on_a_lock(kit, second_started)
        insert_stage(stage)

    kit.persistence.insert_stage = insert_while_the_second_waits  # type: ignore[method-assign]
    try:
        transition("first")
        second.join(60)
    finally:
        del kit.persistence.insert_stage
    assert errors == []
    assert results["first"].action == "advanced"
    assert results["second"].action == "noop"
    stage_ids = [s.stage_id for s in kit.persistence.list_stages(run_id)]
    assert stage_ids.count("combine") == 1
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
