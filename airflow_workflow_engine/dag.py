"""Workflows and DAGs, both ways round.

- :func:`build_dag` turns a :class:`~airflow_workflow_engine.definitions.workflow.Workflow`
  into a DAG: one task per stage, groups chained, a parallel group fanned out, the trigger
  form's ``params`` generated from the input model's JSON schema and ``doc_md`` from the
  description.
- :func:`workflow_from_dag` goes the other way for hand-wired DAGs: the workflow is derived
  from the DAG's stage tasks (groups are the topological layers of the stage tasks; other
  tasks may sit between them). A stage task must have every stage task of earlier groups
  upstream of it (the engine runs groups in order), which covers the stages it declares as
  dependencies; anything else is a :class:`~airflow_workflow_engine.errors.WorkflowDefinitionError`
  naming the tasks to chain.

:func:`dag_policy` is an Airflow cluster policy (entry point group ``airflow.policy``) that
runs that derivation when Airflow loads a DAG, so a mis-wired DAG is an import error, not a
task failure. Without the entry point the same check runs when a stage task executes.

Importing this module imports Airflow's task SDK and pydantic, never an AI SDK, boto3 or
SQLAlchemy: DAG files stay cheap to parse.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Param
from pydantic import BaseModel

from airflow_workflow_engine.errors import WorkflowDefinitionError
from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.host.derive import stage_tasks, workflow_from_dag

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

    from airflow_workflow_engine.definitions.workflow import Workflow
    from airflow_workflow_engine.operators.stage import StageOperator

__all__ = [
    "add_stage_tasks",
    "build_dag",
    "dag_policy",
    "params_from_model",
    "workflow_from_dag",
]


# -- Workflow -> DAG ----------------------------------------------------------------------


def _inline_refs(schema: Any, defs: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """The schema with ``$ref``s to ``$defs`` replaced by their definitions."""
    if isinstance(schema, list):
        return [_inline_refs(item, defs, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:  # a recursive model: leave it as a free-form object
            return {"type": "object"}
        target = _inline_refs(defs.get(name, {}), defs, (*seen, name))
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return {**target, **_inline_refs(rest, defs, seen)}
    return {k: _inline_refs(v, defs, seen) for k, v in schema.items() if k != "$defs"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` -> X with ``"null"`` added to its type (what the form renders)."""
    options = schema.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = next(o for o in options if o != {"type": "null"})
        kind = other.get("type")
        if isinstance(kind, str):
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**other, **merged, "type": [kind, "null"]}
    return schema


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list) and "null" not in kind:
        return {**schema, "type": [*kind, "null"]}
    return schema


def params_from_model(model: type[BaseModel]) -> dict[str, Param]:
    """DAG ``params`` for the fields of ``model``: typed, with defaults and descriptions.

    Required fields get no default (the trigger form asks for them); optional fields without
    a JSON default (``default_factory``) default to ``None``, which the operator drops so the
    model's own default applies.
    """
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    params: dict[str, Param] = {}
    for name, raw in schema.get("properties", {}).items():
        prop: dict[str, Any] = _nullable(_inline_refs(copy.deepcopy(raw), defs))
        description = prop.pop("description", None)
        if "default" in prop:
            default = prop.pop("default")
            if default is None:
                prop = _allow_null(prop)
            params[name] = Param(default, description=description, **prop)
        elif name in required:
            params[name] = Param(description=description, **prop)
        else:
            params[name] = Param(None, description=description, **_allow_null(prop))
    return params


def _required_without_default(model: type[BaseModel]) -> list[str]:
    return [fld.alias or name for name, fld in model.model_fields.items() if fld.is_required()]


def _doc_md(workflow: Workflow) -> str:
    lines = [f"# {workflow.name}", ""]
    if workflow.description:
        lines += [workflow.description, ""]
    lines += ["| group | stages |", "|---|---|"]
    for number, group in enumerate(workflow.execution_plan(), start=1):
        names = ", ".join(
            f"`{s.id}`" + (" (async batch)" if s.is_async_batch else "") for s in group
        )
        lines.append(f"| {number} | {names} |")
    lines += [
        "",
        f"Input: `{workflow.input.__name__}` (the DAG run's conf, validated; the trigger form "
        "shows its fields). Output: "
        f"`{workflow.output.__name__}`. Workflow id: `{workflow.id}`.",
    ]
    return "\n".join(lines)


