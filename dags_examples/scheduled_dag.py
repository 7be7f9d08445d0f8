"""A daily scheduled workflow that can be caught up and backfilled.

    collect (the day's items) -> digest (a model writes the day's digest)

Each DAG run is one workflow run (idempotency key ``"<dag_id>/<run_id>"``), so every day,
scheduled or backfilled, has its own run, stages, outputs and AI costs. The day comes from
Airflow: ``collect``'s config is templated with ``{{ ds }}``. The input has defaults for every
field, as a scheduled DAG needs (a manual trigger may override them in the form).

Backfill a range of days (the scheduler runs them; one at a time here)::

    airflow backfill create --dag-id daily_digest \\
        --from-date 2025-06-01 --to-date 2025-06-07 --max-active-runs 1

``catchup=False`` runs only the latest day when the DAG is unpaused; set ``catchup=True`` to
run every day since ``start_date`` instead. Sync stages only, so the workflow may live in this
file (the triggerer never needs it).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, Field

from airflow_workflow_engine import StageContext, WorkflowBuilder, define_stage
from airflow_workflow_engine.dag import build_dag

_TOPICS = ("login", "billing", "export", "latency", "search", "upload", "alerts", "sso")


class DigestInput(BaseModel):
    """What each daily run digests."""

    source: str = Field("support-tickets", description="Where the day's items come from")
    max_items: int = Field(5, ge=1, le=50, description="Most items in one digest")


class CollectConfig(BaseModel):
    day: str = Field(description="The day to collect (YYYY-MM-DD); templated with {{ ds }}")


class DigestConfig(BaseModel):
    model: str = Field("mock:digest", description="Model key that writes the digest")


class Items(BaseModel):
    day: str
    source: str
    items: list[str]


class Digest(BaseModel):
    day: str
    count: int
    text: str


def _collect(ctx: StageContext[DigestInput, CollectConfig]) -> Items:
    # A stand-in for a query over the day's data: deterministic per day and source.
    seed = hashlib.sha256(f"{ctx.config.day}/{ctx.input.source}".encode()).digest()
    count = 1 + seed[0] % ctx.input.max_items
    items = [f"{_TOPICS[b % len(_TOPICS)]} issue #{b}" for b in seed[1 : 1 + count]]
    ctx.log("INFO", "collected items", day=ctx.config.day, count=len(items))
    return Items(day=ctx.config.day, source=ctx.input.source, items=items)


def _digest(ctx: StageContext[Items, DigestConfig]) -> Digest:
    answer = ctx.ai.generate_text(
        ctx.config.model,
        "; ".join(ctx.input.items),
        system=f"Write a one-line digest of {ctx.input.source} for {ctx.input.day}.",
        max_tokens=24,
    )
    return Digest(day=ctx.input.day, count=len(ctx.input.items), text=answer.text)


collect = define_stage(
    id="collect", input=DigestInput, output=Items, config=CollectConfig, execute=_collect
)
digest = define_stage(id="digest", input=Items, output=Digest, config=DigestConfig, execute=_digest)

daily_digest = (
    WorkflowBuilder(
        "daily-digest",
        "Daily digest",
        "Collects a day's items and has a model write their digest.",
        input=DigestInput,
        output=Digest,
    )
    .pipe(collect)
    .pipe(digest)
    .build()
)

_CONFIG: dict[str, dict[str, Any]] = {"collect": {"day": "{{ ds }}"}}

dag = build_dag(
    daily_digest,
    dag_id="daily_digest",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    config=_CONFIG,
    tags=["workflow-engine", "example", "scheduled"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
)
