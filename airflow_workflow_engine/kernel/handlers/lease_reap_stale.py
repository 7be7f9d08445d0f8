"""``lease.reapStale``: give jobs of lost workers back to the queue."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from airflow_workflow_engine.kernel.commands import LeaseReapStale, LeaseReapStaleResult

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel


def handle(k: Kernel, cmd: LeaseReapStale) -> LeaseReapStaleResult:
    older_than = k.now() - timedelta(seconds=cmd.stale_threshold_seconds)
    return LeaseReapStaleResult(released=k.job_transport.release_stale(older_than))
