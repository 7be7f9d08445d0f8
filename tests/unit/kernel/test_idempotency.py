"""Idempotency keys: replay, in-progress, release on error, expiry, concurrency."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airflow_workflow_engine.errors import IdempotencyInProgressError, InputValidationError
from airflow_workflow_engine.kernel.commands import JobExecute, RunClaimPending, RunCreate
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing.kit import TestKit
from tests.workflows import CALLS, DOC_INPUT, HOOKS


def test_run_create_replays_cached_result(kit: TestKit) -> None:
    cmd = RunCreate(workflow_id="doc", input=DOC_INPUT, idempotency_key="dag/run-1")
    first = kit.kernel.dispatch(cmd)
    second = kit.kernel.dispatch(cmd)
    assert second.workflow_run_id == first.workflow_run_id
    assert first.replayed is False and second.replayed is True
    assert len(kit.persistence.list_runs()) == 1


def test_same_key_different_command_types_are_independent(kit: TestKit) -> None:
    run = kit.kernel.dispatch(RunCreate(workflow_id="flaky", input=DOC_INPUT, idempotency_key="k"))
    kit.kernel.dispatch(RunClaimPending())
    result = kit.kernel.dispatch(
        JobExecute(workflow_run_id=run.workflow_run_id, stage_id="flaky", idempotency_key="k")
    )
    assert result.replayed is False


def test_failed_command_releases_its_key(kit: TestKit) -> None:
    with pytest.raises(InputValidationError):
        kit.kernel.dispatch(RunCreate(workflow_id="doc", input={}, idempotency_key="k1"))
    ok = kit.kernel.dispatch(RunCreate(workflow_id="doc", input=DOC_INPUT, idempotency_key="k1"))
    assert ok.replayed is False


def test_in_progress_key_raises_then_expires(kit: TestKit) -> None:
    now = kit.clock.now()
    from datetime import timedelta

    kit.persistence.acquire_idempotency(
        "busy", "run.create", now=now, expires_at=now + timedelta(minutes=10)
    )
    cmd = RunCreate(workflow_id="doc", input=DOC_INPUT, idempotency_key="busy")
    with pytest.raises(IdempotencyInProgressError, match="'busy' is still executing"):
        kit.kernel.dispatch(cmd)
    kit.clock.advance(601)
    result = kit.kernel.dispatch(cmd)
    assert result.status == Status.PENDING


def test_job_execute_key_in_progress_while_stage_runs(kit: TestKit) -> None:
    run = kit.kernel.dispatch(RunCreate(workflow_id="flaky", input=DOC_INPUT))
    kit.kernel.dispatch(RunClaimPending())
    cmd = JobExecute(
        workflow_run_id=run.workflow_run_id, stage_id="flaky", idempotency_key="job-1", attempt=2
    )
    inner: list[BaseException] = []

    def reenter(ctx: Any) -> None:
        try:
            kit.kernel.dispatch(cmd)
        except IdempotencyInProgressError as exc:
            inner.append(exc)

    HOOKS["flaky"] = reenter
    kit.kernel.dispatch(cmd)
    assert len(inner) == 1
    assert "'job-1' is still executing" in str(inner[0])
    HOOKS.clear()
    # Finished: the same key now replays without running the body again.
    replay = kit.kernel.dispatch(cmd)
    assert replay.replayed is True
    assert CALLS["flaky"] == 1


def test_concurrent_identical_run_create_makes_one_run(kit: TestKit) -> None:
    cmd = RunCreate(workflow_id="doc", input=DOC_INPUT, idempotency_key="same-key")
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        try:
            results.append(kit.kernel.dispatch(cmd))
        except IdempotencyInProgressError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) + len(errors) == 8
    assert len({r.workflow_run_id for r in results}) == 1
    assert len(kit.persistence.list_runs()) == 1
    assert CALLS == {}
