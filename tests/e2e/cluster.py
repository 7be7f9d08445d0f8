"""The end-to-end tests' Airflow cluster: the package's embedded Airflow
(:class:`~airflow_workflow_engine.testing.cluster.EmbeddedAirflow`), set up for the tests.

:func:`running_cluster` builds it in a temporary ``AIRFLOW_HOME``:

- Airflow's metadata database and the engine's ``wfe_`` tables in one PostgreSQL database
  (the ``postgres_server`` fixture of ``tests/postgres_fixtures.py``), or, with
  ``engine_url``, the engine's tables in a database of their own (the SQLite variant:
  Airflow's metadata in ``<home>/airflow.db``, ours in another SQLite file, since Airflow
  holds its file while tasks write ours);
- the LocalExecutor with ``[core] parallelism`` 2, DAGs from ``tests/e2e/dags`` (unpaused at
  creation), the repository on ``PYTHONPATH`` (the DAGs import ``tests.e2e``);
- a fast triggerer heartbeat, so that a killed triggerer's triggers move on within seconds;
- ``airflow db migrate``, then ``scheduler``, ``dag-processor``, ``triggerer`` and
  ``api-server`` as subprocesses, stopped at the end.

The tests drive it like a user: the REST API to trigger and watch DAG runs, and
:class:`~airflow_workflow_engine.persistence.sql.SqlPersistence` on the same database for the
engine's view. :meth:`~EmbeddedAirflow.explain_failure` attaches the processes' and tasks'
log tails to a failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airflow_workflow_engine.testing.cluster import (
    ApiError,
    EmbeddedAirflow,
    free_port,
    tail,
    wait_until,
)

__all__ = [
    "DAGS",
    "REPO",
    "AirflowCluster",
    "ApiError",
    "e2e_marks",
    "free_port",
    "prepare_cluster",
    "running_cluster",
    "tail",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[2]
DAGS = Path(__file__).resolve().parent / "dags"

#: The tests' name for the embedded Airflow.
AirflowCluster = EmbeddedAirflow

#: What the tests set beyond the embedded Airflow's defaults.
E2E_ENV = {
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    # A killed triggerer's triggers move to a live one after this many seconds.
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
}


def e2e_marks(timeout: int, reruns: int = 1) -> list[Any]:
    """The marks of an end-to-end module: integration, skipped without Airflow, a timeout,
    and ``reruns`` reruns (one by default: Airflow 3.3.2 can mark a resumed deferred task
    failed while it still runs, its own state update then getting 409
    "previous_state=failed"; apache/airflow#72716)."""
    import importlib.util

    import pytest

    return [
        pytest.mark.integration,
        pytest.mark.skipif(
            importlib.util.find_spec("airflow") is None,
            reason="apache-airflow is not installed in this environment; install the "
            "'airflow' extra (pip install -e '.[airflow,test]') to run the end-to-end tests",
        ),
        pytest.mark.timeout(timeout),
        *([pytest.mark.flaky(reruns=reruns)] if reruns else []),
    ]


def prepare_cluster(
    home: Path,
    db_url: str,
    *,
    engine_url: str | None = None,
    env: dict[str, str] | None = None,
) -> EmbeddedAirflow:
    """The tests' embedded Airflow in ``home``, configured (``env`` on top of the tests'
    settings) but neither migrated nor started: for suites that start more than the usual
    processes (Celery workers)."""
    python_path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return EmbeddedAirflow.prepare(
        home,
        DAGS,
        db_url=db_url,
        engine_url=engine_url,
        port=0,
        parallelism=2,
        paused_at_creation=False,
        fresh=False,
        cwd=REPO,
        extra_env={**E2E_ENV, "PYTHONPATH": python_path, **(env or {})},
    )


@contextlib.contextmanager
def running_cluster(
    home: Path,
    db_url: str,
    dag_ids: tuple[str, ...],
    *,
    engine_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[EmbeddedAirflow]:
    """A migrated Airflow with its processes running and ``dag_ids`` parsed; stopped at the
    end (the home, with its logs and blobs, stays for inspection)."""
    cluster = prepare_cluster(home, db_url, engine_url=engine_url, env=env)
    try:
        with cluster.explain_failure():
            cluster.migrate()
            cluster.start_processes()
            for dag_id in dag_ids:
                cluster.wait_for_dag(dag_id)
        yield cluster
    finally:
        cluster.stop()
