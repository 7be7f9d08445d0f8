"""The AI cost ledger: one row per model call that reached a provider (and per batch request).

Rows are written as the calls happen, each in a short transaction of its own, never buffered
with the stage's outcome: money spent stays recorded when the stage later fails, is cancelled
(a ghost) or its worker dies (see ``docs/adr/0001-ledger-rows-written-per-call.md``). Stage
metrics (``ai_cost``, ``ai_tokens``) and run totals are rolled up *from* the ledger.

* :class:`InMemoryLedger`: for tests, the demo and single-process use.
* :class:`~airflow_workflow_engine.ai.sql_ledger.SqlLedger`: the ``wfe_ai_calls`` table
  (PostgreSQL or SQLite), importable from here too (loaded lazily).

Costs are :class:`~decimal.Decimal` USD; ``None`` when the price is unknown (such rows count
in ``unpriced_calls`` and add nothing to sums).
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

__all__ = [
    "GROUP_BY_ALIASES",
    "CallStatus",
    "CallType",
    "InMemoryLedger",
    "Ledger",
    "LedgerEntry",
    "RollupRow",
    "SqlLedger",
    "money",
    "normalize_group_by",
]

CallType = Literal["text", "object", "embed", "stream", "batch"]
CallStatus = Literal["ok", "error"]

#: Roll-up dimensions: friendly names and the column (or ``day``) each groups by.
GROUP_BY_ALIASES: Mapping[str, str] = {
    "run": "workflow_run_id",
    "workflow_run_id": "workflow_run_id",
    "stage": "stage_id",
    "stage_id": "stage_id",
    "workflow": "dag_id",
    "dag": "dag_id",
    "dag_id": "dag_id",
    "task_id": "task_id",
    "dag_run": "dag_run_id",
    "dag_run_id": "dag_run_id",
    "model": "model_key",
    "model_key": "model_key",
    "model_id": "model_id",
    "provider": "provider",
    "day": "day",
    "topic": "topic",
    "call_type": "call_type",
    "status": "status",
}

_QUANTUM = Decimal("1e-12")


def money(value: Decimal | float | int | None) -> Decimal:
    """A sum of costs as a Decimal, rounded to 1e-12 USD (hides float noise of SQL sums)."""
    if value is None:
        return Decimal(0).quantize(_QUANTUM)
    number = value if isinstance(value, Decimal) else Decimal(repr(value))
    return number.quantize(_QUANTUM)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class LedgerEntry(BaseModel):
    """One model call (or one request of a batch). Never holds API keys or auth headers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = Field(default_factory=_utcnow)
    topic: str | None = None
    call_type: CallType
    provider: str
    model_key: str
    model_id: str | None = None
    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cached_tokens: int = Field(0, ge=0)
    cost: Decimal | None = None
    cost_source: Literal["reported", "estimated"] | None = None
    latency_ms: int | None = None
    status: CallStatus = "ok"
    error: str | None = None
    #: What failed after the provider answered (pricing, reading or validating the answer, the
    #: stage attempt that made the call); the call itself was made and billed.
    failure: str | None = None
    workflow_run_id: str | None = None
    stage_id: str | None = None
    attempt: int | None = None
    batch_id: str | None = None
    request_id: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    #: The Airflow DAG run (its ``run_id``) the call was made for, under Airflow.
    dag_run_id: str | None = None
    prompt: str | None = None
    response: str | None = None
    prompt_hash: str | None = None

    @field_validator("dag_id")
    @classmethod
    def _no_empty_dag_id(cls, value: str | None) -> str | None:
        # No DAG is ``None``: the cost roll-up keys calls without a DAG as ``''``.
        return value or None

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def group_value(self, dimension: str) -> Any:
        """The value of a roll-up dimension (a column name from :data:`GROUP_BY_ALIASES`)."""
        if dimension == "day":
            return self.created_at.date()
        return getattr(self, dimension)


