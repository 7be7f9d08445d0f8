"""``e2e_approval``: a stage, an approval point, a stage (the clear-after-approval test).

The workflow is derived from the DAG's stage tasks (``measure -> report``).
"""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_workflow_engine.operators.stage import StageOperator
from airflow_workflow_engine.sensors import ApprovalSensor
from tests.integration.airflow import workflows as wf

with DAG("e2e_approval", schedule=None, tags=["workflow-engine"]) as approval_dag:
    (
        StageOperator(stage=wf.measure)
        >> ApprovalSensor(task_id="wait_for_approval", poke_interval=1, timeout=600)
        >> StageOperator(stage=wf.report)
    )
