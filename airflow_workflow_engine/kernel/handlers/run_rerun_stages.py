"""``run.rerunStages``: run chosen stages again, keeping every other stage's output.

This is Airflow's "clear" in kernel terms: the cleared tasks run again, the tasks that were not
cleared keep their results. The chosen stages' rows and artifacts are dropped and the run is
RUNNING again; a stage that has not finished (running, suspended, pending) is left alone, so
clearing a deferred batch task re-attaches to its batch instead of submitting another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.blob.scoped import stage_prefix
from airflow_workflow_engine.kernel.approvals import record_rerun
from airflow_workflow_engine.kernel.commands import RunRerunStages, RunRerunStagesResult
from airflow_workflow_engine.kernel.records import StageRecord
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.kernel.kernel import Kernel

_DONE = {Status.COMPLETED, Status.SKIPPED}


def _finished(k: Kernel, run_id: str, stage_ids: list[str]) -> list[StageRecord]:
    wanted = set(stage_ids)
    return [
        rec
        for rec in k.persistence.list_stages(run_id)
        if rec.stage_id in wanted and rec.status.is_terminal
    ]


def _earlier_groups_done(k: Kernel, run_id: str, wf: Workflow, number: int) -> bool:
    records = {r.stage_id: r for r in k.persistence.list_stages(run_id)}
    return all(
        (rec := records.get(st.id)) is not None and rec.status in _DONE
        for earlier in range(number)
        for st in wf.group(earlier)
    )


def handle(k: Kernel, cmd: RunRerunStages) -> RunRerunStagesResult:
    run = k.require_run(cmd.workflow_run_id)
    wf = k.workflow(run.workflow_id)
    # StageNotFoundError names the workflow's stages for an unknown id.
    ordered = sorted(set(cmd.stage_ids), key=wf.group_of)
    guard = cmd.if_finished_before_attempt
    previous = k.persistence.get_stage(run.id, cmd.stage_ids[0]) if guard is not None else None
    seen: dict[str, Any] = (
        {"previous_status": previous.status, "previous_attempt": previous.attempt}
        if previous is not None
        else {}
    )
    if guard is not None and (
        previous is None or not previous.status.is_terminal or previous.attempt >= guard
    ):
        # Not a rerun: a duplicate delivery of this series of tries (job.execute replays it).
        return RunRerunStagesResult(
            workflow_run_id=run.id,
            status=run.status,
            deleted_stages=[],
            deleted_blobs=0,
            rerun=False,
            **seen,
        )
    # Blobs first (as run.rerunFrom): a rerun must never read an artifact of the attempt it
    # replaces. Only stages that are finished now are candidates.
    candidates = [rec.stage_id for rec in _finished(k, run.id, ordered)]
    deleted_blobs = sum(k.blob_store.delete_prefix(stage_prefix(run.id, sid)) for sid in candidates)
    with k.persistence.transaction():
        run = k.require_run(cmd.workflow_run_id, for_update=True)
        # Re-read under the run's lock: a stage that started meanwhile is not dropped.
        replaced = _finished(k, run.id, candidates)
        deleted = [rec.stage_id for rec in replaced]
        if not deleted:
            return RunRerunStagesResult(
                workflow_run_id=run.id,
                status=run.status,
                deleted_stages=[],
                deleted_blobs=0,
                **seen,
            )
        k.persistence.delete_stages(run.id, deleted)
        # Provenance of the rerun; it voids the approvals that depended on these stages.
        record_rerun(k, run.id, replaced, reason=cmd.reason or "rerun of chosen stages")
        if run.status != Status.RUNNING:
            run = k.set_run_status(
                run, Status.RUNNING, output=None, completed_at=None, error_message=None
            )
        k.emit(
            run.id,
            "workflow:started",
            {"rerun_stages": deleted, **({"reason": cmd.reason} if cmd.reason else {})},
        )
        first = min(wf.group_of(sid) for sid in deleted)
        if _earlier_groups_done(k, run.id, wf, first):
            k.start_group(run, wf, first)
    return RunRerunStagesResult(
        workflow_run_id=run.id,
        status=run.status,
        deleted_stages=deleted,
        deleted_blobs=deleted_blobs,
        **seen,
    )
