"""``run.rerunFrom``: keep earlier groups, drop the target group and later, run again from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine.blob.scoped import stage_prefix
from airflow_workflow_engine.errors import InvalidTransitionError
from airflow_workflow_engine.kernel.approvals import record_rerun
from airflow_workflow_engine.kernel.commands import RunRerunFrom, RunRerunFromResult
from airflow_workflow_engine.kernel.records import RunRecord
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.kernel.kernel import Kernel


def _check(k: Kernel, run: RunRecord, wf: Workflow, number: int) -> None:
    if not run.status.is_terminal:
        raise InvalidTransitionError(
            "run",
            run.status.value,
            Status.RUNNING.value,
            "run.rerunFrom needs a finished run (COMPLETED, FAILED or CANCELLED).",
        )
    records = {r.stage_id: r for r in k.persistence.list_stages(run.id)}
    for earlier in range(number):
        for st in wf.group(earlier):
            rec = records.get(st.id)
            if rec is None or rec.status != Status.COMPLETED:
                state = rec.status.value if rec else "never run"
                raise InvalidTransitionError(
                    "run",
                    run.status.value,
                    Status.RUNNING.value,
                    f"cannot rerun from group {number + 1}: earlier stage '{st.id}' is {state}; "
                    "rerun from that stage instead.",
                )


def handle(k: Kernel, cmd: RunRerunFrom) -> RunRerunFromResult:
    run = k.require_run(cmd.workflow_run_id)
    wf = k.workflow(run.workflow_id)
    number = wf.group_of(cmd.from_stage_id)  # StageNotFoundError for an unknown stage
    _check(k, run, wf, number)
    affected = [st.id for g in range(number, wf.group_count) for st in wf.group(g)]
    # Blobs first: a rerun must never read a stale artifact of the attempt it replaces.
    deleted_blobs = sum(k.blob_store.delete_prefix(stage_prefix(run.id, sid)) for sid in affected)
    with k.persistence.transaction():
        run = k.require_run(cmd.workflow_run_id, for_update=True)
        _check(k, run, wf, number)
        existing = {r.stage_id: r for r in k.persistence.list_stages(run.id)}
        deleted = [sid for sid in affected if sid in existing]
        k.persistence.delete_stages(run.id, deleted)
        # Provenance of the rerun; it voids the approvals that depended on these stages.
        record_rerun(
            k,
            run.id,
            [existing[sid] for sid in deleted],
            reason=f"rerun from stage '{cmd.from_stage_id}'",
            from_stage_id=cmd.from_stage_id,
        )
        run = k.set_run_status(
            run, Status.RUNNING, output=None, completed_at=None, error_message=None
        )
        k.emit(
            run.id,
            "workflow:started",
            {"rerun_from": cmd.from_stage_id, "group": number, "deleted_stages": deleted},
        )
        k.start_group(run, wf, number)
    return RunRerunFromResult(
        workflow_run_id=run.id,
        from_stage_id=cmd.from_stage_id,
        from_group=number,
        deleted_stages=deleted,
        deleted_blobs=deleted_blobs,
    )
