"""A mis-wired DAG: 'report' depends on stage 'measure', whose task is not upstream of it."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_workflow_engine.operators.stage import StageOperator
from tests.integration.airflow import workflows as wf

with DAG("it_bad_wiring", schedule=None) as dag:
    measure = StageOperator(stage=wf.measure)
    report = StageOperator(stage=wf.report)
