"""Budgets: a stage's config max_cost, a run's max_cost (kernel-wide or per workflow)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, define_stage, with_ai_config
from airflow_workflow_engine.ai import (
    AIBudgetExceededError,
    Budget,
    InMemoryLedger,
    WorkflowAIPolicy,
    create_ai_helper,
    make_ai_factory,
    register_model,
    unregister_model,
)
from airflow_workflow_engine.ai.budget import check_budget
from airflow_workflow_engine.definitions.context import StageContext
from airflow_workflow_engine.errors import BudgetExceededError
from airflow_workflow_engine.kernel.commands import RunCreate
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import create_test_kernel, run_to_completion

MODEL = "mock:priced"


@pytest.fixture(autouse=True)
def _prices() -> Iterator[None]:
    # $0.01 per token (word) in and out: "w1 w2 w3" costs 3 * 0.01 + 4 * 0.01 = $0.07.
    register_model(MODEL, input_per_mtok=10_000, output_per_mtok=10_000)
    yield
    unregister_model(MODEL)


class Doc(BaseModel):
    calls: int


class Out(BaseModel):
    made: int


def _spend(ctx: StageContext[Doc, Any]) -> Out:
    for made in range(ctx.input.calls):
        try:
            ctx.ai.generate_text(ctx.config.model, "w1 w2 w3")
        except BudgetExceededError:
            if ctx.stage_id == "catching":
                return Out(made=made)
            raise
    return Out(made=ctx.input.calls)


AIConfig = with_ai_config(BaseModel)
spend = define_stage(id="spend", input=Doc, output=Out, config=AIConfig, execute=_spend)


def _spend_more(ctx: StageContext[Out, Any]) -> Out:
    for _ in range(2):
        ctx.ai.generate_text(ctx.config.model, "w1 w2 w3")
    return Out(made=2)


more = define_stage(id="more", input=Out, output=Out, config=AIConfig, execute=_spend_more)


ONE = WorkflowBuilder("one", "One", input=Doc, output=Out).pipe(spend).build()
TWO = WorkflowBuilder("two", "Two", input=Doc, output=Out).pipe(spend).pipe(more).build()


def test_stage_max_cost_fails_the_stage_without_retry() -> None:
    kit = create_test_kernel([ONE])
    config = {"spend": {"model": MODEL, "max_cost": 0.1}}
    run_id = kit.kernel.dispatch(
        RunCreate(workflow_id="one", input={"calls": 5}, config=config)
    ).workflow_run_id
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    stage = kit.persistence.get_stage(run_id, "spend")
    assert stage is not None and stage.status == Status.FAILED
    assert stage.attempt == 1  # not retried
    message = stage.error_message or ""
    assert f"stage 'spend' of run '{run_id}' has spent $0.14 of its $0.1 budget" in message
    assert "the stage config's max_cost" in message
    assert "AND stage_id = 'spend'" in message
    assert run.error_message is not None and "AI budget exceeded" in run.error_message
    # Two calls were made ($0.07 each): the second crossed the budget, the third was refused.
    assert kit.ledger is not None and len(kit.ledger.entries(run_id)) == 2
    assert run.total_cost == pytest.approx(0.14)
    assert stage.metrics["ai_cost"] == pytest.approx(0.14)


def test_run_max_cost_spans_stages() -> None:
    ledger = InMemoryLedger()
    kit = create_test_kernel(
        [TWO], ledger=ledger, ai_factory=make_ai_factory(ledger, run_max_cost=0.2)
    )
    config = {"spend": {"model": MODEL}, "more": {"model": MODEL}}
    run_id = kit.kernel.dispatch(
        RunCreate(workflow_id="two", input={"calls": 2}, config=config)
    ).workflow_run_id
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    # spend: 2 calls ($0.14); more: one call ($0.21 > 0.2), then refused.
    assert run.status == Status.FAILED
    assert run.error_message is not None
    assert f"run '{run_id}' has spent $0.21 of its $0.2 budget (the run's max_cost)" in (
        run.error_message
    )
    assert [r.stage_id for r in ledger.entries(run_id)] == ["spend", "spend", "more"]


def test_workflow_policy_overrides_the_default_run_budget() -> None:
    ledger = InMemoryLedger()
    factory = make_ai_factory(
        ledger, run_max_cost=100, workflows={"one": WorkflowAIPolicy(max_cost=0.07)}
    )
    kit = create_test_kernel([ONE], ledger=ledger, ai_factory=factory)
    run_id = kit.kernel.dispatch(
        RunCreate(workflow_id="one", input={"calls": 3}, config={"spend": {"model": MODEL}})
    ).workflow_run_id
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.FAILED
    assert len(ledger.entries(run_id)) == 1


def test_a_stage_may_catch_the_budget_error_and_finish() -> None:
    catching = define_stage(id="catching", input=Doc, output=Out, config=AIConfig, execute=_spend)
    wf = WorkflowBuilder("c", "C", input=Doc, output=Out).pipe(catching).build()
    kit = create_test_kernel([wf])
    run_id = kit.kernel.dispatch(
        RunCreate(
            workflow_id="c",
            input={"calls": 10},
            config={"catching": {"model": MODEL, "max_cost": 0.2}},
        )
    ).workflow_run_id
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status == Status.COMPLETED
    assert run.output == {"made": 3}


def test_zero_budget_refuses_every_call() -> None:
    helper = create_ai_helper("t", InMemoryLedger(), budget=0)
    with pytest.raises(AIBudgetExceededError) as info:
        helper.generate_text("mock:echo", "hi")
    assert info.value.scope == "helper"
    assert "AI helper 't' has spent $0 of its $0 budget" in str(info.value)


def test_standalone_helper_budget_counts_its_own_calls() -> None:
    helper = create_ai_helper("notebook", InMemoryLedger(), budget=Decimal("0.1"))
    helper.generate_text(MODEL, "w1 w2 w3")
    helper.generate_text(MODEL, "w1 w2 w3")
    assert helper.spent == Decimal("0.14")
    with pytest.raises(BudgetExceededError, match=r"ledger\.rollup"):
        helper.generate_text(MODEL, "w1 w2 w3")


def test_budget_checks_the_ledger_not_the_helper() -> None:
    ledger = InMemoryLedger()
    worker_a = create_ai_helper("a", ledger, run_id="r", stage_id="s", budget=0.1)
    worker_b = create_ai_helper("b", ledger, run_id="r", stage_id="t", budget=0.1)
    worker_a.generate_text(MODEL, "w1 w2 w3")
    worker_a.generate_text(MODEL, "w1 w2 w3")
    with pytest.raises(AIBudgetExceededError) as info:
        worker_b.generate_text(MODEL, "w1")  # another process, same run
    assert (info.value.scope, info.value.spent) == ("run", Decimal("0.14"))


def test_budget_values_are_checked() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Budget.of(run_max_cost=-1)
    with pytest.raises(ValueError, match=">= 0"):
        WorkflowAIPolicy(max_cost=-1)
    assert Budget.of().is_unlimited
    check_budget(
        Budget.of(stage_max_cost=1),
        InMemoryLedger(),
        model=MODEL,
        workflow_run_id="r",
        stage_id=None,
        topic="t",
    )  # a stage cap without a stage: nothing to check
