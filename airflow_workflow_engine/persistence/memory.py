"""Persistence in process memory: for tests, the demo and benchmarks.

Transactions are real: a lock serializes them and an undo log rolls back every write made
inside a ``transaction()`` block that raises, so "nothing half-written" holds here too.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from airflow_workflow_engine.errors import (
    IdempotencyInProgressError,
    RunNotFoundError,
    StageExistsError,
)
from airflow_workflow_engine.kernel.records import (
    AnnotationRecord,
    IdempotencyRecord,
    LogRecord,
    OutboxEvent,
    RunRecord,
    StageRecord,
    new_id,
)
from airflow_workflow_engine.kernel.status import Status

__all__ = ["InMemoryPersistence"]

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()
#: Stage rows in workflow order (read 16 times per run of five stages).
_STAGE_ORDER = operator.attrgetter("stage_number", "stage_id")


class _Transaction:
    """The store's (re-entrant) transaction: the outermost one undoes every logged write on
    an exception. One per store, entered by every write (several dozen times per run): a
    plain class rather than ``@contextmanager``, and the nesting depth lives in the store."""

    __slots__ = ("_store",)

    def __init__(self, store: InMemoryPersistence) -> None:
        self._store = store

    def __enter__(self) -> None:
        store = self._store
        store._lock.acquire()
        store._depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        store._depth -= 1
        if store._depth:
            store._lock.release()
            return
        try:
            if exc_type is not None:
                for table, key, old in reversed(store._undo):
                    if old is _MISSING:
                        table.pop(key, None)
                    else:
                        table[key] = old
        finally:
            store._undo.clear()
            store._lock.release()


class InMemoryPersistence:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        #: (table, key, previous value or _MISSING) of each write inside a transaction.
        self._undo: list[tuple[dict[Any, Any], Any, Any]] = []
        self._tx = _Transaction(self)
        self.runs: dict[str, RunRecord] = {}
        self.stages: dict[str, dict[str, StageRecord]] = {}
        self.logs: dict[str, dict[str, LogRecord]] = {}
        self.events: dict[str, OutboxEvent] = {}
        self.annotations: dict[str, dict[str, AnnotationRecord]] = {}
        self.idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        # Indexes, kept by the same undo-logged writes, so scans stay per run.
        self._runs_by_status: dict[Status, dict[str, None]] = {st: {} for st in Status}
        self._runs_by_key: dict[str, str] = {}
        self._suspended: dict[tuple[str, str], None] = {}
        self._events_by_run: dict[str, dict[str, None]] = {}
        self._unpublished: dict[str, None] = {}

    # -- transactions ----------------------------------------------------------------------
    def transaction(self) -> _Transaction:
        return self._tx

    def _set(self, table: dict[K, V], key: K, value: V) -> None:
        if self._depth:
            self._undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    def _del(self, table: dict[K, V], key: K) -> None:
        old: Any = table.pop(key, _MISSING)
        if self._depth and old is not _MISSING:
            self._undo.append((table, key, old))

    # -- runs ------------------------------------------------------------------------------
    def insert_run(self, run: RunRecord) -> None:
        with self._tx:
            if run.id in self.runs:
                raise ValueError(f"run {run.id} exists")
            self._put_run(run)

    def _put_run(self, run: RunRecord) -> None:
        old = self.runs.get(run.id)
        if old is not None and old.status != run.status:
            self._del(self._runs_by_status[old.status], run.id)
        if old is None or old.status != run.status:
            self._set(self._runs_by_status[run.status], run.id, None)
        if old is None and run.idempotency_key is not None:
            self._set(self._runs_by_key, run.idempotency_key, run.id)  # the newest wins
        self._set(self.runs, run.id, run)

    def get_run(self, workflow_run_id: str, *, for_update: bool = False) -> RunRecord | None:
        with self._lock:
            return self.runs.get(workflow_run_id)

    def get_run_with_stages(
        self, workflow_run_id: str, *, for_update: bool = False
    ) -> tuple[RunRecord | None, list[StageRecord]]:
        run = self.get_run(workflow_run_id)
        if run is None:
            return None, []
        return run, self.list_stages(workflow_run_id)

    def get_run_by_idempotency_key(self, key: str) -> RunRecord | None:
        with self._lock:
            run_id = self._runs_by_key.get(key)
            return None if run_id is None else self.runs.get(run_id)

    def update_run(self, workflow_run_id: str, **changes: Any) -> RunRecord:
        with self._tx:
            run = self.runs.get(workflow_run_id)
            if run is None:
                raise RunNotFoundError(workflow_run_id)
            new = run.evolve(**changes)
            self._put_run(new)
            return new

    def list_runs(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        with self._lock:
            ids = self._runs_by_status[status] if status is not None else self.runs
            rows = [
                self.runs[rid]
                for rid in ids
                if workflow_id is None or self.runs[rid].workflow_id == workflow_id
            ]
        rows.sort(key=lambda r: (-r.priority, r.created_at, r.id))
        return rows[:limit]

    # -- stages ----------------------------------------------------------------------------
    def insert_stage(self, stage: StageRecord) -> None:
        with self._tx:
            if stage.stage_id in self.stages.get(stage.workflow_run_id, {}):
                raise StageExistsError(stage.workflow_run_id, stage.stage_id)
            self._put_stage(stage)

    def _put_stage(self, stage: StageRecord) -> None:
        key = (stage.workflow_run_id, stage.stage_id)
        if stage.status == Status.SUSPENDED:
            self._set(self._suspended, key, None)
        else:
            self._del(self._suspended, key)
        self._set(self.stages.setdefault(stage.workflow_run_id, {}), stage.stage_id, stage)

    def get_stage(self, workflow_run_id: str, stage_id: str) -> StageRecord | None:
        with self._lock:
            return self.stages.get(workflow_run_id, {}).get(stage_id)

    def list_stages(self, workflow_run_id: str) -> list[StageRecord]:
        with self._lock:
            rows = list(self.stages.get(workflow_run_id, {}).values())
        rows.sort(key=_STAGE_ORDER)
        return rows

    def update_stage(self, workflow_run_id: str, stage_id: str, **changes: Any) -> StageRecord:
        with self._tx:
            stage = self.stages.get(workflow_run_id, {}).get(stage_id)
            if stage is None:
                raise KeyError(f"stage {stage_id} of run {workflow_run_id} does not exist")
            new = stage.evolve(**changes)
            self._put_stage(new)
            return new

    def delete_stages(self, workflow_run_id: str, stage_ids: Sequence[str]) -> int:
        with self._tx:
            count = 0
            table = self.stages.get(workflow_run_id, {})
            for sid in stage_ids:
                if sid in table:
                    self._del(table, sid)
                    self._del(self._suspended, (workflow_run_id, sid))
                    count += 1
            return count

    def list_due_suspended_stages(
        self,
        now: datetime,
        *,
        limit: int = 10,
        workflow_run_id: str | None = None,
        stage_id: str | None = None,
    ) -> list[StageRecord]:
        with self._lock:
            suspended = [self.stages[rid][sid] for rid, sid in self._suspended]
            rows = [
                s
                for s in suspended
                if (s.next_poll_at is None or s.next_poll_at <= now)
                and (workflow_run_id is None or s.workflow_run_id == workflow_run_id)
                and (stage_id is None or s.stage_id == stage_id)
            ]
        rows.sort(key=lambda s: (s.next_poll_at or now, s.workflow_run_id, s.stage_id))
        return rows[:limit]

    def earliest_suspended_poll_at(self) -> datetime | None:
        with self._lock:
            times = [
                t
                for rid, sid in self._suspended
                if (t := self.stages[rid][sid].next_poll_at) is not None
            ]
        return min(times, default=None)

    # -- logs ------------------------------------------------------------------------------
    def insert_logs(self, logs: Sequence[LogRecord]) -> None:
        with self._tx:
            for log in logs:
                self._set(self.logs.setdefault(log.workflow_run_id, {}), log.id, log)

    def list_logs(self, workflow_run_id: str, stage_id: str | None = None) -> list[LogRecord]:
        with self._lock:
            return [
                log
                for log in self.logs.get(workflow_run_id, {}).values()
                if stage_id is None or log.stage_id == stage_id
            ]

    # -- outbox ----------------------------------------------------------------------------
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
        with self._tx:
            old = self.runs.get(workflow_run_id)
            if old is None:
                raise RunNotFoundError(workflow_run_id)
            if run_changes:
                run = old.evolve(**{**run_changes, "event_sequence": old.event_sequence + 1})
                self._put_run(run)
            else:
                # Only the sequence moves: no status or key index to touch.
                run = old.evolve(event_sequence=old.event_sequence + 1)
                self._set(self.runs, workflow_run_id, run)
            # Built from the kernel's own values (13 events per run): not re-validated.
            event = OutboxEvent.trusted(
                id=new_id(),
                workflow_run_id=workflow_run_id,
                sequence=run.event_sequence,
                type=type,
                payload=dict(payload),  # a copy, as validation would make
                causation_id=causation_id,
                occurred_at=occurred_at,
            )
            self._set(self.events, event.id, event)
            self._set(self._events_by_run.setdefault(workflow_run_id, {}), event.id, None)
            self._set(self._unpublished, event.id, None)
            return event

    def list_events(self, workflow_run_id: str) -> list[OutboxEvent]:
        with self._lock:
            rows = [self.events[eid] for eid in self._events_by_run.get(workflow_run_id, {})]
        return sorted(rows, key=lambda e: e.sequence)

    def list_unpublished_events(
        self, limit: int = 100, workflow_run_id: str | None = None
    ) -> list[OutboxEvent]:
        with self._lock:
            # Only the index of pending events is read, so a flush does not slow down as
            # published events pile up.
            if workflow_run_id is None:
                rows = [self.events[eid] for eid in self._unpublished]
            else:
                rows = [
                    self.events[eid]
                    for eid in self._events_by_run.get(workflow_run_id, {})
                    if eid in self._unpublished
                ]
        rows.sort(key=lambda e: (e.occurred_at, e.workflow_run_id, e.sequence))
        return rows[:limit]

    def _update_event(self, event_id: str, **changes: Any) -> None:
        with self._tx:
            event = self.events[event_id].evolve(**changes)
            self._set(self.events, event_id, event)
            # The index holds exactly the events a flush may publish: not yet published and
            # not dead-lettered (a requeue puts them back).
            if event.published_at is None and event.dlq_at is None:
                if event_id not in self._unpublished:
                    self._set(self._unpublished, event_id, None)
            else:
                self._del(self._unpublished, event_id)

    def mark_event_published(self, event_id: str, at: datetime) -> None:
        self._update_event(event_id, published_at=at)

    def mark_events_published(self, event_ids: Sequence[str], at: datetime) -> None:
        with self._tx:
            events, pending = self.events, self._unpublished
            for eid in event_ids:
                # A published event leaves the index of pending ones.
                self._set(events, eid, events[eid].evolve(published_at=at))
                self._del(pending, eid)

    def record_event_failure(
        self, event_id: str, error: str, retry_count: int, dlq_at: datetime | None
    ) -> None:
        self._update_event(event_id, last_error=error, retry_count=retry_count, dlq_at=dlq_at)

    def list_dlq_events(
        self, limit: int = 100, workflow_run_id: str | None = None
    ) -> list[OutboxEvent]:
        with self._lock:
            rows = [
                e
                for e in self.events.values()
                if e.dlq_at is not None and workflow_run_id in (None, e.workflow_run_id)
            ]
        rows.sort(key=lambda e: (e.workflow_run_id, e.sequence))
        return rows[:limit]

    def requeue_dlq_events(self, event_ids: Sequence[str]) -> int:
        with self._tx:
            for eid in event_ids:
                self._update_event(eid, dlq_at=None, retry_count=0)
            return len(event_ids)

    # -- idempotency -----------------------------------------------------------------------
    def acquire_idempotency(
        self, key: str, command_type: str, *, now: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        with self._lock:
            existing = self.idempotency.get((key, command_type))
            if existing is not None:
                if existing.state == "completed":
                    return existing
                if existing.expires_at is None or existing.expires_at > now:
                    raise IdempotencyInProgressError(key, command_type)
            self.idempotency[(key, command_type)] = IdempotencyRecord(
                key=key,
                command_type=command_type,
                state="in_progress",
                created_at=now,
                expires_at=expires_at,
            )
            return None

    def complete_idempotency(self, key: str, command_type: str, result: Any) -> None:
        with self._lock:
            rec = self.idempotency[(key, command_type)]
            self.idempotency[(key, command_type)] = rec.evolve(
                state="completed", result=result, expires_at=None
            )

    def release_idempotency(self, key: str, command_type: str) -> None:
        with self._lock:
            self.idempotency.pop((key, command_type), None)

    # -- annotations -----------------------------------------------------------------------
    def insert_annotation(self, annotation: AnnotationRecord) -> bool:
        with self._tx:
            table = self.annotations.setdefault(annotation.workflow_run_id, {})
            if annotation.idempotency_key is not None:
                for a in table.values():
                    if a.key == annotation.key and a.idempotency_key == annotation.idempotency_key:
                        return False
            self._set(table, annotation.id, annotation)
            return True

    def list_annotations(
        self,
        workflow_run_id: str,
        *,
        key_prefix: str | None = None,
        actor_id: str | None = None,
    ) -> list[AnnotationRecord]:
        with self._lock:
            return [
                a
                for a in self.annotations.get(workflow_run_id, {}).values()
                if (key_prefix is None or a.key.startswith(key_prefix))
                and (actor_id is None or a.actor.id == actor_id)
            ]
