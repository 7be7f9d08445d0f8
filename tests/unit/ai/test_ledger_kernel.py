"""ctx.ai inside kernel-run stages: rows carry the run/stage/attempt, and stage metrics and run
totals are rolled up from the ledger (failed attempts and ghosts included)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, define_stage, with_ai_config
from airflow_workflow_engine.ai import (
    InMemoryLedger,
    Ledger,
    WorkflowAIPolicy,
    cost_table,
    make_ai_factory,
    register_model,
    unregister_model,
)
from airflow_workflow_engine.blob.memory import InMemoryBlobStore
from airflow_workflow_engine.definitions.context import StageContext
from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    RunCancel,
    RunClaimPending,
    RunCreate,
    RunRerunStages,
)
from airflow_workflow_engine.kernel.kernel import DictRegistry, create_kernel
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.persistence.memory import InMemoryPersistence
from airflow_workflow_engine.testing import create_test_kernel, run_to_completion
from airflow_workflow_engine.testing.adapters import (
    CollectingEventSink,
    InMemoryJobTransport,
    NoopScheduler,
)
from airflow_workflow_engine.testing.kit import TestKit
from tests.backends import BACKENDS, backend_params

MODEL = "mock:priced"
#: $0.001 per input token (word), $0.002 per output token.
PRICE_IN, PRICE_OUT = Decimal("0.001"), Decimal("0.002")

HOOKS: dict[str, Callable[[StageContext[Any, Any]], None]] = {}


@pytest.fixture(autouse=True)
def _prices() -> Iterator[None]:
    register_model(MODEL, input_per_mtok=PRICE_IN * 10**6, output_per_mtok=PRICE_OUT * 10**6)
    HOOKS.clear()
    yield
    HOOKS.clear()
    unregister_model(MODEL)


def cost(prompt: str) -> Decimal:
    """The mock echoes: input = the prompt's words, output = ``echo:`` + the prompt's words."""
    words = len(prompt.split())
    return words * PRICE_IN + (words + 1) * PRICE_OUT


class Doc(BaseModel):
    text: str


class Said(BaseModel):
    text: str


AIConfig = with_ai_config(BaseModel)


def _say(ctx: StageContext[Doc, Any]) -> Said:
    hook = HOOKS.get(ctx.stage_id)
    text = ctx.input.text
    result = ctx.ai.generate_text(ctx.config.model, text)
    if hook is not None:
        hook(ctx)
    return Said(text=result.text)


def _say_twice(ctx: StageContext[Said, Any]) -> Said:
    first = ctx.ai.generate_text(ctx.config.model, "one two")
    second = ctx.ai.generate_text(ctx.config.model, "three four five")
    return Said(text=first.text + " / " + second.text)


first = define_stage(id="first", input=Doc, output=Said, config=AIConfig, execute=_say)
second = define_stage(id="second", input=Said, output=Said, config=AIConfig, execute=_say_twice)
WORKFLOW = WorkflowBuilder("talk", "Talk", input=Doc, output=Said).pipe(first).pipe(second).build()
CONFIG = {"first": {"model": MODEL}, "second": {"model": MODEL}}
INPUT = {"text": "hello there world"}


@pytest.fixture(params=backend_params())
def kit(request: pytest.FixtureRequest) -> Iterator[TestKit]:
    """A kit on each backend, with the ledger in the same database as the runs."""
    if request.param == "memory":
        yield create_test_kernel([WORKFLOW])
        return
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    with BACKENDS[request.param](request) as store:
        yield create_test_kernel([WORKFLOW], persistence=store, ledger=SqlLedger(store.engine))


def start(kit: TestKit, **fields: Any) -> str:
    fields.setdefault("config", CONFIG)
    result = kit.kernel.dispatch(RunCreate(workflow_id="talk", input=INPUT, **fields))
    return str(result.workflow_run_id)


def test_stage_metrics_and_run_totals_come_from_the_ledger(kit: TestKit) -> None:
    run_id = start(kit)
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    first_cost = cost("hello there world")
    second_cost = cost("one two") + cost("three four five")
    stages = {s.stage_id: s for s in kit.persistence.list_stages(run_id)}
    assert stages["first"].metrics["ai_cost"] == float(first_cost)
    assert stages["first"].metrics["ai_tokens"] == 3 + 4
    assert stages["second"].metrics["ai_cost"] == float(second_cost)
    assert stages["second"].metrics["ai_tokens"] == (2 + 3) + (3 + 4)
    assert run.total_cost == float(first_cost + second_cost)
    assert run.total_tokens == 7 + 12
    assert kit.ledger is not None
    assert kit.ledger.totals(run_id) == (first_cost + second_cost, 19)
    table = cost_table(kit.ledger, run_id)
    assert "first   mock:priced      1" in table
    assert "second  mock:priced      2" in table
    assert f"${first_cost + second_cost:.6f}" in table.splitlines()[-1]


@pytest.mark.parametrize("backend", [p for p in backend_params() if p.values[0] != "memory"])
def test_a_ledger_on_its_own_engine_gives_the_same_totals(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """On the store's engine, the outcome transaction reads the AI totals with the run (one
    statement); a ledger with an engine of its own (same database) is asked separately.
    Both give the same metrics and totals."""
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    figures = []
    with BACKENDS[backend](request) as store:
        url = store.engine.url.render_as_string(hide_password=False)
        for ledger in (SqlLedger(store.engine), SqlLedger(url)):
            assert ledger.shares_engine_with(store) == (ledger.engine is store.engine)
            kit = create_test_kernel([WORKFLOW], persistence=store, ledger=ledger)
            run = run_to_completion(kit.kernel, kit.job_transport, start(kit))
            stages = kit.persistence.list_stages(run.id)
            figures.append(
                (
                    run.total_cost,
                    run.total_tokens,
                    [(s.stage_id, s.metrics["ai_cost"], s.metrics["ai_tokens"]) for s in stages],
                )
            )
            ledger.close()
    first_cost = cost("hello there world")
    second_cost = cost("one two") + cost("three four five")
    assert (
        figures[0]
        == figures[1]
        == (
            float(first_cost + second_cost),
            19,
            [("first", float(first_cost), 7), ("second", float(second_cost), 12)],
        )
    )


def test_rows_are_bound_to_run_stage_attempt_and_topic(kit: TestKit) -> None:
    run_id = start(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert kit.ledger is not None
    rows = kit.ledger.entries(run_id, "first")
    assert [(r.topic, r.stage_id, r.attempt, r.dag_id, r.task_id) for r in rows] == [
        (f"workflow.{run_id}.stage.first", "first", 1, "talk", "first")
    ]
    assert rows[0].prompt == "user: hello there world"


def test_failed_attempts_are_paid_for_and_counted(kit: TestKit) -> None:
    attempts: list[int] = []

    def fail_first_attempt(ctx: StageContext[Any, Any]) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("parsing the answer failed")

    HOOKS["first"] = fail_first_attempt
    run_id = start(kit)
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED and attempts == [1, 2]
    assert kit.ledger is not None
    rows = kit.ledger.entries(run_id, "first")
    assert [r.attempt for r in rows] == [1, 2]
    stage = kit.persistence.get_stage(run_id, "first")
    assert stage is not None and stage.metrics["ai_cost"] == float(2 * cost("hello there world"))
    expected = 2 * cost("hello there world") + cost("one two") + cost("three four five")
    assert run.total_cost == float(expected)


def test_a_failed_run_keeps_its_totals(kit: TestKit) -> None:
    def always_fail(ctx: StageContext[Any, Any]) -> None:
        raise RuntimeError("boom")

    HOOKS["first"] = always_fail
    run_id = start(kit)
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert run.total_cost == float(3 * cost("hello there world"))  # three attempts
    assert run.total_tokens == 3 * 7


def test_a_ghost_stage_calls_still_count_in_the_run_totals(kit: TestKit) -> None:
    run_id = start(kit)

    def cancel_meanwhile(ctx: StageContext[Any, Any]) -> None:
        kit.kernel.dispatch(RunCancel(workflow_run_id=run_id, reason="stop"))

    HOOKS["first"] = cancel_meanwhile
    kit.kernel.dispatch(RunClaimPending())
    result = kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="first", attempt=1))
    assert result.ghost
    run = kit.persistence.get_run(run_id)
    assert run is not None and run.status == Status.CANCELLED
    assert run.total_cost == float(cost("hello there world"))
    assert kit.ledger is not None and len(kit.ledger.entries(run_id)) == 1


def test_without_a_ledger_the_totals_stay_zero() -> None:
    ledger = InMemoryLedger()
    kernel = create_kernel(
        persistence=InMemoryPersistence(),
        blob_store=InMemoryBlobStore(),
        job_transport=(transport := InMemoryJobTransport()),
        event_sink=CollectingEventSink(),
        scheduler=NoopScheduler(),
        registry=DictRegistry([WORKFLOW]),
        ai_factory=make_ai_factory(ledger),
    )
    run_id = kernel.dispatch(RunCreate(workflow_id="talk", input=INPUT, config=CONFIG))
    run = run_to_completion(kernel, transport, run_id.workflow_run_id)
    assert run.status == Status.COMPLETED
    assert (run.total_cost, run.total_tokens) == (0.0, 0)
    assert all("ai_cost" not in s.metrics for s in kernel.persistence.list_stages(run.id))
    assert len(ledger.entries(run.id)) == 3  # the calls were still recorded


def test_prompt_policy_per_workflow() -> None:
    ledger: Ledger = InMemoryLedger()
    factory = make_ai_factory(ledger, workflows={"talk": WorkflowAIPolicy(prompt_policy="none")})
    kit = create_test_kernel([WORKFLOW], ledger=ledger, ai_factory=factory)
    run_id = start(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    rows = ledger.entries(run_id)
    assert len(rows) == 3
    assert all(r.prompt is None and r.response is None and r.prompt_hash is None for r in rows)


class WorkerKilled(BaseException):
    """The worker dying mid-stage: nothing of the attempt's outcome is committed."""


