"""Approvals as the Airflow side reads and writes them: an ``Approval`` annotation
(``approval.status`` = ``approved`` / ``rejected``, ``approval.approver``, ...) on a run.

Written by ``airflow workflow-engine approve/reject`` and by DAG code (:func:`approve`,
:func:`reject`); read by ``ApprovalSensor`` (through :func:`~airflow_workflow_engine.host.wait.
check`) and by the listeners (:func:`standing_rejection`). Which approval counts, and which
reruns void it, is the kernel's rule (:mod:`airflow_workflow_engine.kernel.approvals`). No
``airflow`` import here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# One writer of decisions for every approval point: the kernel's.
from airflow_workflow_engine.kernel.approvals import record_approval

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.records import AnnotationRecord

__all__ = ["approve", "record_approval", "reject"]


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
