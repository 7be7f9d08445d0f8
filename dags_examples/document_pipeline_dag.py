"""The document pipeline on Airflow, with a human sign-off before anything is published.

    extract -> [summarize, classify] -> embed (AI batch, deferrable) -> approve -> publish

- ``summarize`` and ``classify`` call models through ``ctx.ai``; their configs name the
  offline, deterministic ``mock`` models, so the DAG runs without an API key. Point them at a
  real model (``{"model": "openai:gpt-5-mini"}``) and the key comes from the Airflow
  connection ``llm_openai_default`` (or ``openai_default``), never from this file.
- ``embed`` is an AI batch stage (``define_ai_batch_stage``): it sends its requests as one
  provider batch through ``ctx.ai``, and the task defers to the triggerer, which polls the
  batch until it is done, without holding a worker slot. A retry, a clear or a restarted
  triggerer re-attaches to the batch already submitted.
- ``approve`` is an ``ApprovalSensor``: it waits (in the triggerer) until someone attaches an
  ``Approval`` annotation to the workflow run (``approval.status = approved``), e.g. with
  ``airflow_workflow_engine.sensors.approve(kernel, workflow_run_id, "alice")``. A rejection
  fails the DAG run; ``publish`` never runs.

Trigger it with the document as the run's conf::

    airflow dags trigger document_pipeline --conf '{"title": "Q3", "text": "Revenue grew..."}'

The workflow itself lives in an importable module (the triggerer imports it to poll
``embed``): :mod:`airflow_workflow_engine.examples.document_pipeline`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_workflow_engine.dag import params_from_model
from airflow_workflow_engine.examples import document_pipeline as example
from airflow_workflow_engine.operators import AsyncBatchStageOperator, StageOperator
from airflow_workflow_engine.sensors import ApprovalSensor

# Illustrative prices for the mock models, so that the cost table shows money (mock calls
# are free otherwise). Remove this line when the stages call real models.
example.register_demo_prices()

workflow = example.document_pipeline

with DAG(
    dag_id="document_pipeline",
    description="Extract, summarize and classify a document, embed it, publish when approved.",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params=params_from_model(example.DocumentInput),
    tags=["workflow-engine", "example"],
    doc_md=__doc__,
    # Retries are safe here: a retried stage that already completed is not run again, and a
    # retried batch stage re-attaches to the batch it submitted. They also absorb an Airflow
    # 3.3 race that can fail a deferred task right after it resumes (apache/airflow#72716).
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
) as dag:
    extract = StageOperator(stage=example.extract, workflow=workflow)
    summarize = StageOperator(
        stage=example.summarize,
        workflow=workflow,
        config={"model": "mock:summarizer", "max_words": 12},
    )
    classify = StageOperator(
        stage=example.classify,
        workflow=workflow,
        config={"model": "mock:classifier", "rationale_words": 16},
    )
    embed = AsyncBatchStageOperator(
        stage=example.embed,
        workflow=workflow,
        config={"model": "mock:embedder", "dimensions": 8},
    )
    approve = ApprovalSensor(
        task_id="approve",
        poke_interval=2,
        timeout=timedelta(days=7).total_seconds(),
    )
    publish = StageOperator(stage=example.publish, workflow=workflow)

    extract >> [summarize, classify] >> embed >> approve >> publish
