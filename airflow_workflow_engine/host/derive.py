"""A DAG's workflow: the workflow its stage tasks define, when they name none.

Groups are the topological layers of the stage tasks (a stage task's layer is the longest chain
of stage tasks above it); the workflow's input model is the first stages' input, its output the
last stage's output (or one field per stage of a parallel last group). Used by the stage
operators, the triggerer (a ``workflow_ref`` naming a DAG, or the DAG file) and
:mod:`airflow_workflow_engine.dag`, which re-exports :func:`workflow_from_dag`.

Works on the DAG's task objects by their attributes: no ``airflow`` import here.
"""

from __future__ import annotations

import keyword
import re
import weakref
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from airflow_workflow_engine.errors import WorkflowDefinitionError
from airflow_workflow_engine.host.runs import is_stage_operator

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.stage import Stage
    from airflow_workflow_engine.definitions.workflow import Workflow

__all__ = ["stage_tasks", "workflow_from_dag"]

_OPERATORS_MODULE = "airflow_workflow_engine.operators"

_derived: dict[int, tuple[weakref.ref[Any], Any, Workflow]] = {}


def stage_tasks(dag: Any) -> list[Any]:
    """The stage tasks of ``dag`` that run the DAG's own workflow (the stage tasks of a
    ``WorkflowTaskGroup`` run that group's own workflow), in the DAG's task order."""
    if not any(type(t).__module__.startswith(_OPERATORS_MODULE) for t in dag.tasks):
        return []
    return [t for t in dag.tasks if is_stage_operator(t) and t.workflow_group is None]


def _fingerprint(dag: Any) -> tuple[Any, ...]:
    return tuple(sorted((t.task_id, tuple(sorted(t.upstream_task_ids))) for t in dag.tasks))


def _layers(tasks: list[Any]) -> tuple[dict[str, int], dict[str, set[str]]]:
    """Each stage task's layer (longest chain of stage tasks above it) and its upstream stage
    tasks (through any tasks in between)."""
    ids = {t.task_id for t in tasks}
    upstream = {
        t.task_id: {u.task_id for u in t.get_flat_relatives(upstream=True)} & ids for t in tasks
    }
    layer: dict[str, int] = {}

    def depth(task_id: str) -> int:
        if task_id not in layer:
            ups = upstream[task_id]
            layer[task_id] = 1 + max(depth(u) for u in ups) if ups else 0
        return layer[task_id]

    for t in tasks:
        depth(t.task_id)
    return layer, upstream


def _check_wiring(
    dag_id: str,
    tasks: list[Any],
    layer: dict[str, int],
    upstream: dict[str, set[str]],
) -> None:
    by_stage = {t.stage.id: t for t in tasks}
    for t in tasks:
        for dep in t.stage.dependencies:
            other = by_stage.get(dep)
            if other is None:
                raise WorkflowDefinitionError(
                    f"DAG '{dag_id}': stage task '{t.task_id}' (stage '{t.stage.id}') depends on "
                    f"stage '{dep}', which no stage task of this DAG runs. Add a task for it "
                    f"upstream of '{t.task_id}'."
                )
            if other.task_id not in upstream[t.task_id]:
                raise WorkflowDefinitionError(
                    f"DAG '{dag_id}': stage task '{t.task_id}' (stage '{t.stage.id}') depends on "
                    f"stage '{dep}', but task '{other.task_id}' is not upstream of it. Chain "
                    f"them: {other.task_id} >> {t.task_id}."
                )
        for other in tasks:
            if layer[other.task_id] < layer[t.task_id] and other.task_id not in upstream[t.task_id]:
                raise WorkflowDefinitionError(
                    f"DAG '{dag_id}': stage task '{t.task_id}' is in group "
                    f"{layer[t.task_id] + 1} of the derived workflow, but stage task "
                    f"'{other.task_id}' of group {layer[other.task_id] + 1} is not upstream of "
                    "it; the engine runs groups in order, so chain them: "
                    f"{other.task_id} >> {t.task_id}."
                )


