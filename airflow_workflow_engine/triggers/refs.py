"""The triggerer's side of :mod:`airflow_workflow_engine.host.refs`: the workflow of a DAG file,
found the way Airflow's task runner finds it.

The triggerer gets the bundle as the task runner does (``DagBundlesManager().get_bundle(name,
version)``), parses the file with a ``BundleDagBag`` (nothing is registered in Airflow's
database), and takes the workflow of that stage task; the parsed file is cached per path,
bundle version and modification time. A file that cannot be parsed, or has no stage task of
that workflow, is an error naming the file and the workflow id. The references themselves
(:class:`DagFileRef`, import paths) need no Airflow and live in the host layer; they are
re-exported here.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.errors import WorkflowDefinitionError
from airflow_workflow_engine.host.refs import (
    DagFileRef,
    dag_file_ref,
    import_path_of,
    load_workflow,
)
from airflow_workflow_engine.host.runs import is_stage_operator

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow

__all__ = [
    "DagFileRef",
    "dag_file_ref",
    "import_path_of",
    "load_workflow",
    "load_workflow_from_dag_file",
]


#: Parsed DAG files: (absolute path, bundle name, version) -> (mtime_ns, {dag_id: DAG}).
_parsed: dict[tuple[str, str | None, str | None], tuple[int, dict[str, Any]]] = {}
#: Parsed files kept (a versioned bundle adds one per version): the oldest go first.
_MAX_PARSED = 64
_parse_lock = threading.Lock()


def _bundle_root(ref: DagFileRef) -> Path:
    if ref.bundle_name is None:
        return Path(ref.path).parent
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    try:
        manager = DagBundlesManager()  # type: ignore[no-untyped-call]
        bundle = manager.get_bundle(name=ref.bundle_name, version=ref.bundle_version)
        bundle.initialize()
    except Exception as exc:
        raise WorkflowDefinitionError(
            f"Cannot find workflow '{ref.workflow_id}': {ref.describe()} is not available to "
            f"this process ({type(exc).__name__}: {exc}). The triggerer needs the same "
            "[dag_processor] dag_bundle_config_list as the workers."
        ) from exc
    return Path(bundle.path)


def _parse_dag_file(ref: DagFileRef) -> dict[str, Any]:
    """The DAGs of the file (cached per file, bundle version and modification time)."""
    root = _bundle_root(ref)
    path = Path(ref.path) if ref.bundle_name is None else root / ref.path
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise WorkflowDefinitionError(
            f"Cannot find workflow '{ref.workflow_id}': {ref.describe()} cannot be read "
            f"({path}: {exc.strerror or exc})."
        ) from exc
    key = (str(path), ref.bundle_name, ref.bundle_version)
    with _parse_lock:
        cached = _parsed.get(key)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        from airflow.dag_processing.dagbag import BundleDagBag

        # What the task runner does: parse the one file, register nothing.
        bag = BundleDagBag(
            dag_folder=os.fspath(path),
            safe_mode=False,
            load_op_links=False,
            bundle_path=root,
            bundle_name=ref.bundle_name,
        )
        if bag.import_errors and not bag.dags:
            errors = "; ".join(str(e).strip().splitlines()[-1] for e in bag.import_errors.values())
            raise WorkflowDefinitionError(
                f"Cannot find workflow '{ref.workflow_id}': {ref.describe()} does not load: "
                f"{errors}"
            )
        _parsed.pop(key, None)
        while len(_parsed) >= _MAX_PARSED:
            _parsed.pop(next(iter(_parsed)))
        _parsed[key] = (mtime, dict(bag.dags))
        return _parsed[key][1]


def _workflow_of_task(task: Any) -> Workflow | None:
    if not is_stage_operator(task):
        return None
    try:
        workflow: Workflow = task.workflow
    except WorkflowDefinitionError:
        return None
    return workflow


def load_workflow_from_dag_file(ref: DagFileRef) -> Workflow:
    """The workflow ``ref.workflow_id`` of the stage task ``ref.task_id`` of the DAG file
    (any stage task of the file running that workflow, if the task is gone)."""
    dags = _parse_dag_file(ref)
    dag = dags.get(ref.dag_id)
    task = dag.task_dict.get(ref.task_id) if dag is not None else None
    workflow = _workflow_of_task(task)
    if workflow is not None and workflow.id == ref.workflow_id:
        return workflow
    for other in dags.values():
        for candidate in other.tasks:
            workflow = _workflow_of_task(candidate)
            if workflow is not None and workflow.id == ref.workflow_id:
                return workflow
    found = sorted(
        {w.id for d in dags.values() for t in d.tasks if (w := _workflow_of_task(t)) is not None}
    )
    raise WorkflowDefinitionError(
        f"{ref.describe()} has no workflow '{ref.workflow_id}' (DAGs: "
        f"{', '.join(sorted(dags)) or 'none'}; workflows: {', '.join(found) or 'none'}). Was the "
        "file changed since the task deferred? Pass workflow_ref= to name the workflow "
        "explicitly."
    )
