"""DAGs of the end-to-end tests, built from the workflow in ``e2e_workflows.py``.

- ``e2e_documents``: the batch is ready after two polls;
- ``e2e_documents_hold``: the batch waits until the test releases it (triggerer restart test).
"""

from __future__ import annotations

from airflow_workflow_engine.dag import build_dag
from tests.e2e.dags import e2e_workflows as wf

documents_dag = build_dag(
    wf.documents,
    dag_id="e2e_documents",
    config={"embed": {"polls_needed": 2, "poll_interval": 1.0}},
)
documents_hold_dag = build_dag(
    wf.documents,
    dag_id="e2e_documents_hold",
    config={"embed": {"hold": True, "poll_interval": 1.0}},
)
