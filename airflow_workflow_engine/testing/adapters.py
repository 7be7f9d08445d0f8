"""In-memory adapters for the kernel's ports: job transport, event sink and scheduler."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_workflow_engine.kernel.ports import Clock, JobRequest
from airflow_workflow_engine.kernel.records import Job, OutboxEvent, new_id

__all__ = ["CollectingEventSink", "InMemoryJobTransport", "NoopScheduler", "ScheduledCommand"]


class InMemoryJobTransport:
    """A priority job queue with leases, retries and per-run cancellation."""

    def __init__(self, clock: Clock | None = None, max_attempts: int = 3) -> None:
        self.clock = clock
        self.max_attempts = max_attempts
        self.jobs: dict[str, Job] = {}
        self._queued: dict[str, None] = {}  # ids of jobs with status "queued"
        self._lock = threading.Lock()

    def _now(self) -> datetime:
        return self.clock.now() if self.clock else datetime.now(timezone.utc)

    def enqueue(self, request: JobRequest) -> str:
        return self.enqueue_parallel([request])[0]

    def enqueue_parallel(self, requests: Sequence[JobRequest]) -> list[str]:
        ids = []
        with self._lock:
            for req in requests:
                job = Job.trusted(
                    job_id=new_id(),
                    workflow_run_id=req.workflow_run_id,
                    workflow_id=req.workflow_id,
                    stage_id=req.stage_id,
                    priority=req.priority,
                    payload=dict(req.payload),
                    max_attempts=self.max_attempts,
                    available_at=req.available_at,
                )
                self.jobs[job.job_id] = job
                self._queued[job.job_id] = None
                ids.append(job.job_id)
        return ids

    def _put(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        if job.status == "queued":
            self._queued[job.job_id] = None
        else:
            self._queued.pop(job.job_id, None)

    def _due(self, now: datetime) -> list[Job]:
        queued = [self.jobs[jid] for jid in self._queued]
        return [j for j in queued if j.available_at is None or j.available_at <= now]

    def dequeue(self, worker_id: str | None = None) -> Job | None:
        now = self._now()
        with self._lock:
            due = self._due(now)
            if not due:
                return None
            job = min(due, key=lambda j: (-j.priority, j.available_at or now))
            leased = job.evolve(status="running", worker_id=worker_id, locked_at=now)
            self._put(leased)
            return leased

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._put(self.jobs[job_id].evolve(**changes))

    def complete(self, job_id: str) -> None:
        self._update(job_id, status="completed")

    def suspend(self, job_id: str, next_poll_at: datetime | None) -> None:
        self._update(job_id, status="suspended", available_at=next_poll_at)

    def fail(self, job_id: str, error: str, retry_at: datetime | None = None) -> None:
        with self._lock:
            job = self.jobs[job_id]
            if retry_at is not None and job.attempt < job.max_attempts:
                self._put(
                    job.model_copy(
                        update={
                            "status": "queued",
                            "attempt": job.attempt + 1,
                            "available_at": retry_at,
                            "worker_id": None,
                            "locked_at": None,
                            "last_error": error,
                        }
                    )
                )
            else:
                self._put(job.model_copy(update={"status": "failed", "last_error": error}))

    def cancel_run(self, workflow_run_id: str) -> int:
        with self._lock:
            open_jobs = [
                j
                for j in self.jobs.values()
                if j.workflow_run_id == workflow_run_id
                and j.status in ("queued", "running", "suspended")
            ]
            for j in open_jobs:
                self._put(j.model_copy(update={"status": "cancelled"}))
            return len(open_jobs)

    def release_stale(self, older_than: datetime) -> int:
        with self._lock:
            stale = [
                j
                for j in self.jobs.values()
                if j.status == "running" and j.locked_at is not None and j.locked_at < older_than
            ]
            for j in stale:
                self._put(
                    j.model_copy(update={"status": "queued", "worker_id": None, "locked_at": None})
                )
            return len(stale)

    def next_available_at(self) -> datetime | None:
        """When the earliest queued job becomes due (``None`` if nothing is queued)."""
        with self._lock:
            queued = [self.jobs[jid] for jid in self._queued]
        if not queued:
            return None
        return min((j.available_at or self._now()) for j in queued)


class CollectingEventSink:
    """Keeps every published event in ``events`` (in publish order)."""

    def __init__(self) -> None:
        self.events: list[OutboxEvent] = []
        self._lock = threading.Lock()

    def publish(self, event: OutboxEvent) -> None:
        with self._lock:
            self.events.append(event)

    def types(self, workflow_run_id: str | None = None) -> list[str]:
        return [
            e.type
            for e in self.events
            if workflow_run_id is None or e.workflow_run_id == workflow_run_id
        ]


@dataclass(frozen=True)
class ScheduledCommand:
    command_type: str
    payload: dict[str, Any]
    run_at: datetime


class NoopScheduler:
    """Records what the kernel asked to schedule and does nothing else."""

    def __init__(self) -> None:
        self.scheduled: list[ScheduledCommand] = []

    def schedule(self, command_type: str, payload: dict[str, Any], run_at: datetime) -> None:
        self.scheduled.append(ScheduledCommand(command_type, dict(payload), run_at))
