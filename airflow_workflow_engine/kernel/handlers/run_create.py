"""``run.create``: validate input and config, then write the PENDING run and its annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine.definitions.validation import to_json
from airflow_workflow_engine.kernel.commands import RunCreate, RunCreateResult
from airflow_workflow_engine.kernel.records import AnnotationRecord, RunRecord
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel


def handle(k: Kernel, cmd: RunCreate) -> RunCreateResult:
    wf = k.workflow(cmd.workflow_id)
    # Validate everything before the first write: a bad input leaves no row behind. Unknown
    # input and config keys are refused, and model keys must name a known provider.
    run_input = to_json(wf.validate_input(cmd.input))
    config = wf.validate_config(cmd.config, model_providers=k.model_providers())
    now = k.now()
    run = RunRecord(
        id=k.new_id(),
        workflow_id=wf.id,
        workflow_name=wf.name,
        status=Status.PENDING,
        input=run_input,
        config=config,
        priority=cmd.priority,
        idempotency_key=cmd.idempotency_key,
        created_at=now,
        updated_at=now,
    )
    with k.persistence.transaction():
        k.persistence.insert_run(run)
        k.emit(run.id, "workflow:created", {"workflow_id": wf.id, "priority": cmd.priority})
        for spec in cmd.annotations:
            for key, value in spec.attributes.items():
                inserted = k.persistence.insert_annotation(
                    AnnotationRecord(
                        id=k.new_id(),
                        workflow_run_id=run.id,
                        stage_id=None,
                        key=key,
                        value=value,
                        actor=spec.actor,
                        idempotency_key=spec.idempotency_key,
                        created_at=now,
                    )
                )
                if inserted:
                    k.emit(run.id, "annotation:created", {"key": key, "actor_id": spec.actor.id})
    return RunCreateResult(workflow_run_id=run.id, status=run.status)
