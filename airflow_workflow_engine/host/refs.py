"""How the triggerer finds a workflow: by an import path, or by the DAG file it came from.

This module holds the references and what needs no Airflow (finding an import path,
importing it, a DAG file's :class:`DagFileRef`); parsing the DAG file in the triggerer is
:func:`airflow_workflow_engine.triggers.refs.load_workflow_from_dag_file`.

A trigger is serialized to ids and primitives and rebuilt in the triggerer, which has none of
the worker's objects, so it carries one of two things.

**The DAG file** (:class:`DagFileRef`, the default for a workflow defined in a DAG file): the
file's path relative to its DAG bundle, the bundle's name and version, the DAG and task ids and
the workflow id. The triggerer gets the bundle the way Airflow's task runner does
(``DagBundlesManager().get_bundle(name, version)``), parses the file with a ``BundleDagBag``
(nothing is registered in Airflow's database), and takes the workflow of that stage task; the
parsed file is cached per path, bundle version and modification time. A file that cannot be
parsed, or has no stage task of that workflow, is an error naming the file and the workflow id.

**An import path** ``workflow_ref = "module:attribute"`` of either

- a :class:`~airflow_workflow_engine.definitions.workflow.Workflow` (a workflow defined at
  module level in an importable module: your package, or a module on the PYTHONPATH of the
  workers and the triggerer), or
- an Airflow ``DAG`` whose stage tasks define the workflow (hand-wired DAGs), which the
  triggerer re-derives with :func:`airflow_workflow_engine.host.derive.workflow_from_dag`. The DAG
  file must then be importable by the triggerer too (its folder on the triggerer's
  PYTHONPATH).

Operators use ``workflow_ref=`` when given (an explicit override), else the import path when
the workflow is a module-level attribute of an importable module (:func:`import_path_of`), else
the DAG file.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow

__all__ = ["DagFileRef", "dag_file_ref", "import_path_of", "load_workflow"]

#: Airflow loads DAG files under module names like this one; they cannot be imported by name.
_DAG_FILE_PREFIX = "unusual_prefix_"


def _importable(name: str, module: ModuleType | None) -> bool:
    if module is None or name == "__main__" or name.startswith(_DAG_FILE_PREFIX):
        return False
    spec = getattr(module, "__spec__", None)
    return spec is not None and spec.name == name


def _attribute_of(module: ModuleType, obj: object) -> str | None:
    try:
        items = list(vars(module).items())
    except TypeError:
        return None
    for attr, value in items:
        if value is obj and not attr.startswith("__"):
            return attr
    return None


def _find_in_modules(obj: object, first: list[str]) -> str | None:
    modules = dict(sys.modules)
    order = [n for n in first if n in modules] + [n for n in modules if n not in first]
    for name in order:
        module = modules.get(name)
        if not _importable(name, module):
            continue
        assert module is not None
        attr = _attribute_of(module, obj)
        if attr is not None:
            return f"{name}:{attr}"
    return None


def _dag_file_path(dag: Any) -> str | None:
    """``module:attribute`` of a DAG, by its file's place on ``sys.path``."""
    fileloc = getattr(dag, "fileloc", None)
    if not fileloc:
        return None
    path = Path(fileloc).resolve()
    attr = None
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            attr = _attribute_of(module, dag)
            if attr is not None:
                break
    if attr is None:
        return None
    best: str | None = None
    for entry in sys.path:
        if not entry:
            continue
        try:
            rel = path.relative_to(Path(entry).resolve())
        except ValueError:
            continue
        parts = rel.with_suffix("").parts
        if parts and all(p.isidentifier() for p in parts):
            name = ".".join(parts)
            if best is None or len(name) < len(best):
                best = name
    return f"{best}:{attr}" if best else None


def import_path_of(workflow: Workflow, dag: Any = None) -> str | None:
    """Where the triggerer can import ``workflow`` from, or ``None``.

    Searches importable modules for the workflow object (the modules of its stage functions
    first); with ``dag`` (a workflow derived from that DAG), the DAG object by its file.
    """
    first = []
    for stage in workflow.stages():
        for fn in (stage.execute, stage.check_completion):
            module = getattr(fn, "__module__", None)
            if module and module not in first:
                first.append(module)
    found = _find_in_modules(workflow, first)
    if found is None and dag is not None:
        found = _dag_file_path(dag)
    return found


