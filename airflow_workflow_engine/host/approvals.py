"""Approvals as the Airflow side reads and writes them: an ``Approval`` annotation
(``approval.status`` = ``approved`` / ``rejected``, ``approval.approver``, ...) on a run.

Written by ``airflow workflow-engine approve/reject`` and by DAG code (:func:`approve`,
:func:`reject`); read by ``ApprovalSensor`` (through :func:`~airflow_workflow_engine.host.wait.
check`) and by the listeners (:func:`standing_rejection`). Which approval counts, and which
reruns void it, is the kernel's rule (:mod:`airflow_workflow_engine.kernel.approvals`). No
``airflow`` import here.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.host.wait import APPROVAL_PREFIX, APPROVED, REJECTED

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.records import AnnotationRecord

__all__ = ["approve", "record_approval", "reject"]


def record_approval(
    kernel: Kernel,
    workflow_run_id: str,
    *,
    approved: bool,
    approver: str,
    comment: str | None = None,
    stage_id: str | None = None,
    key_prefix: str = APPROVAL_PREFIX,
    actor_kind: str = "user",
    idempotency_key: str | None = None,
) -> list[AnnotationRecord]:
    """Attaches an approval (or rejection) to a run, atomically; returns the rows written.

    ``idempotency_key`` makes a repeated call (a double click) write nothing the second time.
    """
    from airflow_workflow_engine.conventions import Actor

    if not approver:
        raise ValueError("approver must name who decided.")
    attributes: dict[str, Any] = {
        f"{key_prefix}status": APPROVED if approved else REJECTED,
        f"{key_prefix}approver": approver,
    }
    if comment:
        attributes[f"{key_prefix}comment"] = comment
    if stage_id:
        attributes[f"{key_prefix}stage_id"] = stage_id
    return kernel.annotations.attach(
        workflow_run_id,
        actor=Actor(kind=actor_kind, id=approver),
        attributes=attributes,
        idempotency_key=idempotency_key or uuid.uuid4().hex,
    )


def approve(
    kernel: Kernel, workflow_run_id: str, approver: str, comment: str | None = None, **kw: Any
) -> list[AnnotationRecord]:
    """Approves a run (see :func:`record_approval`)."""
    return record_approval(
        kernel, workflow_run_id, approved=True, approver=approver, comment=comment, **kw
    )


def reject(
    kernel: Kernel, workflow_run_id: str, approver: str, comment: str | None = None, **kw: Any
) -> list[AnnotationRecord]:
    """Rejects a run (see :func:`record_approval`)."""
    return record_approval(
        kernel, workflow_run_id, approved=False, approver=approver, comment=comment, **kw
    )
