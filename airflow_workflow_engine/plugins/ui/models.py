"""The response models of the UI's JSON API (``/workflow-engine/api/...``); the HTML pages
render the same objects.

Built from the kernel's records and the ledger's rows; no Airflow, no SQL here.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from airflow_workflow_engine.ai.ledger import money
from airflow_workflow_engine.host.format import preview
from airflow_workflow_engine.host.runs import split_run_key

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.ledger import LedgerEntry, RollupRow
    from airflow_workflow_engine.kernel.records import (
        AnnotationRecord,
        OutboxEvent,
        RunRecord,
        StageRecord,
    )

__all__ = [
    "AICall",
    "Annotation",
    "CostReport",
    "CostRow",
    "Event",
    "RunDetail",
    "RunList",
    "RunSummary",
    "Stage",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


def _seconds(started: datetime | None, ended: datetime | None) -> float | None:
    if started is None or ended is None:
        return None
    return round((ended - started).total_seconds(), 3)


#: US dollars, exact: a decimal string in JSON (``"0.0000436"``), never a float or an
#: exponent (``4.36e-05``), so a client sums what the ledger holds.
Money = Annotated[
    Decimal,
    PlainSerializer(lambda d: format(d.normalize(), "f"), return_type=str, when_used="json"),
]


def _money(value: Any) -> Decimal | None:
    """A ledger amount as a Decimal (run totals are floats: by their shortest repr)."""
    return None if value is None else money(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


class RunSummary(_Model):
    """One workflow run, as listed."""

    workflow_run_id: str
    workflow_id: str
    workflow_name: str
    #: The Airflow DAG run that created it (``None`` for a run created outside Airflow).
    dag_id: str | None = None
    dag_run_id: str | None = None
    status: str
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    #: AI spend of the run in US dollars (priced calls only) and its input + output tokens.
    total_cost: Money = Decimal(0)
    total_tokens: int = 0

    @classmethod
    def of(cls, run: RunRecord) -> RunSummary:
        dag_id, dag_run_id, _ = split_run_key(run.idempotency_key)
        return cls(
            workflow_run_id=run.id,
            workflow_id=run.workflow_id,
            workflow_name=run.workflow_name,
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            status=run.status.value,
            created_at=run.created_at,
            started_at=run.started_at,
            completed_at=run.completed_at,
            duration_seconds=_seconds(run.started_at, run.completed_at),
            total_cost=_money(run.total_cost) or Decimal(0),
            total_tokens=run.total_tokens,
        )


class RunList(_Model):
    """A page of workflow runs, newest first."""

    runs: list[RunSummary]
    #: Runs that match the filters (over every page).
    total: int
    limit: int
    offset: int
    dag_id: str | None = None
    status: str | None = None


class Stage(_Model):
    """One stage of a run (the engine's row; the attempt is the Airflow task's try)."""

    stage_id: str
    stage_name: str
    execution_group: int
    status: str
    attempt: int
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    #: From the stage's metrics (rolled up from the ledger).
    ai_cost: Money | None = None
    ai_tokens: int | None = None
    #: Compact JSON of the output, cut short; ``output_ref`` is the blob key of a large one.
    output_preview: str | None = None
    output_ref: str | None = None
    error: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    #: The stage's AI budget in US dollars (``max_cost`` in its config), if it has one.
    budget: Money | None = None

    @classmethod
    def of(cls, stage: StageRecord, preview_chars: int) -> Stage:
        metrics = stage.metrics or {}
        return cls(
            stage_id=stage.stage_id,
            stage_name=stage.stage_name,
            execution_group=stage.execution_group,
            status=stage.status.value,
            attempt=stage.attempt,
            started_at=stage.started_at,
            completed_at=stage.completed_at,
            duration_seconds=_seconds(stage.started_at, stage.completed_at),
            ai_cost=_money(metrics.get("ai_cost")),
            ai_tokens=_int(metrics.get("ai_tokens")),
            output_preview=None if stage.output is None else preview(stage.output, preview_chars),
            output_ref=stage.output_ref,
            error=stage.error_message,
            progress=stage.progress,
            progress_message=stage.progress_message,
        )


class Annotation(_Model):
    """A provenance fact attached to the run or to one of its stages."""

    key: str
    value: Any = None
    #: ``kind:id`` of who attached it (``stage:classify``, ``user:alice``...).
    actor: str
    stage_id: str | None = None
    attempt: int | None = None
    created_at: datetime

    @classmethod
    def of(cls, note: AnnotationRecord) -> Annotation:
        return cls(
            key=note.key,
            value=note.value,
            actor=f"{note.actor.kind}:{note.actor.id}",
            stage_id=note.stage_id,
            attempt=note.attempt,
            created_at=note.created_at,
        )


class AICall(_Model):
    """One row of the AI cost ledger (a model call, or one request of a batch).

    Prompts and responses are left out."""

    id: str
    created_at: datetime
    stage_id: str | None = None
    #: The Airflow task and try that made the call.
    task_id: str | None = None
    attempt: int | None = None
    provider: str
    model_key: str
    model_id: str | None = None
    call_type: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    total_tokens: int
    #: US dollars; ``None`` when the model's price is unknown.
    cost: Money | None = None
    latency_ms: int | None = None
    status: str
    error: str | None = None
    batch_id: str | None = None

    @classmethod
    def of(cls, entry: LedgerEntry) -> AICall:
        return cls(
            id=entry.id,
            created_at=entry.created_at,
            stage_id=entry.stage_id,
            task_id=entry.task_id,
            attempt=entry.attempt,
            provider=entry.provider,
            model_key=entry.model_key,
            model_id=entry.model_id,
            call_type=entry.call_type,
            input_tokens=entry.input_tokens,
            output_tokens=entry.output_tokens,
            cached_tokens=entry.cached_tokens,
            total_tokens=entry.total_tokens,
            cost=entry.cost,
            latency_ms=entry.latency_ms,
            status=entry.status,
            error=entry.error,
            batch_id=entry.batch_id,
        )


class Event(_Model):
    """An outbox event of the run."""

    sequence: int
    type: str
    occurred_at: datetime
    published_at: datetime | None = None
    dlq_at: datetime | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, event: OutboxEvent) -> Event:
        return cls(
            sequence=event.sequence,
            type=event.type,
            occurred_at=event.occurred_at,
            published_at=event.published_at,
            dlq_at=event.dlq_at,
            payload=event.payload,
        )


class RunDetail(RunSummary):
    """A workflow run with its stages, annotations, AI calls and events."""

    idempotency_key: str | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    stages: list[Stage] = Field(default_factory=list)
    annotations: list[Annotation] = Field(default_factory=list)
    ai_calls: list[AICall] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    #: Sum of the priced ledger rows of the run, and how many rows had no price.
    ai_calls_cost: Money = Decimal(0)
    ai_calls_unpriced: int = 0
    #: The run's AI budget in US dollars (``[workflow_engine] ai_run_max_cost`` as the
    #: api-server reads it), if one is set.
    budget: Money | None = None


class CostRow(_Model):
    """One group of a roll-up of the AI cost ledger."""

    #: The group's value: a day (``YYYY-MM-DD``, UTC), a model key or a DAG id; ``None`` for
    #: calls without one (calls made outside Airflow have no DAG).
    key: str | None = None
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost: Money = Decimal(0)
    #: Calls without a known price: they add nothing to ``cost``.
    unpriced_calls: int = 0

    @classmethod
    def of(cls, row: RollupRow, dimension: str | None = None) -> CostRow:
        value = None if dimension is None else row.group.get(dimension)
        key = value.isoformat() if isinstance(value, (date, datetime)) else value
        return cls(
            key=None if key is None else str(key),
            calls=row.calls,
            errors=row.errors,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cached_tokens=row.cached_tokens,
            total_tokens=row.total_tokens,
            cost=_money(row.cost) or Decimal(0),
            unpriced_calls=row.unpriced_calls,
        )


class CostReport(_Model):
    """AI spend from the ledger: per UTC day (newest first), per model and per DAG (most
    expensive first), and the total."""

    since: datetime | None = None
    total: CostRow
    by_day: list[CostRow]
    by_model: list[CostRow]
    by_dag: list[CostRow]
