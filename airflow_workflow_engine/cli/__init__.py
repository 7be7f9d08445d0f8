"""``airflow workflow-engine ...``: the provider's command group of the Airflow CLI.

Airflow finds it through the ``"cli"`` key of ``get_provider_info()``, which names
:func:`airflow_workflow_engine.cli.definition.get_workflow_engine_cli_commands`. The definition
module holds only argparse metadata (it is imported on every ``airflow`` start); each command's
body lives in its own module and is imported when the command runs:

- ``runs.py``: ``runs list``, ``runs show``
- ``costs.py``: ``costs``
- ``rerun.py``: ``rerun``, ``backfill-rerun``
- ``approval.py``: ``approve``, ``reject``
- ``db.py``: ``db migrate``, ``db current``

See ``docs/cli.md``.
"""
