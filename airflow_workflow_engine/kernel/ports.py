"""The kernel's ports: narrow interfaces its adapters implement (in memory, SQL, S3, Airflow).

The kernel has no timers, threads or globals of its own: time comes from :class:`Clock`, work
is handed out through :class:`JobTransport`, and state lives behind :class:`Persistence`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from airflow_workflow_engine.kernel.records import (
    AnnotationRecord,
    IdempotencyRecord,
    Job,
    LogRecord,
    OutboxEvent,
    RunRecord,
    StageRecord,
)
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.context import StageContext
    from airflow_workflow_engine.definitions.stage import Stage
    from airflow_workflow_engine.definitions.workflow import Workflow

__all__ = [
    "ActivityExecutor",
    "BlobStore",
    "Clock",
    "EventSink",
    "JobRequest",
    "JobTransport",
    "Persistence",
    "Scheduler",
    "WorkflowRegistry",
]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class WorkflowRegistry(Protocol):
    def get_workflow(self, workflow_id: str) -> Workflow | None: ...


@runtime_checkable
class BlobStore(Protocol):
    """Large payloads and artifacts. Keys look like ``runs/<run_id>/stages/<stage_id>/...``."""

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    def get(self, key: str) -> bytes:
        """Raises :class:`~airflow_workflow_engine.errors.BlobNotFoundError` if absent."""
        ...

    def has(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete_prefix(self, prefix: str) -> int:
        """Deletes every key under ``prefix``; returns how many were deleted."""
        ...


class EventSink(Protocol):
    def publish(self, event: OutboxEvent) -> None:
        """Delivers one event; raising marks it for retry (and the dead-letter queue)."""
        ...


class Scheduler(Protocol):
    def schedule(self, command_type: str, payload: dict[str, Any], run_at: datetime) -> None:
        """Asks the host to dispatch ``command_type`` at ``run_at`` (a hint; may be a no-op)."""
        ...


@dataclass(frozen=True)
class JobRequest:
    workflow_run_id: str
    workflow_id: str
    stage_id: str
    priority: int = 5
    payload: dict[str, Any] = field(default_factory=dict)
    available_at: datetime | None = None


class JobTransport(Protocol):
    """Hands stage jobs to workers. Under Airflow the scheduler plays this part."""

    max_attempts: int

    def enqueue(self, request: JobRequest) -> str: ...

    def enqueue_parallel(self, requests: Sequence[JobRequest]) -> list[str]: ...

    def dequeue(self, worker_id: str | None = None) -> Job | None:
        """The next due job by priority, leased to ``worker_id``; ``None`` when none is due."""
        ...

    def complete(self, job_id: str) -> None: ...

    def suspend(self, job_id: str, next_poll_at: datetime | None) -> None: ...

    def fail(self, job_id: str, error: str, retry_at: datetime | None = None) -> None:
        """Fails a job; with ``retry_at`` it is queued again as the next attempt."""
        ...

    def cancel_run(self, workflow_run_id: str) -> int: ...

    def release_stale(self, older_than: datetime) -> int:
        """Re-queues jobs leased before ``older_than`` (their worker is presumed lost)."""
        ...


class ActivityExecutor(Protocol):
    """Runs a stage's user code. The default runs it in-process."""

    def execute(self, stage: Stage[Any, Any, Any], ctx: StageContext[Any, Any]) -> Any: ...

    def check_completion(
        self, stage: Stage[Any, Any, Any], state: dict[str, Any], ctx: StageContext[Any, Any]
    ) -> Any: ...

    def cancel(
        self, stage: Stage[Any, Any, Any], state: dict[str, Any], ctx: StageContext[Any, Any]
    ) -> None: ...


