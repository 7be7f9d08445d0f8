"""``ApprovalSensor``: human in the loop. Waits for an ``Approval`` annotation on the run.

Approving or rejecting is an annotation attached through the kernel (the CLI and the UI do
the same later), with the keys of :class:`airflow_workflow_engine.conventions.Approval`::

    kernel.annotations.attach(
        workflow_run_id,
        actor=Actor(kind="user", id="alice"),
        attributes={"approval.status": "approved", "approval.comment": "looks right"},
    )

or, shorter, :func:`~airflow_workflow_engine.host.approvals.approve` /
:func:`~airflow_workflow_engine.host.approvals.reject`. The newest ``approval.status`` of
``approved`` or ``rejected`` decides: approved -> the task succeeds and returns the decision
(approver, comment) to XCom; rejected -> the task fails, without retries, naming who rejected
it and their comment. A run that fails or is cancelled before anyone decides fails the task
too. With ``stage_id``, only approvals of that stage count (``approval.stage_id``, or the
annotation's stage).

A rerun of the stages a decision depended on voids it, and the sensor waits for a fresh one
(see :mod:`airflow_workflow_engine.kernel.approvals`). A rejection of this DAG run's own
workflow run cancels that run with the rejection as its error (who, when, why) before the task
fails, so the DAG run's failure that follows leaves that error in place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from airflow_workflow_engine.host.runs import run_key
from airflow_workflow_engine.host.wait import APPROVAL_PREFIX, REJECTED, SensorEvent, WaitKind
from airflow_workflow_engine.kernel.approvals import (
    cancel_rejected_run,
    rejected_message,
    rejection_reason,
)
from airflow_workflow_engine.sensors.stage import WorkflowStateSensor

__all__ = ["ApprovalSensor"]

logger = logging.getLogger(__name__)


class ApprovalSensor(WorkflowStateSensor):
    """Waits until the workflow run is approved (success) or rejected (failure).

    :param key_prefix: the approval keys' prefix (templated); default ``"approval."``, so
        the sensor reads ``approval.status``, ``approval.approver``, ``approval.comment`` and
        ``approval.stage_id``. Use another prefix (``"approval.legal."``) for a second sign-off.
    :param stage_id: only approvals of this stage count (templated); default: any.

    Other parameters (the run, ``deferrable``, ``poke_interval``, ``timeout``...): see
    :class:`~airflow_workflow_engine.sensors.stage.WorkflowStateSensor`.
    """

    template_fields: Sequence[str] = (
        *WorkflowStateSensor.template_fields,
        "key_prefix",
        "stage_id",
    )
    ui_color = "#fbe7c6"
    wait_kind: ClassVar[WaitKind] = "approval"

    def __init__(
        self, *, key_prefix: str = APPROVAL_PREFIX, stage_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.key_prefix = key_prefix
        self.stage_id = stage_id
        self._check_options()

    def spec_options(self) -> dict[str, Any]:
        return {"key_prefix": self.key_prefix, "stage_id": self.stage_id}

    def resolve(self, event: SensorEvent) -> dict[str, Any]:
        if event["status"] == "failed" and event["observed"] == REJECTED:
            self.cancel_rejected_run(event)
        return super().resolve(event)

    def rejection_reason(self, event: SensorEvent) -> str:
        """``rejected by bob at 2026-06-01T12:00:00+00:00: 'numbers are off' (task ...)``."""
        return rejection_reason(event["details"], self.task_id, self.dag_id)

    def cancel_rejected_run(self, event: SensorEvent) -> bool:
        """Cancels this DAG run's own workflow run with the rejection as the reason; a run of
        another DAG run is left to its own DAG. Returns whether it cancelled the run."""
        workflow_run_id = event.get("workflow_run_id")
        if not workflow_run_id:
            return False
        try:
            from airflow.sdk import get_current_context

            own_key = run_key(self.dag_id, str(get_current_context()["dag_run"].run_id))
            return cancel_rejected_run(
                self.hook.get_kernel(), workflow_run_id, own_key, self.rejection_reason(event)
            )
        except Exception:  # the rejection still fails the task; the listener cancels the run
            logger.warning("Could not record the rejection on the workflow run", exc_info=True)
            return False

    def failure_message(self, event: SensorEvent) -> str:
        if event["observed"] == REJECTED:
            return rejected_message(str(event["workflow_run_id"]), event["details"], self.task_id)
        return super().failure_message(event)