def build_dag(
    workflow: Workflow,
    dag_id: str | None = None,
    schedule: Any = None,
    start_date: datetime | None = None,
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    conn_id: str | None = DEFAULT_CONN_ID,
    deferrable: bool = True,
    workflow_ref: str | None = None,
    approval_before: Sequence[str] = (),
    **dag_kwargs: Any,
) -> DAG:
    """A DAG that runs ``workflow``: one task per stage, groups in order.

    :param dag_id: default: the workflow id.
    :param config: per stage id, the stage's config (templated, like the operators').
    :param conn_id: the ``workflow_engine`` connection of every task (``None``: only the
        ``[workflow_engine]`` config section).
    :param deferrable: whether async-batch stages wait in the triggerer (default) or poll in
        their task.
    :param workflow_ref: import path ``"module:attribute"`` of the workflow, for the
        triggerer of the async-batch stages. Default: found by itself (the import path when
        the workflow is a module-level attribute of an importable module, else the DAG file
        the DAG is built in, which the triggerer loads).
    :param approval_before: stage ids whose group waits for a reviewer's approval in Airflow's
        Required Actions: a ``WorkflowApprovalOperator`` task ``approve_<stage_id>`` between
        the groups before and that stage's group (not the first group: the run must exist).
    :param dag_kwargs: anything else ``DAG`` takes (``default_args``, ``tags``, ``catchup``...);
        ``params`` and ``doc_md`` override the generated ones.
    """
    config = dict(config or {})
    _check_config_stages("build_dag", workflow, config)
    _check_approval_stages("build_dag", workflow, approval_before)
    if schedule is not None and "params" not in dag_kwargs:
        missing = _required_without_default(workflow.input)
        if missing:
            raise WorkflowDefinitionError(
                f"build_dag: workflow '{workflow.id}' is scheduled, but its input model "
                f"{workflow.input.__name__} has required fields without defaults "
                f"({', '.join(missing)}), which a scheduled run cannot fill. Give them "
                "defaults or pass params=."
            )
    dag_kwargs.setdefault("params", params_from_model(workflow.input))
    dag_kwargs.setdefault("doc_md", _doc_md(workflow))
    dag_kwargs.setdefault("tags", ["workflow-engine"])
    if workflow.description:
        dag_kwargs.setdefault("description", workflow.description.strip().splitlines()[0])
    with DAG(
        dag_id=dag_id or workflow.id, schedule=schedule, start_date=start_date, **dag_kwargs
    ) as dag:
        add_stage_tasks(
            workflow,
            config=config,
            conn_id=conn_id,
            deferrable=deferrable,
            workflow_ref=workflow_ref,
            approval_before=approval_before,
        )
    dag.fileloc = _caller_file()
    return dag


def _check_config_stages(
    what: str, workflow: Workflow, config: Mapping[str, Mapping[str, Any]]
) -> None:
    unknown = sorted(set(config) - set(workflow.stage_ids()))
    if unknown:
        raise WorkflowDefinitionError(
            f"{what}: config for unknown stage(s) {', '.join(unknown)} of workflow "
            f"'{workflow.id}'; stages are {', '.join(workflow.stage_ids())}."
        )


def _check_approval_stages(what: str, workflow: Workflow, approval_before: Sequence[str]) -> None:
    if isinstance(approval_before, str):
        raise WorkflowDefinitionError(
            f"{what}: approval_before must be a list of stage ids, got the string "
            f"{approval_before!r}; write [{approval_before!r}]."
        )
    plan = workflow.execution_plan()
    unknown = sorted(set(approval_before) - set(workflow.stage_ids()))
    if unknown:
        raise WorkflowDefinitionError(
            f"{what}: approval_before names unknown stage(s) {', '.join(unknown)} of workflow "
            f"'{workflow.id}'; stages are {', '.join(workflow.stage_ids())}."
        )
    first = sorted({s.id for s in plan[0]} & set(approval_before)) if plan else []
    if first:
        raise WorkflowDefinitionError(
            f"{what}: approval_before cannot name {', '.join(first)} of the first group of "
            f"workflow '{workflow.id}': the workflow run is created by the first stages, so "
            "there is nothing to approve yet. Name a later stage."
        )


def add_stage_tasks(
    workflow: Workflow,
    *,
    config: Mapping[str, Mapping[str, Any]],
    conn_id: str | None,
    deferrable: bool,
    workflow_ref: str | None,
    approval_before: Sequence[str] = (),
) -> tuple[list[StageOperator], list[StageOperator]]:
    """One task per stage of ``workflow`` in the current DAG (and task group), groups
    chained; returns the first group's and the last group's tasks. A group with a stage in
    ``approval_before`` waits for a ``WorkflowApprovalOperator`` after the group before."""
    from airflow_workflow_engine.operators.batch import AsyncBatchStageOperator
    from airflow_workflow_engine.operators.stage import StageOperator

    first: list[StageOperator] = []
    previous: list[StageOperator] = []
    for group in workflow.execution_plan():
        gate = next((s.id for s in group if s.id in approval_before), None)
        if gate is not None:
            from airflow_workflow_engine.operators.approval import WorkflowApprovalOperator

            approval = WorkflowApprovalOperator(task_id=f"approve_{gate}", conn_id=conn_id)
            for upstream in previous:
                upstream.set_downstream(approval)
        current: list[StageOperator] = []
        for stage in group:
            common: dict[str, Any] = {
                "stage": stage,
                "workflow": workflow,
                "config": config.get(stage.id),
                "conn_id": conn_id,
            }
            task: StageOperator = (
                AsyncBatchStageOperator(deferrable=deferrable, workflow_ref=workflow_ref, **common)
                if stage.is_async_batch
                else StageOperator(**common)
            )
            current.append(task)
        before: Sequence[BaseOperator] = [approval] if gate is not None else previous
        for task_before in before:
            task_before.set_downstream(current)
        first = first or current
        previous = current
    return first, previous


def _caller_file() -> str:
    """The file of the first frame outside this package: the DAG file that called us.

    Airflow records the file a DAG was created in (``fileloc``) and workers re-parse that
    file; without this it would be this module.
    """
    package = str(Path(__file__).resolve().parent)
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not str(Path(name).resolve()).startswith(package + os.sep) and not name.startswith("<"):
            return name
        frame = frame.f_back
    return ""


# -- DAG -> Workflow ----------------------------------------------------------------------

# -- cluster policy -----------------------------------------------------------------------


def _policy_hook(fn: Any) -> Any:
    try:
        import pluggy
    except ImportError:  # a worker with the task SDK only: the policy is not loaded there
        return fn
    return pluggy.HookimplMarker("airflow.policy")(fn)


@_policy_hook
def dag_policy(dag: Any) -> None:
    """Airflow cluster policy: a DAG with stage tasks must define a valid workflow.

    Registered through the ``airflow.policy`` entry point; raising makes the DAG file an
    import error with this package's message. DAGs without stage tasks are not touched.
    """
    if stage_tasks(dag):
        workflow_from_dag(dag)
