"""Cost caps, checked against the ledger before every model call.

A run's budget (``max_cost`` of the run) and a stage's (``max_cost`` of its config) are
compared with what the ledger says was spent so far; a call that would *start* with the
budget already used up raises :class:`AIBudgetExceededError` (a
:class:`~airflow_workflow_engine.errors.BudgetExceededError`: the stage fails and is not
retried). The call that crosses the budget completes: a model call's cost is only known once
it has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from airflow_workflow_engine.ai.ledger import Ledger, money
from airflow_workflow_engine.errors import BudgetExceededError

__all__ = ["AIBudgetExceededError", "Budget", "BudgetScope", "check_budget"]

BudgetScope = Literal["run", "stage", "helper"]


def _usd(value: Decimal) -> str:
    return f"${value.normalize():f}" if value else "$0"


class AIBudgetExceededError(BudgetExceededError):
    """A model call was refused: the run's or stage's ``max_cost`` is spent."""

    def __init__(
        self,
        *,
        scope: BudgetScope,
        max_cost: Decimal,
        spent: Decimal,
        model: str,
        workflow_run_id: str | None,
        stage_id: str | None,
        topic: str | None,
    ) -> None:
        self.scope = scope
        self.max_cost = max_cost
        self.spent = spent
        self.workflow_run_id = workflow_run_id
        self.stage_id = stage_id
        if scope == "run":
            what = f"run '{workflow_run_id}'"
            source = "the run's max_cost"
        elif scope == "stage":
            what = f"stage '{stage_id}' of run '{workflow_run_id}'"
            source = "the stage config's max_cost"
        else:
            what = f"AI helper '{topic}'"
            source = "the helper's max_cost"
        self.query = _query(scope, workflow_run_id, stage_id)
        super().__init__(
            f"AI budget exceeded: {what} has spent {_usd(spent)} of its {_usd(max_cost)} budget "
            f"({source}); the call to {model} was not made. Inspect the spend with "
            f"{self.query}"
        )


def _query(scope: BudgetScope, run_id: str | None, stage_id: str | None) -> str:
    if run_id is None:
        return "ledger.rollup(group_by=('topic', 'model_key'))."
    where = f"workflow_run_id = '{run_id}'"
    if scope == "stage":
        where += f" AND stage_id = '{stage_id}'"
    return (
        f"ledger.rollup(group_by=('stage_id', 'model_key'), workflow_run_id='{run_id}') or SQL: "
        "SELECT stage_id, model_key, count(*) AS calls, sum(cost) AS cost FROM wfe_ai_calls "
        f"WHERE {where} GROUP BY stage_id, model_key."
    )


@dataclass(frozen=True)
class Budget:
    """USD caps: ``run_max_cost`` for the whole run, ``stage_max_cost`` for one stage (all its
    attempts). ``None`` means no cap."""

    run_max_cost: Decimal | None = None
    stage_max_cost: Decimal | None = None

    @classmethod
    def of(
        cls,
        run_max_cost: float | Decimal | None = None,
        stage_max_cost: float | Decimal | None = None,
    ) -> Budget:
        def dec(value: float | Decimal | None) -> Decimal | None:
            if value is None:
                return None
            number = value if isinstance(value, Decimal) else Decimal(str(value))
            if number < 0:
                raise ValueError(f"max_cost must be >= 0, got {value}")
            return number

        return cls(dec(run_max_cost), dec(stage_max_cost))

    @property
    def is_unlimited(self) -> bool:
        return self.run_max_cost is None and self.stage_max_cost is None


def check_budget(
    budget: Budget,
    ledger: Ledger,
    *,
    model: str,
    workflow_run_id: str | None,
    stage_id: str | None,
    topic: str | None,
    local_spent: Decimal = Decimal(0),
) -> None:
    """Raises :class:`AIBudgetExceededError` when a cap is already reached. Without a run id
    (a standalone helper) the caps apply to ``local_spent``, what this helper spent."""
    checks: list[tuple[BudgetScope, Decimal | None, str | None]] = [
        ("stage", budget.stage_max_cost, stage_id),
        ("run", budget.run_max_cost, None),
    ]
    for scope, cap, stage in checks:
        if cap is None:
            continue
        where: BudgetScope = scope
        if workflow_run_id is None:
            spent, where = money(local_spent), "helper"
        elif scope == "stage" and stage is None:
            continue
        else:
            spent = ledger.spent(workflow_run_id, stage)
        if spent >= cap:
            raise AIBudgetExceededError(
                scope=where,
                max_cost=cap,
                spent=spent,
                model=model,
                workflow_run_id=workflow_run_id,
                stage_id=stage_id,
                topic=topic,
            )
