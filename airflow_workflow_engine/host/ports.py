"""The kernel's host ports under Airflow: Airflow's scheduler is the job transport.

Under Airflow the kernel never hands out work itself. Each stage is a task; the scheduler
decides when it runs, the executor where, and Airflow's retries are the stage's attempts
(``JobExecute(attempt=try_number, max_attempts=retries + 1)``); the triggerer polls suspended
stages. So the job transport and the scheduler port only acknowledge what the kernel asks
(and log it at debug level), and published outbox events go to the log.

No ``airflow`` import here: these adapters are plain Python.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow_workflow_engine.kernel.ports import JobRequest
from airflow_workflow_engine.kernel.records import Job, OutboxEvent

__all__ = ["AirflowJobTransport", "AirflowScheduler", "LoggingEventSink"]

logger = logging.getLogger("airflow_workflow_engine.airflow")


class AirflowJobTransport:
    """A job transport whose queue is Airflow's scheduler: enqueueing is a no-op.

    ``max_attempts`` is only a fallback: operators pass the task's ``retries + 1``.
    """

    def __init__(self, max_attempts: int = 1) -> None:
        self.max_attempts = max_attempts

    def enqueue(self, request: JobRequest) -> str:
        return self.enqueue_parallel([request])[0]

    def enqueue_parallel(self, requests: Sequence[JobRequest]) -> list[str]:
        ids = [uuid.uuid4().hex for _ in requests]
        for job_id, req in zip(ids, requests, strict=True):
            logger.debug(
                "stage %s of run %s is ready (job %s); Airflow's scheduler runs its task",
                req.stage_id,
                req.workflow_run_id,
                job_id,
            )
        return ids

    def dequeue(self, worker_id: str | None = None) -> Job | None:
        del worker_id
        return None

    def complete(self, job_id: str) -> None:
        del job_id

    def suspend(self, job_id: str, next_poll_at: datetime | None) -> None:
        del job_id, next_poll_at

    def fail(self, job_id: str, error: str, retry_at: datetime | None = None) -> None:
        del job_id, error, retry_at

    def cancel_run(self, workflow_run_id: str) -> int:
        del workflow_run_id
        return 0

    def release_stale(self, older_than: datetime) -> int:
        del older_than
        return 0


class AirflowScheduler:
    """The kernel's scheduling hints are Airflow's job (retries, the triggerer): ignored."""

    def schedule(self, command_type: str, payload: dict[str, Any], run_at: datetime) -> None:
        logger.debug(
            "kernel asked for %s at %s (%s); Airflow schedules it", command_type, run_at, payload
        )


class LoggingEventSink:
    """Outbox events, when flushed, go to the log (plugins subscribe through the kernel)."""

    def publish(self, event: OutboxEvent) -> None:
        logger.debug(
            "event %s #%d of run %s: %s",
            event.type,
            event.sequence,
            event.workflow_run_id,
            event.payload,
        )
