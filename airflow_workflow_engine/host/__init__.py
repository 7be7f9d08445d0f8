"""The host layer: what every Airflow-side piece needs, without Airflow.

Below ``hooks``, ``operators``, ``sensors``, ``triggers``, ``plugins`` and ``cli``, above the
core. No module here imports ``airflow`` (``tests/unit/test_import_graph.py`` checks it):

- :mod:`~airflow_workflow_engine.host.runs`: the DAG-run mapping (run key, clear versus retry,
  what a task's outcome means, which tasks run stages);
- :mod:`~airflow_workflow_engine.host.derive`: the workflow a DAG's stage tasks define;
- :mod:`~airflow_workflow_engine.host.refs`: how the triggerer finds a task's workflow (an
  import path, or the DAG file's reference);
- :mod:`~airflow_workflow_engine.host.wait`: what the sensors wait for and the decision;
- :mod:`~airflow_workflow_engine.host.poll`: what a poll of a suspended stage means;
- :mod:`~airflow_workflow_engine.host.queries`: the reads of the CLI, UI, sensors and
  listeners (a DAG run's workflow run, runs newest first);
- :mod:`~airflow_workflow_engine.host.approvals`: recording an approval or a rejection;
- :mod:`~airflow_workflow_engine.host.ports`: the kernel's host ports under Airflow (job
  transport, scheduler, event sink);
- :mod:`~airflow_workflow_engine.host.format`, :mod:`~airflow_workflow_engine.host.links`:
  how the CLI and the UI show values, and where the pages live.

Import the modules themselves; this package root imports nothing.
"""