def test_a_lost_attempt_s_answer_is_reused_by_the_retry_not_paid_again(kit: TestKit) -> None:
    def die_after_the_call(ctx: StageContext[Any, Any]) -> None:
        if ctx.attempt == 1:
            raise WorkerKilled

    HOOKS["first"] = die_after_the_call
    run_id = start(kit)
    kit.kernel.dispatch(RunClaimPending())
    with pytest.raises(WorkerKilled):
        kit.kernel.dispatch(JobExecute(workflow_run_id=run_id, stage_id="first", attempt=1))
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert kit.ledger is not None
    # The retry (attempt 2) got the answer attempt 1 was given: one call, one row.
    assert [r.attempt for r in kit.ledger.entries(run_id, "first")] == [1]
    stage = kit.persistence.get_stage(run_id, "first")
    assert stage is not None and stage.attempt == 2
    assert stage.metrics["ai_cost"] == float(cost("hello there world"))


def test_a_rerun_of_a_finished_stage_pays_for_new_answers(kit: TestKit) -> None:
    run_id = start(kit)
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    kit.kernel.dispatch(RunRerunStages(workflow_run_id=run_id, stage_ids=["first"]))
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert kit.ledger is not None
    assert [r.attempt for r in kit.ledger.entries(run_id, "first")] == [1, 2]
