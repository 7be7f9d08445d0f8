"""The host layer's reads over the kernel's rows (memory, SQLite, PostgreSQL), without Airflow:
finding a DAG run's workflow run(s), the sensors' wait decision and approvals."""

from __future__ import annotations

import pytest

from airflow_workflow_engine.host.approvals import approve, reject
from airflow_workflow_engine.host.format import parse_when, preview
from airflow_workflow_engine.host.links import workflow_run_path
from airflow_workflow_engine.host.queries import (
    QueryError,
    costliest_runs,
    find_run_by_key,
    resolve_run,
    runs_of_dag_run,
)
from airflow_workflow_engine.host.runs import run_key
from airflow_workflow_engine.host.wait import WaitSpec, check
from airflow_workflow_engine.kernel.commands import RunCancel
from airflow_workflow_engine.persistence.sql import SqlPersistence
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit
from tests.unit.kernel.helpers import create


def test_runs_of_a_dag_run_and_of_its_stage_tasks(kit: TestKit) -> None:
    own = create(kit, idempotency_key=run_key("d", "r1"))
    group = create(kit, idempotency_key=run_key("d", "r1", "g"))
    create(kit, idempotency_key=run_key("d", "r2"))
    found = find_run_by_key(kit.persistence, "d/r1")
    assert found is not None and found.id == own
    assert [r.id for r in runs_of_dag_run(kit.persistence, "d", "r1", "g.stage")] == [group]
    assert [r.id for r in runs_of_dag_run(kit.persistence, "d", "r1", "stage")] == [own]
    assert runs_of_dag_run(kit.persistence, "d", "r9", "stage") == []
    every = {r.id for r in runs_of_dag_run(kit.persistence, "d", "r1")}
    # The group runs are found through the SQL key-prefix query only.
    assert every == ({own, group} if isinstance(kit.persistence, SqlPersistence) else {own})


def test_resolve_run_names_what_is_missing(kit: TestKit) -> None:
    if not isinstance(kit.persistence, SqlPersistence):
        pytest.skip("resolve_run pages through runs with SQL")
    run_id = create(kit, idempotency_key=run_key("d", "r1"))
    assert resolve_run(kit.persistence, "d", "r1", None).id == run_id
    assert resolve_run(kit.persistence, None, None, run_id).id == run_id
    with pytest.raises(QueryError, match=r"DAG run 'd/r2' has no workflow run.*r1"):
        resolve_run(kit.persistence, "d", "r2", None)
    with pytest.raises(QueryError, match="not both"):
        resolve_run(kit.persistence, "d", "r1", run_id)
    with pytest.raises(QueryError, match="does not exist"):
        resolve_run(kit.persistence, None, None, "nope")


def test_wait_decisions(kit: TestKit) -> None:
    waiting = check(kit.persistence, WaitSpec(kind="run", dag_id="d", run_id="r1"))
    assert waiting.status is None and "has no workflow run yet" in waiting.message
    run_id = create(kit, idempotency_key=run_key("d", "r1"))
    spec = WaitSpec(kind="stage", workflow_run_id=run_id, stage_id="publish")
    assert check(kit.persistence, spec).status is None
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    done = check(kit.persistence, spec)
    assert done.status == "success" and done.observed == "COMPLETED"
    assert check(kit.persistence, WaitSpec(kind="run", dag_id="d", run_id="r1")).status == (
        "success"
    )


def test_approval_wait_and_decisions(kit: TestKit) -> None:
    run_id = create(kit)
    spec = WaitSpec(kind="approval", workflow_run_id=run_id)
    assert check(kit.persistence, spec).status is None
    reject(kit.kernel, run_id, "alice", "not yet")
    kit.clock.advance(1)
    verdict = check(kit.persistence, spec)
    assert verdict.status == "failed" and "rejected by alice: not yet" in verdict.message
    approve(kit.kernel, run_id, "bob")
    kit.clock.advance(1)
    assert check(kit.persistence, spec).status == "success"
    with pytest.raises(ValueError, match="approver"):
        approve(kit.kernel, run_id, "")


def test_a_cancelled_run_is_never_approved(kit: TestKit) -> None:
    run_id = create(kit)
    kit.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason="stop"))
    verdict = check(kit.persistence, WaitSpec(kind="approval", workflow_run_id=run_id))
    assert verdict.status == "failed" and "never approved" in verdict.message


def test_formatting_helpers() -> None:
    from datetime import datetime, timezone

    def parse(text: str, strict: bool) -> datetime:
        del strict
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)

    end = parse_when("2026-01-31", parse, end=True)
    assert (end.hour, end.minute, end.second) == (23, 59, 59)
    with pytest.raises(QueryError, match="Cannot read 'soon' as a date"):
        parse_when("soon", parse)
    assert preview({"a": "x" * 50}, width=20).endswith("...")
    assert workflow_run_path("d", "a/b c", "g") == "/workflow-engine/dags/d/runs/a%2Fb%20c/g"


def test_costliest_runs_by_total_cost_since_and_of_readable_dags(kit: TestKit) -> None:
    from datetime import timedelta

    if not isinstance(kit.persistence, SqlPersistence):
        pytest.skip("a SQL query over the runs table")
    store = kit.persistence
    cheap = create(kit, idempotency_key=run_key("a", "r1"))
    dear = create(kit, idempotency_key=run_key("b", "r1"))
    middle = create(kit, idempotency_key=run_key("a_x", "r2"))  # '_' is no wildcard
    free = create(kit, idempotency_key=run_key("a", "r3"))
    outside = create(kit)  # no DAG
    for run_id, cost in ((cheap, 0.01), (dear, 2.5), (middle, 0.3), (outside, 0.2)):
        store.update_run(run_id, total_cost=cost)
    assert [r.id for r in costliest_runs(store)] == [dear, middle, outside, cheap]
    assert free not in {r.id for r in costliest_runs(store)}  # spent nothing
    assert [r.id for r in costliest_runs(store, limit=2)] == [dear, middle]
    assert [r.id for r in costliest_runs(store, dag_ids={"a", "a_x"})] == [middle, cheap]
    assert costliest_runs(store, dag_ids=set()) == []
    newest = store.get_run(outside).created_at + timedelta(hours=1)
    store.update_run(outside, created_at=newest)
    assert [r.id for r in costliest_runs(store, since=newest)] == [outside]
    later = costliest_runs(store, since=newest + timedelta(seconds=1))
    assert later == []
