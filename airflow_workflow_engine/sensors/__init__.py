"""Airflow sensors over the kernel's state, deferrable by default:

- :class:`~airflow_workflow_engine.sensors.stage.StageSensor`: a stage of a workflow run (of
  this DAG or another) reaches a status;
- :class:`~airflow_workflow_engine.sensors.stage.WorkflowRunSensor`: a workflow run does;
- :class:`~airflow_workflow_engine.sensors.approval.ApprovalSensor`: a workflow run is approved
  (or rejected) through an ``Approval`` annotation.

Names load lazily, so a DAG file pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_workflow_engine.host.approvals import approve, reject
    from airflow_workflow_engine.sensors.approval import ApprovalSensor
    from airflow_workflow_engine.sensors.stage import StageSensor, WorkflowRunSensor

__all__ = ["ApprovalSensor", "StageSensor", "WorkflowRunSensor", "approve", "reject"]

_EXPORTS = {
    "StageSensor": "airflow_workflow_engine.sensors.stage",
    "WorkflowRunSensor": "airflow_workflow_engine.sensors.stage",
    "ApprovalSensor": "airflow_workflow_engine.sensors.approval",
    "approve": "airflow_workflow_engine.host.approvals",
    "reject": "airflow_workflow_engine.host.approvals",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
