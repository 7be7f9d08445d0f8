"""``kernel.annotations``: attach provenance to a run from outside a stage, and query it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.definitions.annotations import Actor, coerce_actor
from airflow_workflow_engine.kernel.records import AnnotationRecord

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel

__all__ = ["AnnotationsApi"]


class AnnotationsApi:
    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    def attach(
        self,
        workflow_run_id: str,
        *,
        actor: Actor | dict[str, Any],
        attributes: Mapping[str, Any],
        idempotency_key: str | None = None,
        stage_id: str | None = None,
    ) -> list[AnnotationRecord]:
        """Writes one annotation per attribute, atomically. A duplicate
        ``(run, key, idempotency_key)`` is skipped silently. Returns the rows written."""
        k = self._kernel
        who = coerce_actor(actor)
        now = k.now()
        written = []
        with k.persistence.transaction():
            k.require_run(workflow_run_id, for_update=True)
            for key, value in attributes.items():
                record = AnnotationRecord(
                    id=k.new_id(),
                    workflow_run_id=workflow_run_id,
                    stage_id=stage_id,
                    key=str(key),
                    value=value,
                    actor=who,
                    idempotency_key=idempotency_key,
                    created_at=now,
                )
                if k.persistence.insert_annotation(record):
                    written.append(record)
                    k.emit(
                        workflow_run_id,
                        "annotation:created",
                        {"stage_id": stage_id, "key": record.key, "actor_id": who.id},
                    )
        return written

    def list(
        self,
        workflow_run_id: str,
        *,
        key_prefix: str | None = None,
        actor_id: str | None = None,
    ) -> list[AnnotationRecord]:
        return self._kernel.persistence.list_annotations(
            workflow_run_id, key_prefix=key_prefix, actor_id=actor_id
        )
