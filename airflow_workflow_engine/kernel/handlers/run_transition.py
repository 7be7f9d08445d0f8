"""``run.transition``: after a stage finished, fail the run, start the next group or complete."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine.definitions.validation import to_json, validate_model
from airflow_workflow_engine.errors import (
    OutputValidationError,
    StageExistsError,
    WorkflowEngineError,
)
from airflow_workflow_engine.kernel.commands import RunTransition, RunTransitionResult
from airflow_workflow_engine.kernel.records import RunRecord, StageRecord
from airflow_workflow_engine.kernel.stage_io import build_workflow_context, group_output
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.kernel.kernel import Kernel

_DONE = {Status.COMPLETED, Status.SKIPPED}


def handle(k: Kernel, cmd: RunTransition) -> RunTransitionResult:
    with k.persistence.transaction():
        run, stages = k.require_run_with_stages(cmd.workflow_run_id, for_update=True)
        if run.status.is_terminal or run.status == Status.PENDING:
            return RunTransitionResult(workflow_run_id=run.id, action="noop", status=run.status)
        wf = k.workflow(run.workflow_id)
        try:
            return _decide(k, run, wf, stages)
        except StageExistsError:
            # This read waited for the run's lock while another transition started the next
            # group: on PostgreSQL the stage rows were read as before it committed (only the
            # locked run row is re-read). Decide again on the stages as they are now.
            return _decide(k, run, wf, k.persistence.list_stages(run.id))


def _decide(
    k: Kernel, run: RunRecord, wf: Workflow, stages: list[StageRecord]
) -> RunTransitionResult:
    records = {r.stage_id: k.load_output(r) for r in stages}
    failed = [r for r in records.values() if r.status == Status.FAILED]
    if failed:
        first = min(failed, key=lambda r: r.stage_number)
        run = k.fail_run(run, f"Stage '{first.stage_id}' failed: {first.error_message}")
        return RunTransitionResult(workflow_run_id=run.id, action="failed", status=run.status)
    for number in range(wf.group_count):
        group = [records.get(st.id) for st in wf.group(number)]
        if any(r is None for r in group):
            k.start_group(run, wf, number, existing=records.keys())
            return RunTransitionResult(
                workflow_run_id=run.id, action="advanced", status=run.status, group=number
            )
        present = [r for r in group if r is not None]
        if all(r.status in _DONE for r in present):
            continue
        return _wait_on_group(k, run, number, present)
    return _complete(k, run, wf, list(records.values()))


def _wait_on_group(
    k: Kernel, run: RunRecord, number: int, group: list[StageRecord]
) -> RunTransitionResult:
    """The group is still busy: the run is SUSPENDED when all that is left is waiting."""
    open_stages = [r for r in group if r.status not in _DONE]
    if all(r.status == Status.SUSPENDED for r in open_stages) and run.status == Status.RUNNING:
        run = k.set_run_status(run, Status.SUSPENDED)
        k.emit(
            run.id,
            "workflow:suspended",
            {"group": number, "stages": [r.stage_id for r in open_stages]},
        )
        return RunTransitionResult(
            workflow_run_id=run.id, action="suspended", status=run.status, group=number
        )
    return RunTransitionResult(
        workflow_run_id=run.id, action="noop", status=run.status, group=number
    )


def _complete(
    k: Kernel, run: RunRecord, wf: Workflow, records: list[StageRecord]
) -> RunTransitionResult:
    last = wf.group_count - 1
    try:
        context = build_workflow_context(wf, records, wf.group_count)
        output = group_output(wf, last, context, "workflow output")
        value = to_json(
            validate_model(
                wf.output, output, OutputValidationError, f"output of workflow '{wf.id}'"
            )
        )
    except WorkflowEngineError as exc:
        run = k.fail_run(run, str(exc))
        return RunTransitionResult(workflow_run_id=run.id, action="failed", status=run.status)
    now = k.now()
    run = k.set_run_status_and_emit(
        run,
        Status.COMPLETED,
        "workflow:completed",
        {"output": value},
        output=value,
        completed_at=now,
        error_message=None,
        **k.run_ai_totals(run.id),
    )
    return RunTransitionResult(workflow_run_id=run.id, action="completed", status=run.status)