class RollupRow(BaseModel):
    """One group of a roll-up: ``group`` maps each dimension (column name, or ``day``) to its
    value; ``cost`` sums the priced calls, ``unpriced_calls`` counts the others."""

    model_config = ConfigDict(frozen=True)

    group: dict[str, Any]
    calls: int
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: Decimal = Field(default_factory=lambda: money(0))
    unpriced_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __getitem__(self, dimension: str) -> Any:
        return self.group[GROUP_BY_ALIASES.get(dimension, dimension)]


@runtime_checkable
class Ledger(Protocol):
    """Where model calls are recorded and summed. ``record`` is idempotent per entry id."""

    def record(self, entry: LedgerEntry) -> None: ...

    def totals(self, workflow_run_id: str, stage_id: str | None = None) -> tuple[Decimal, int]:
        """``(cost, input + output tokens)`` of a run, or of one of its stages."""
        ...

    def spent(self, workflow_run_id: str, stage_id: str | None = None) -> Decimal: ...

    def rollup(
        self,
        group_by: Sequence[str] = ("model_key",),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        workflow_run_id: str | None = None,
        dag_ids: Collection[str] | None = None,
    ) -> list[RollupRow]:
        """Calls, tokens and cost per group; ``since`` inclusive, ``until`` exclusive;
        ``dag_ids``: only the calls of these DAGs (workflows)."""
        ...

    def entries(
        self, workflow_run_id: str | None = None, stage_id: str | None = None
    ) -> list[LedgerEntry]:
        """Rows, oldest first (all of them without filters: mind the size)."""
        ...


def normalize_group_by(group_by: Sequence[str] | str) -> tuple[str, ...]:
    """Dimension names as columns (``"model"`` -> ``"model_key"``); unknown names raise."""
    names = (group_by,) if isinstance(group_by, str) else tuple(group_by)
    columns: list[str] = []
    for name in names:
        column = GROUP_BY_ALIASES.get(name)
        if column is None:
            known = ", ".join(sorted(GROUP_BY_ALIASES))
            raise ValueError(f"cannot group the ledger by {name!r}; choose from: {known}")
        if column not in columns:
            columns.append(column)
    return tuple(columns)


def sort_key(row: RollupRow, dims: Sequence[str]) -> tuple[Any, ...]:
    """Groups in dimension order, ``None`` first."""
    return tuple((row.group[d] is not None, row.group[d] or "") for d in dims)