class Persistence(Protocol):
    """Runs, stages, logs, outbox, idempotency keys and annotations.

    Calls made inside ``with transaction():`` commit together or not at all; calls outside
    one are each atomic. ``transaction()`` nests (inner blocks join the outer one).

    Rows come back as stored: a stage output that was moved to the blob store is ``output``
    ``None`` with ``output_ref`` set; the kernel, which holds the blob store, loads it
    (:meth:`Kernel.load_output <airflow_workflow_engine.kernel.kernel.Kernel.load_output>`).
    """

    def transaction(self) -> AbstractContextManager[None]: ...

    # runs ---------------------------------------------------------------------------------
    def insert_run(self, run: RunRecord) -> None: ...

    def get_run(self, workflow_run_id: str, *, for_update: bool = False) -> RunRecord | None:
        """``for_update`` locks the run row until the transaction ends (PostgreSQL)."""
        ...

    def get_run_with_stages(
        self, workflow_run_id: str, *, for_update: bool = False
    ) -> tuple[RunRecord | None, list[StageRecord]]:
        """``get_run`` and ``list_stages`` in one read (one statement on SQL); ``(None, [])``
        for an unknown run.

        With ``for_update`` the run row is locked and read as last committed; the stage rows
        may be older on PostgreSQL: when the read waited for the lock, they are those of
        before the waited-for transaction (the statement's snapshot; only locked rows are
        re-read). Read the stages again (a later statement) where that matters."""
        ...

    def get_run_by_idempotency_key(self, key: str) -> RunRecord | None:
        """The newest run created with ``run.create``'s idempotency key ``key`` (under
        Airflow ``"<dag_id>/<run_id>"``), or ``None``."""
        ...

    def update_run(self, workflow_run_id: str, **changes: Any) -> RunRecord: ...

    def list_runs(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Ordered by priority (high first), then creation time."""
        ...

    # stages -------------------------------------------------------------------------------
    def insert_stage(self, stage: StageRecord) -> None:
        """Raises :class:`~airflow_workflow_engine.errors.StageExistsError` when the run
        already has a row for the stage (and writes nothing)."""
        ...

    def get_stage(self, workflow_run_id: str, stage_id: str) -> StageRecord | None:
        """The raw row: ``output`` is ``None`` and ``output_ref`` set for blob-stored outputs."""
        ...

    def list_stages(self, workflow_run_id: str) -> list[StageRecord]:
        """The raw rows, ordered by stage number (then stage id)."""
        ...

    def update_stage(self, workflow_run_id: str, stage_id: str, **changes: Any) -> StageRecord: ...

    def delete_stages(self, workflow_run_id: str, stage_ids: Sequence[str]) -> int: ...

    def list_due_suspended_stages(
        self,
        now: datetime,
        *,
        limit: int = 10,
        workflow_run_id: str | None = None,
        stage_id: str | None = None,
    ) -> list[StageRecord]: ...

    def earliest_suspended_poll_at(self) -> datetime | None: ...

    # logs ---------------------------------------------------------------------------------
    def insert_logs(self, logs: Sequence[LogRecord]) -> None: ...

    def list_logs(self, workflow_run_id: str, stage_id: str | None = None) -> list[LogRecord]: ...

    # outbox -------------------------------------------------------------------------------
    def append_event(
        self,
        workflow_run_id: str,
        type: str,
        payload: dict[str, Any],
        *,
        occurred_at: datetime,
        causation_id: str | None = None,
        run_changes: Mapping[str, Any] | None = None,
    ) -> OutboxEvent:
        """Writes an event with the run's next gap-free sequence number. ``run_changes``:
        fields of the run to update in the same write (``update_run``'s, without its read)."""
        ...

    def list_events(self, workflow_run_id: str) -> list[OutboxEvent]: ...

    def list_unpublished_events(
        self, limit: int = 100, workflow_run_id: str | None = None
    ) -> list[OutboxEvent]:
        """Not yet published and not dead-lettered, in (run, sequence) order; of one run with
        ``workflow_run_id``."""
        ...

    def mark_event_published(self, event_id: str, at: datetime) -> None: ...

    def mark_events_published(self, event_ids: Sequence[str], at: datetime) -> None:
        """Marks several events published at once (all or none; ``KeyError`` for a missing
        one)."""
        ...

    def record_event_failure(
        self, event_id: str, error: str, retry_count: int, dlq_at: datetime | None
    ) -> None: ...

    def list_dlq_events(
        self, limit: int = 100, workflow_run_id: str | None = None
    ) -> list[OutboxEvent]: ...

    def requeue_dlq_events(self, event_ids: Sequence[str]) -> int: ...

    # idempotency --------------------------------------------------------------------------
    def acquire_idempotency(
        self, key: str, command_type: str, *, now: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        """Claims a key in its own committed transaction. Returns ``None`` when claimed, the
        completed record to replay, or raises ``IdempotencyInProgressError``."""
        ...

    def complete_idempotency(self, key: str, command_type: str, result: Any) -> None: ...

    def release_idempotency(self, key: str, command_type: str) -> None: ...

    # annotations --------------------------------------------------------------------------
    def insert_annotation(self, annotation: AnnotationRecord) -> bool:
        """``False`` (and nothing written) for a duplicate (run, key, idempotency key)."""
        ...

    def list_annotations(
        self,
        workflow_run_id: str,
        *,
        key_prefix: str | None = None,
        actor_id: str | None = None,
    ) -> list[AnnotationRecord]: ...
