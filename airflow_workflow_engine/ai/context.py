"""``ctx.ai`` for stages: :func:`make_ai_factory` builds the kernel's ``ai_factory``.

Each stage gets its own :class:`~airflow_workflow_engine.ai.helper.AIHelper`, bound to

* the topic ``workflow.<run_id>.stage.<stage_id>``, the run, the stage and the attempt;
* the ledger (the same one given to the kernel as ``ledger=``, so stage metrics and run totals
  are rolled up from it);
* the stage config's ``model`` (as ``ctx.ai.default_model``) and ``max_cost`` (the stage's
  budget), when the config has them (see ``with_ai_config``);
* the run's budget and the prompt policy: kernel-wide defaults, overridable per workflow::

    ai_factory = make_ai_factory(
        ledger,
        run_max_cost=5.0,                       # USD per run, every workflow
        workflows={"nightly-digest": WorkflowAIPolicy(max_cost=0.5, prompt_policy="hash")},
    )
    kernel = create_kernel(..., ledger=ledger, ai_factory=ai_factory)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_workflow_engine.ai.budget import Budget
from airflow_workflow_engine.ai.helper import AIHelper
from airflow_workflow_engine.ai.ledger import Ledger
from airflow_workflow_engine.ai.prompts import PromptPolicy, check_prompt_policy
from airflow_workflow_engine.ai.recorder import RetryPolicy
from airflow_workflow_engine.ai.settings import ProviderRegistry, ProvidersLike
from airflow_workflow_engine.definitions.context import StageContext

__all__ = ["AIFactory", "WorkflowAIPolicy", "make_ai_factory", "stage_topic"]

AIFactory = Callable[[StageContext[Any, Any]], AIHelper]


def stage_topic(workflow_run_id: str, stage_id: str) -> str:
    return f"workflow.{workflow_run_id}.stage.{stage_id}"


@dataclass(frozen=True)
class WorkflowAIPolicy:
    """Per-workflow overrides: ``max_cost`` caps each run of the workflow (USD),
    ``prompt_policy`` says what the ledger keeps of its prompts. ``None`` keeps the default."""

    max_cost: float | Decimal | None = None
    prompt_policy: PromptPolicy | None = None

    def __post_init__(self) -> None:
        if self.prompt_policy is not None:
            check_prompt_policy(self.prompt_policy)
        if self.max_cost is not None and self.max_cost < 0:
            raise ValueError(f"max_cost must be >= 0, got {self.max_cost}")


def make_ai_factory(
    ledger: Ledger,
    *,
    providers: ProviderRegistry | ProvidersLike | None = None,
    prompt_policy: PromptPolicy = "store",
    run_max_cost: float | Decimal | None = None,
    workflows: Mapping[str, WorkflowAIPolicy] | None = None,
    retry: RetryPolicy | None = None,
    dag_id: str | None = None,
    task_id: str | None = None,
    dag_run_id: str | None = None,
) -> AIFactory:
    """The ``ai_factory`` for :func:`~airflow_workflow_engine.kernel.kernel.create_kernel`.

    ``providers`` are shared by every stage (clients are created once). ``dag_id``,
    ``task_id`` and ``dag_run_id`` label the ledger rows; outside Airflow ``dag_id`` defaults
    to the workflow id and ``task_id`` to the stage id (what ``Workflow.to_dag`` uses).
    """
    registry = providers if isinstance(providers, ProviderRegistry) else ProviderRegistry(providers)
    default_policy = check_prompt_policy(prompt_policy)
    policies = dict(workflows or {})

    def factory(ctx: StageContext[Any, Any]) -> AIHelper:
        policy = policies.get(ctx.workflow_id, WorkflowAIPolicy())
        run_cap = policy.max_cost if policy.max_cost is not None else run_max_cost
        stage_cap = getattr(ctx.config, "max_cost", None)
        model = getattr(ctx.config, "model", None)
        return AIHelper(
            topic=stage_topic(ctx.workflow_run_id, ctx.stage_id),
            ledger=ledger,
            providers=registry,
            budget=Budget.of(run_max_cost=run_cap, stage_max_cost=stage_cap),
            prompt_policy=policy.prompt_policy or default_policy,
            workflow_run_id=ctx.workflow_run_id,
            stage_id=ctx.stage_id,
            attempt=ctx.attempt,
            reuse_answers_since=getattr(ctx, "execution_created_at", None),
            dag_id=dag_id or ctx.workflow_id,
            task_id=task_id or ctx.stage_id,
            dag_run_id=dag_run_id,
            default_model=model if isinstance(model, str) else None,
            retry=retry,
        )

    # run.create checks model keys in stage config against these (Kernel.model_providers).
    setattr(factory, "model_providers", lambda: registry.names)  # noqa: B010
    return factory