def rollup_entries(entries: Iterable[LedgerEntry], dims: Sequence[str]) -> list[RollupRow]:
    """The roll-up of ``entries`` in Python (the in-memory ledger, and tests' expectations)."""
    buckets: dict[tuple[Any, ...], list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        buckets[tuple(entry.group_value(d) for d in dims)].append(entry)
    rows = [
        RollupRow(
            group=dict(zip(dims, values, strict=True)),
            calls=len(group),
            errors=sum(1 for e in group if e.status == "error"),
            input_tokens=sum(e.input_tokens for e in group),
            output_tokens=sum(e.output_tokens for e in group),
            cached_tokens=sum(e.cached_tokens for e in group),
            cost=money(sum((e.cost for e in group if e.cost is not None), Decimal(0))),
            unpriced_calls=sum(1 for e in group if e.cost is None),
        )
        for values, group in buckets.items()
    ]
    return sorted(rows, key=lambda r: sort_key(r, dims))


class InMemoryLedger:
    """A thread-safe, process-local :class:`Ledger`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, LedgerEntry] = {}
        self._by_run: dict[str | None, list[LedgerEntry]] = defaultdict(list)
        #: Running (cost, tokens) per run and per (run, stage): budget checks are O(1).
        #: Keys: ``(run, None, True)`` for a run, ``(run, stage, False)`` for a stage.
        self._sums: dict[tuple[str, str | None, bool], tuple[Decimal, int]] = {}

    def __repr__(self) -> str:
        return f"InMemoryLedger({len(self._rows)} rows)"

    def __len__(self) -> int:
        return len(self._rows)

    def record(self, entry: LedgerEntry) -> None:
        with self._lock:
            if entry.id in self._rows:
                return
            self._rows[entry.id] = entry
            self._by_run[entry.workflow_run_id].append(entry)
            if entry.workflow_run_id is not None:
                keys = {
                    (entry.workflow_run_id, None, True),
                    (entry.workflow_run_id, entry.stage_id, False),
                }
                for key in keys:
                    cost, tokens = self._sums.get(key, (Decimal(0), 0))
                    self._sums[key] = (cost + (entry.cost or 0), tokens + entry.total_tokens)

    def mark_failed(self, workflow_run_id: str, stage_id: str, attempt: int, failure: str) -> int:
        """Sets ``failure`` on the rows of one stage attempt that have none (the attempt failed
        after its calls were answered); returns how many rows it marked."""
        with self._lock:
            rows = self._by_run.get(workflow_run_id, [])
            marked = 0
            for i, entry in enumerate(rows):
                if entry.stage_id == stage_id and entry.attempt == attempt and not entry.failure:
                    rows[i] = self._rows[entry.id] = entry.model_copy(update={"failure": failure})
                    marked += 1
            return marked

    def _run_rows(self, workflow_run_id: str, stage_id: str | None) -> list[LedgerEntry]:
        with self._lock:
            rows = list(self._by_run.get(workflow_run_id, ()))
        return rows if stage_id is None else [e for e in rows if e.stage_id == stage_id]

    def totals(self, workflow_run_id: str, stage_id: str | None = None) -> tuple[Decimal, int]:
        with self._lock:
            key = (workflow_run_id, stage_id, stage_id is None)
            cost, tokens = self._sums.get(key, (Decimal(0), 0))
        return money(cost), tokens

    def spent(self, workflow_run_id: str, stage_id: str | None = None) -> Decimal:
        return self.totals(workflow_run_id, stage_id)[0]

    def run_and_stage_totals(
        self, workflow_run_id: str, stage_id: str
    ) -> tuple[tuple[Decimal, int], tuple[Decimal, int]]:
        """``(totals(run), totals(run, stage))`` under one lock (the kernel reads both after
        every stage)."""
        with self._lock:
            run = self._sums.get((workflow_run_id, None, True), (Decimal(0), 0))
            stage = self._sums.get((workflow_run_id, stage_id, False), (Decimal(0), 0))
        return (money(run[0]), run[1]), (money(stage[0]), stage[1])

    def rollup(
        self,
        group_by: Sequence[str] = ("model_key",),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        workflow_run_id: str | None = None,
        dag_ids: Collection[str] | None = None,
    ) -> list[RollupRow]:
        dims = normalize_group_by(group_by)
        if workflow_run_id is not None:
            rows = self._run_rows(workflow_run_id, None)
        else:
            with self._lock:
                rows = list(self._rows.values())
        if since is not None:
            rows = [e for e in rows if e.created_at >= _aware(since)]
        if until is not None:
            rows = [e for e in rows if e.created_at < _aware(until)]
        if dag_ids is not None:
            wanted = set(dag_ids)
            rows = [e for e in rows if e.dag_id in wanted]
        return rollup_entries(rows, dims)

    def entries(
        self, workflow_run_id: str | None = None, stage_id: str | None = None
    ) -> list[LedgerEntry]:
        if workflow_run_id is not None:
            rows = self._run_rows(workflow_run_id, stage_id)
        else:
            with self._lock:
                rows = list(self._rows.values())
            if stage_id is not None:
                rows = [e for e in rows if e.stage_id == stage_id]
        return sorted(rows, key=lambda e: e.created_at)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def day_of(value: Any) -> date | None:
    """A ``day`` group value from SQL (``'YYYY-MM-DD'`` text or a date) as a ``date``."""
    if isinstance(value, datetime):
        return value.date()
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def __getattr__(name: str) -> Any:
    if name == "SqlLedger":  # SQLAlchemy is only imported when the SQL ledger is asked for
        from airflow_workflow_engine.ai.sql_ledger import SqlLedger

        return SqlLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
