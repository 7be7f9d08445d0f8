"""Runs one DAG with ``dag.test(use_executor=True)`` and prints what happened as JSON.

Used by the integration tests in a subprocess (Airflow's configuration is process-global):

    python -m tests.integration.airflow.run_dag run <dag_file> <dag_id> '<conf json>'
    python -m tests.integration.airflow.run_dag import-errors <folder>

``use_executor=True`` sends each task to the LocalExecutor, so tasks run in real task
processes (Airflow's ORM blocked, its database URL hidden) and deferred tasks wait for the
real triggerer, unlike plain ``dag.test()``.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

MARKER = "@@RESULT@@"


def _load_dag(dag_file: str, dag_id: str) -> Any:
    from airflow.sdk import DAG

    spec = importlib.util.spec_from_file_location(f"it_dagfile_{Path(dag_file).stem}", dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if isinstance(value, DAG) and value.dag_id == dag_id:
            return value
    raise SystemExit(f"no DAG {dag_id!r} in {dag_file}")


def _xcoms(dag_id: str, run_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.key == "return_value",
            )
        ).all()
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def run(dag_file: str, dag_id: str, conf_json: str) -> dict[str, Any]:
    dag = _load_dag(dag_file, dag_id)
    conf = json.loads(conf_json) if conf_json else None
    try:
        dr = dag.test(use_executor=True, run_conf=conf)
    except Exception as exc:  # e.g. Airflow rejecting the conf against the DAG's params
        return {"dag_id": dag_id, "error": f"{type(exc).__name__}: {exc}"}
    tis = {
        ti.task_id: {"state": str(ti.state), "try_number": ti.try_number}
        for ti in dr.get_task_instances()
    }
    return {
        "dag_id": dag_id,
        "run_id": dr.run_id,
        "state": str(dr.state),
        "tis": tis,
        "xcom": _xcoms(dag_id, dr.run_id),
    }


def import_errors(folder: str) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=folder)
    return {"dags": sorted(bag.dags), "import_errors": dict(bag.import_errors)}


def main(argv: list[str]) -> None:
    # A hang prints every thread's stack (to stderr, which the tests show) and exits.
    timeout = float(os.environ.get("WFE_RUN_DAG_TIMEOUT", "230"))
    faulthandler.dump_traceback_later(timeout, exit=True)
    if argv[0] == "run":
        result = run(argv[1], argv[2], argv[3] if len(argv) > 3 else "")
    elif argv[0] == "import-errors":
        result = import_errors(argv[1])
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")
    print(MARKER + json.dumps(result, default=str), flush=True)
    # The LocalExecutor's workers sometimes outlive dag.test: stop them, skip atexit hooks.
    for child in multiprocessing.active_children():
        child.terminate()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
