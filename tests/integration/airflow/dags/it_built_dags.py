"""DAGs built from workflows with ``build_dag`` (the integration tests run them)."""

from __future__ import annotations

from datetime import timedelta

from airflow_workflow_engine.dag import build_dag
from tests.integration.airflow import workflows as wf

linear_dag = build_dag(wf.linear, dag_id="it_linear", config={"shout": {"suffix": "?"}})
fanout_dag = build_dag(wf.fanout, dag_id="it_fanout")
batch_dag = build_dag(
    wf.batch, dag_id="it_batch", config={"embed": {"polls_needed": 2, "poll_interval": 1.0}}
)
batch_sync_dag = build_dag(
    wf.batch,
    dag_id="it_batch_sync",
    deferrable=False,
    config={"embed": {"polls_needed": 2, "poll_interval": 0.5, "mode": "resume"}},
)
_no_wait = {"retries": 2, "retry_delay": timedelta(seconds=0)}
flaky_dag = build_dag(wf.flaky_workflow, dag_id="it_flaky", default_args=_no_wait)
fatal_dag = build_dag(
    wf.fatal_workflow,
    dag_id="it_fatal",
    default_args={"retries": 3, "retry_delay": timedelta(seconds=0)},
)
ghost_dag = build_dag(wf.ghost_workflow, dag_id="it_ghost", default_args=_no_wait)
