"""``run.reapStuck``: fail RUNNING runs with no activity for too long.

Never reaps a run whose stage is legitimately SUSPENDED (waiting on a batch job is activity),
and fails a run with its failing stage's error rather than a generic one.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

from airflow_workflow_engine.kernel.commands import RunReapStuck, RunReapStuckResult
from airflow_workflow_engine.kernel.records import RunRecord
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel


def handle(k: Kernel, cmd: RunReapStuck) -> RunReapStuckResult:
    result = RunReapStuckResult()
    threshold = timedelta(seconds=cmd.stuck_threshold_seconds)
    for run in k.persistence.list_runs(status=Status.RUNNING, limit=cmd.max_runs):
        reaped = k.run_isolated(f"reaping run {run.id}", partial(_reap, k, run, threshold))
        if reaped:
            result.reaped.append(run.id)
    return result


def _reap(k: Kernel, run: RunRecord, threshold: timedelta) -> bool:
    with k.persistence.transaction():
        run = k.require_run(run.id, for_update=True)
        if run.status != Status.RUNNING:
            return False
        stages = k.persistence.list_stages(run.id)
        if any(s.status == Status.SUSPENDED for s in stages):
            return False
        last = max([run.updated_at, *(s.updated_at for s in stages)])
        idle = k.now() - last
        if idle < threshold:
            return False
        failed = [s for s in stages if s.status == Status.FAILED]
        running = [s for s in stages if s.status == Status.RUNNING]
        if failed:
            error = f"Stage '{failed[0].stage_id}' failed: {failed[0].error_message}"
        elif running:
            error = (
                f"Stage '{running[0].stage_id}' has been RUNNING with no activity for "
                f"{idle.total_seconds():.0f}s (its worker was probably lost)."
            )
        else:
            error = f"No activity for {idle.total_seconds():.0f}s; the run was reaped as stuck."
        k.fail_run(run, error)
        return True
