"""A hand-wired DAG: stage operators inside an ordinary ``with DAG(...)``, mixed with plain
``@task`` functions.

    extract -> check_length (@task) -> [summarize, classify] -> report (@task)

No ``workflow=`` is passed, so the workflow is derived from the DAG's stage tasks: its id is
the DAG id, its groups are the topological layers of the stage tasks (``extract``, then
``summarize`` and ``classify`` side by side), its input is ``extract``'s input model. Plain
tasks may sit anywhere in between; they read a stage task's XCom summary (status, attempt,
an output preview, cost and tokens) like any other XCom.

Every stage is sync here: a workflow defined in a DAG file cannot be imported by the
triggerer, so deferrable batch stages belong in an importable module (see
``document_pipeline_dag.py``). The models are the offline ``mock`` ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_workflow_engine.dag import params_from_model
from airflow_workflow_engine.examples import document_pipeline as example
from airflow_workflow_engine.operators import StageOperator

with DAG(
    dag_id="hand_wired_document",
    description="Stage operators and plain tasks in one hand-written DAG.",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params=params_from_model(example.DocumentInput),
    tags=["workflow-engine", "example"],
    doc_md=__doc__,
) as dag:
    extract = StageOperator(stage=example.extract)

    @task
    def check_length(summary: dict[str, Any], max_words: int = 5_000) -> int:
        """A plain task between stages: stops the run before paying for model calls."""
        if summary["status"] != "COMPLETED":
            raise AirflowFailException(f"extract ended {summary['status']}")
        words = len(str(get_current_context()["params"]["text"]).split())
        if words > max_words:
            raise AirflowFailException(f"{words} words is more than the {max_words} allowed.")
        return words

    summarize = StageOperator(stage=example.summarize, config={"max_words": 10})
    classify = StageOperator(stage=example.classify)

    @task
    def report(words: int, summary: dict[str, Any], classification: dict[str, Any]) -> str:
        """A plain task after the stages: one line from their XCom summaries."""
        stages = (summary, classification)
        cost = sum(s["metrics"].get("ai_cost", 0.0) for s in stages)
        tokens = sum(s["metrics"].get("ai_tokens", 0) for s in stages)
        return (
            f"{words} words; summarize {summary['status']}, classify "
            f"{classification['status']}; AI: {tokens} tokens, ${cost:.6f}"
        )

    words = check_length(extract.output)  # type: ignore[arg-type]
    words >> [summarize, classify]
    report(words, summarize.output, classify.output)  # type: ignore[arg-type]
