"""How the triggerer finds a workflow: by the import path ``"module:attribute"`` of an object.

A trigger is serialized to ids and primitives and rebuilt in the triggerer, which has none of
the worker's objects, so it carries ``workflow_ref``: the import path of either

- a :class:`~airflow_workflow_engine.definitions.workflow.Workflow` (a workflow defined at
  module level in an importable module: your package, or a module on the PYTHONPATH of the
  workers and the triggerer), or
- an Airflow ``DAG`` whose stage tasks define the workflow (hand-wired DAGs), which the
  triggerer re-derives with :func:`airflow_workflow_engine.dag.workflow_from_dag`. The DAG
  file must then be importable by the triggerer too (its folder on the triggerer's
  PYTHONPATH).

Operators compute the path themselves (:func:`import_path_of`) or take ``workflow_ref=``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.workflow import Workflow

__all__ = ["import_path_of", "load_workflow"]

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
        from airflow_workflow_engine.dag import workflow_from_dag

        return workflow_from_dag(obj)
    raise WorkflowDefinitionError(
        f"workflow_ref {ref!r} names a {type(obj).__name__}, not a Workflow or a DAG."
    )
