"""Workflows: ordered execution groups of stages, built with :class:`WorkflowBuilder`."""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from airflow_workflow_engine.definitions.config import model_key_problems
from airflow_workflow_engine.definitions.ids import is_well_formed_stage_id
from airflow_workflow_engine.definitions.stage import Stage
from airflow_workflow_engine.definitions.validation import (
    copy_json,
    join_sentences,
    unknown_keys,
    validate_model,
)
from airflow_workflow_engine.errors import (
    ConfigValidationError,
    InputValidationError,
    StageNotFoundError,
    WorkflowDefinitionError,
)

__all__ = ["Workflow", "WorkflowBuilder"]

AnyStage = Stage[Any, Any, Any]


class Workflow:
    """A built, validated workflow. Immutable; create with :class:`WorkflowBuilder`."""

    def __init__(
        self,
        *,
        id: str,
        name: str,
        description: str | None,
        input: type[BaseModel],
        output: type[BaseModel],
        groups: list[tuple[AnyStage, ...]],
    ) -> None:
        self.id = id
        self.name = name
        self.description = description
        self.input = input
        self.output = output
        self._groups = tuple(groups)
        self._stages = {s.id: s for group in groups for s in group}
        self._group_of = {s.id: n for n, group in enumerate(groups) for s in group}
        self._number = {sid: n for n, sid in enumerate(self._stages)}
        #: Per (stage id, known providers): the stage's default config, validated once.
        self._default_configs: dict[tuple[str, tuple[str, ...] | None], dict[str, Any]] = {}

    # -- shape -----------------------------------------------------------------------------
    def stage_ids(self) -> list[str]:
        return list(self._stages)

    def execution_plan(self) -> list[list[AnyStage]]:
        """Execution groups in order; stages of one group run concurrently."""
        return [list(g) for g in self._groups]

    @property
    def group_count(self) -> int:
        return len(self._groups)

    def group(self, number: int) -> tuple[AnyStage, ...]:
        return self._groups[number]

    def get_stage(self, stage_id: str) -> AnyStage:
        try:
            return self._stages[stage_id]
        except KeyError:
            raise StageNotFoundError(self.id, stage_id, self._stages) from None

    def group_of(self, stage_id: str) -> int:
        self.get_stage(stage_id)
        return self._group_of[stage_id]

    def stage_number(self, stage_id: str) -> int:
        """The stage's position in the workflow (0-based, in group order)."""
        self.get_stage(stage_id)
        return self._number[stage_id]

    def stages(self) -> list[AnyStage]:
        return list(self._stages.values())

    # -- input and config ------------------------------------------------------------------
    def validate_input(self, data: Any) -> BaseModel:
        """The workflow input; keys the input model does not have are refused (unless the
        model says ``extra="allow"`` or ``"ignore"``)."""
        return validate_model(
            self.input,
            data,
            InputValidationError,
            f"input for workflow '{self.id}'",
            refuse_unknown_keys=True,
        )

    def default_config(self) -> dict[str, dict[str, Any]]:
        """Per stage id, the config model's defaults (stages with required fields are omitted
        from nothing: their defaults are what the model can give)."""
        result: dict[str, dict[str, Any]] = {}
        for sid, st in self._stages.items():
            defaults: dict[str, Any] = {}
            for name, fld in st.config.model_fields.items():
                if not fld.is_required():
                    defaults[fld.alias or name] = fld.get_default(call_default_factory=True)
            result[sid] = defaults
        return result

    def validate_config(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        model_providers: Collection[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Merges ``config`` (per stage id) with the defaults and validates every stage's part.

        Keys a stage's config model does not have are refused, naming the closest valid one.
        With ``model_providers``, model keys (the ``model`` field of ``with_ai_config``) must
        name one of them. Raises :class:`ConfigValidationError` listing every invalid stage,
        each with its fields.
        """
        config = dict(config or {})
        unknown = [k for k in config if k not in self._stages]
        if unknown:
            rows = [{"field": k, "message": "not a stage of this workflow"} for k in unknown]
            raise ConfigValidationError(
                f"Invalid config for workflow '{self.id}': unknown stage(s) "
                f"{', '.join(map(repr, unknown))}; stages are {', '.join(self._stages)}.",
                rows,
            )
        merged: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        rows = []
        for sid in self._stages:
            try:
                merged[sid] = self._validate_stage_config(sid, config.get(sid, {}), model_providers)
            except ConfigValidationError as exc:
                problems.append(str(exc))
                rows += exc.errors
        if len(problems) == 1:
            raise ConfigValidationError(problems[0], rows)
        if problems:
            raise ConfigValidationError(
                f"Invalid config in {len(problems)} stages of workflow '{self.id}':\n"
                + "\n".join(f"- {p}" for p in problems),
                rows,
            )
        return merged

    def _validate_stage_config(
        self, sid: str, part: Any, model_providers: Collection[str] | None
    ) -> dict[str, Any]:
        if isinstance(part, Mapping) and not part:
            # Most runs give a stage no config: its defaults are validated once (a copy each
            # time, as a run may keep and change its config dicts).
            key = (sid, None if model_providers is None else tuple(model_providers))
            defaults = self._default_configs.get(key)
            if defaults is None:
                defaults = self._check_stage_config(sid, part, model_providers)
                self._default_configs[key] = defaults
            copied: dict[str, Any] = copy_json(defaults)
            return copied
        return self._check_stage_config(sid, part, model_providers)

    def _check_stage_config(
        self, sid: str, part: Any, model_providers: Collection[str] | None
    ) -> dict[str, Any]:
        st = self._stages[sid]
        if isinstance(part, BaseModel):
            part = part.model_dump(by_alias=True)
        if not isinstance(part, Mapping):
            raise ConfigValidationError(
                f"Invalid config for stage '{sid}': expected an object, got {type(part).__name__}.",
                [{"field": sid, "message": "expected an object"}],
            )
        strays = unknown_keys(st.config, part)
        problems = [f"unknown key '{u.field}' in config of stage '{sid}'; {u.hint}" for u in strays]
        rows = [{"field": f"{sid}.{u.field}", "message": u.message} for u in strays]
        stray_fields = {u.field for u in strays}
        values: dict[str, Any] | None = None
        try:
            values = validate_model(st.config, dict(part), ConfigValidationError, "").model_dump(
                mode="json", by_alias=True
            )
            found = model_key_problems(st.config, values, model_providers or ())
            errors = found if model_providers is not None else []
        except ConfigValidationError as exc:
            errors = [r for r in exc.errors if r["field"] not in stray_fields]
        if errors:
            errors = [{"field": f"{sid}.{r['field']}", "message": r["message"]} for r in errors]
            detail = "; ".join(f"{r['field']}: {r['message']}" for r in errors)
            problems.append(f"Invalid config for stage '{sid}' of workflow '{self.id}': {detail}")
            rows += errors
        if problems or values is None:
            raise ConfigValidationError(join_sentences(problems), rows)
        return values

    def stage_config(self, stage_id: str, config: Mapping[str, Any]) -> BaseModel:
        """The typed config of one stage from a validated workflow config."""
        st = self.get_stage(stage_id)
        model: BaseModel = validate_model(
            st.config, config.get(stage_id, {}), ConfigValidationError, f"config of '{stage_id}'"
        )
        return model

    def to_dag(self, dag_id: str | None = None, **dag_kwargs: Any) -> Any:
        """An Airflow DAG with one task per stage; see
        :func:`airflow_workflow_engine.dag.build_dag` (needs the ``airflow`` extra)."""
        # The one call from the core up into the Airflow side, bound late by name: the core
        # never imports it (tests/unit/test_import_graph.py lists it as LATE_BOUND).
        build_dag = importlib.import_module("airflow_workflow_engine.dag").build_dag
        return build_dag(self, dag_id=dag_id, **dag_kwargs)

    def __repr__(self) -> str:
        plan = " -> ".join("[" + ", ".join(s.id for s in g) + "]" for g in self._groups)
        return f"Workflow({self.id!r}: {plan})"


class WorkflowBuilder:
    """Chains stages into groups: ``.pipe(stage)`` adds a one-stage group, ``.parallel([...])``
    a group whose stages run concurrently; ``.build()`` checks the whole definition."""

    def __init__(
        self,
        id: str,
        name: str,
        description: str | None = None,
        input: type[BaseModel] | None = None,
        output: type[BaseModel] | None = None,
    ) -> None:
        if input is None or output is None:
            raise WorkflowDefinitionError(
                f"Workflow '{id}': input= and output= pydantic model classes are required."
            )
        self._id = id
        self._name = name
        self._description = description
        self._input = input
        self._output = output
        self._groups: list[tuple[AnyStage, ...]] = []

    def pipe(self, stage: AnyStage) -> WorkflowBuilder:
        self._groups.append((stage,))
        return self

    def parallel(self, stages: Iterable[AnyStage]) -> WorkflowBuilder:
        group = tuple(stages)
        if not group:
            raise WorkflowDefinitionError(f"Workflow '{self._id}': parallel() needs stages.")
        self._groups.append(group)
        return self

    def build(self) -> Workflow:
        wid = self._id
        if not isinstance(wid, str) or not is_well_formed_stage_id(wid.replace(".", "-")):
            raise WorkflowDefinitionError(f"Invalid workflow id {wid!r}.")
        for role, model in (("input", self._input), ("output", self._output)):
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise WorkflowDefinitionError(
                    f"Workflow '{wid}': {role} must be a pydantic model class, got {model!r}."
                )
        if not self._groups:
            raise WorkflowDefinitionError(
                f"Workflow '{wid}' has no stages: add at least one with .pipe() or .parallel()."
            )
        seen: dict[str, int] = {}
        for number, group in enumerate(self._groups):
            for st in group:
                if not isinstance(st, Stage):
                    raise WorkflowDefinitionError(
                        f"Workflow '{wid}': group {number} contains {st!r}, not a Stage."
                    )
                if not is_well_formed_stage_id(st.id):
                    raise WorkflowDefinitionError(f"Workflow '{wid}': invalid stage id {st.id!r}.")
                if st.id in seen:
                    raise WorkflowDefinitionError(
                        f"Workflow '{wid}': duplicate stage id '{st.id}' (groups {seen[st.id]} "
                        f"and {number}); stage ids must be unique within a workflow."
                    )
                seen[st.id] = number
            for st in group:
                for dep in st.dependencies:
                    if dep not in seen or seen[dep] >= number:
                        where = (
                            "runs in the same parallel group"
                            if seen.get(dep) == number
                            else "is not in an earlier group"
                            if dep in seen or dep in {s.id for g in self._groups for s in g}
                            else "is not part of the workflow"
                        )
                        raise WorkflowDefinitionError(
                            f"Workflow '{wid}': stage '{st.id}' depends on '{dep}', which {where}."
                        )
        return Workflow(
            id=wid,
            name=self._name,
            description=self._description,
            input=self._input,
            output=self._output,
            groups=list(self._groups),
        )