def load_workflow(ref: str) -> Workflow:
    """Imports ``"module:attribute"`` and returns the workflow (derived, for a DAG)."""
    from airflow_workflow_engine.definitions.workflow import Workflow

    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise WorkflowDefinitionError(
            f"workflow_ref {ref!r} is not an import path 'package.module:attribute'."
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkflowDefinitionError(
            f"Cannot import module '{module_name}' of workflow_ref {ref!r}: {exc}. The module "
            "must be importable by the triggerer and the workers (installed, or on their "
            "PYTHONPATH)."
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkflowDefinitionError(
                f"workflow_ref {ref!r}: '{module_name}' has no attribute '{attr_path}'."
            ) from None
    if isinstance(obj, Workflow):
        return obj
    if hasattr(obj, "task_dict") and hasattr(obj, "dag_id"):
        from airflow_workflow_engine.host.derive import workflow_from_dag

        return workflow_from_dag(obj)
    raise WorkflowDefinitionError(
        f"workflow_ref {ref!r} names a {type(obj).__name__}, not a Workflow or a DAG."
    )


# -- the DAG file a workflow came from ---------------------------------------------------


@dataclass(frozen=True)
class DagFileRef:
    """Where the triggerer finds a workflow defined in a DAG file (serialized with a trigger).

    :param path: the DAG file, relative to the bundle's root (absolute without a bundle).
    :param bundle_name: the Airflow DAG bundle of the file (``None``: ``path`` is absolute).
    :param bundle_version: the bundle version the task ran with (``None``: unversioned).
    """

    path: str
    dag_id: str
    task_id: str
    workflow_id: str
    bundle_name: str | None = None
    bundle_version: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DagFileRef:
        missing = [k for k in ("path", "dag_id", "task_id", "workflow_id") if not data.get(k)]
        if missing:
            raise WorkflowDefinitionError(f"dag_file reference {dict(data)!r} lacks {missing}.")
        version = data.get("bundle_version")
        return cls(
            path=str(data["path"]),
            dag_id=str(data["dag_id"]),
            task_id=str(data["task_id"]),
            workflow_id=str(data["workflow_id"]),
            bundle_name=str(data["bundle_name"]) if data.get("bundle_name") else None,
            bundle_version=str(version) if version else None,
        )

    def describe(self) -> str:
        where = f" of DAG bundle '{self.bundle_name}'" if self.bundle_name else ""
        version = f" (version {self.bundle_version})" if self.bundle_version else ""
        return f"DAG file '{self.path}'{where}{version}"


def dag_file_ref(dag: Any, task_id: str, workflow_id: str, bundle: Any = None) -> DagFileRef:
    """The :class:`DagFileRef` of a task of ``dag``; ``bundle`` is the task instance's
    ``bundle_instance`` (``None`` outside a task runner: the absolute file path is used)."""
    fileloc = str(getattr(dag, "fileloc", "") or "")
    if not fileloc:
        raise WorkflowDefinitionError(
            f"DAG '{dag.dag_id}' has no file location, so the triggerer cannot find workflow "
            f"'{workflow_id}'; pass workflow_ref='package.module:attribute'."
        )
    root = getattr(bundle, "path", None) if bundle is not None else None
    if root is not None:
        try:
            rel = Path(fileloc).resolve().relative_to(Path(root).resolve())
        except ValueError:
            rel = None
        if rel is None and getattr(dag, "relative_fileloc", None):
            rel = Path(dag.relative_fileloc)
        if rel is not None:
            return DagFileRef(
                path=rel.as_posix(),
                dag_id=str(dag.dag_id),
                task_id=task_id,
                workflow_id=workflow_id,
                bundle_name=str(bundle.name),
                bundle_version=getattr(bundle, "version", None),
            )
    return DagFileRef(
        path=str(Path(fileloc).resolve()),
        dag_id=str(dag.dag_id),
        task_id=task_id,
        workflow_id=workflow_id,
    )