class _AnyInput(BaseModel):
    """Input of a derived workflow whose first stages take no input: any JSON object."""

    model_config = ConfigDict(extra="allow")


def _field_name(stage_id: str) -> str:
    name = re.sub(r"\W", "_", stage_id)
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        name = f"s_{name}"
    return name


def _io_models(
    dag_id: str, groups: list[list[Stage[Any, Any, Any]]]
) -> tuple[type[BaseModel], type[BaseModel]]:
    inputs = {s.input for s in groups[0] if s.input is not None}
    if len(inputs) > 1:
        names = ", ".join(sorted(m.__name__ for m in inputs))
        raise WorkflowDefinitionError(
            f"DAG '{dag_id}': the first stage tasks take different input models ({names}), so "
            "the DAG run's conf cannot be validated against one; give them one input model, or "
            "build a Workflow and pass workflow= to the stage operators."
        )
    input_model: type[BaseModel] = next(iter(inputs)) if inputs else _AnyInput
    last = groups[-1]
    if len(last) == 1:
        return input_model, last[0].output
    fields: dict[str, Any] = {_field_name(s.id): (s.output, Field(alias=s.id)) for s in last}
    output: type[BaseModel] = create_model(
        f"{_field_name(dag_id).title().replace('_', '')}Output",
        __config__=ConfigDict(populate_by_name=True),
        **fields,
    )
    return input_model, output


def workflow_from_dag(dag: Any) -> Workflow:
    """The workflow defined by the stage tasks of ``dag`` (cached per DAG and shape).

    Stage tasks given an explicit ``workflow=`` must all name the same one, which is
    returned. Raises :class:`WorkflowDefinitionError` naming the tasks to fix.
    """
    from airflow_workflow_engine.definitions.workflow import WorkflowBuilder

    shape = _fingerprint(dag)
    cached = _derived.get(id(dag))
    if cached is not None and cached[0]() is dag and cached[1] == shape:
        return cached[2]
    dag_id = str(dag.dag_id)
    tasks = stage_tasks(dag)
    if not tasks:
        raise WorkflowDefinitionError(f"DAG '{dag_id}' has no stage tasks.")
    explicit = {id(t._workflow): t._workflow for t in tasks if t._workflow is not None}
    if explicit:
        if len(explicit) > 1 or any(t._workflow is None for t in tasks):
            raise WorkflowDefinitionError(
                f"DAG '{dag_id}': its stage tasks mix workflows (some pass workflow=, others "
                "another one or none); one DAG runs one workflow."
            )
        workflow = next(iter(explicit.values()))
    else:
        seen: dict[str, str] = {}
        for t in tasks:
            if t.stage.id in seen:
                raise WorkflowDefinitionError(
                    f"DAG '{dag_id}': tasks '{seen[t.stage.id]}' and '{t.task_id}' run the same "
                    f"stage '{t.stage.id}'; a stage runs once per workflow run."
                )
            seen[t.stage.id] = t.task_id
        layer, upstream = _layers(tasks)
        _check_wiring(dag_id, tasks, layer, upstream)
        groups: list[list[Stage[Any, Any, Any]]] = [[] for _ in range(max(layer.values()) + 1)]
        for t in tasks:
            groups[layer[t.task_id]].append(t.stage)
        input_model, output_model = _io_models(dag_id, groups)
        description = dag.description or (dag.doc_md if isinstance(dag.doc_md, str) else None)
        builder = WorkflowBuilder(
            dag_id,
            getattr(dag, "dag_display_name", None) or dag_id,
            description,
            input=input_model,
            output=output_model,
        )
        for group in groups:
            if len(group) == 1:
                builder.pipe(group[0])
            else:
                builder.parallel(group)
        try:
            workflow = builder.build()
        except WorkflowDefinitionError as exc:
            raise WorkflowDefinitionError(f"DAG '{dag_id}': {exc}") from None
    key = id(dag)
    found: Workflow = workflow
    _derived[key] = (weakref.ref(dag, lambda _: _derived.pop(key, None)), shape, found)
    return found
