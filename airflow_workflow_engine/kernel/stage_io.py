"""Moving data between stages: input resolution, output validation and group outputs.

Pure functions over definitions and stage rows; no persistence calls here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from airflow_workflow_engine.definitions.stage import Stage, StageResult, Suspended
from airflow_workflow_engine.definitions.validation import to_json, validate_model
from airflow_workflow_engine.definitions.workflow import Workflow
from airflow_workflow_engine.errors import (
    InputValidationError,
    MissingStageOutputError,
    NonRetryableStageError,
    OutputValidationError,
)
from airflow_workflow_engine.kernel.records import RunRecord, StageRecord
from airflow_workflow_engine.kernel.status import Status

__all__ = [
    "EarlierOutputs",
    "StageOutput",
    "build_workflow_context",
    "group_output",
    "interpret_return",
    "output_model",
    "resolve_stage_input",
    "validate_output",
]

AnyStage = Stage[Any, Any, Any]


@dataclass(frozen=True)
class StageOutput:
    """A validated stage output in JSON form, with its custom metrics."""

    value: Any
    metrics: dict[str, Any] = field(default_factory=dict)


def validate_output(stage: AnyStage, raw: Any) -> Any:
    """Validates ``raw`` (model instance or dict) against the stage's output model -> JSON."""
    model = validate_model(
        stage.output, raw, OutputValidationError, f"output of stage '{stage.id}'"
    )
    return to_json(model)


def interpret_return(stage: AnyStage, raw: Any) -> StageOutput | Suspended:
    """Turns what ``execute`` returned into a validated output or a suspension."""
    if isinstance(raw, Suspended):
        if not stage.is_async_batch:
            raise NonRetryableStageError(
                f"Stage '{stage.id}' returned Suspended but is not an async-batch stage: "
                "define it with define_async_batch_stage."
            )
        return raw
    if isinstance(raw, StageResult):
        return StageOutput(validate_output(stage, raw.output), dict(raw.custom_metrics))
    if raw is None:
        raise OutputValidationError(
            f"Invalid output of stage '{stage.id}': execute returned None; return a "
            f"{stage.output.__name__}, a dict or a StageResult.",
            [{"field": "<root>", "message": "execute returned None"}],
        )
    return StageOutput(validate_output(stage, raw))


def output_model(stage: AnyStage, value: Any) -> BaseModel:
    """A stored JSON output back as an instance of the stage's output model."""
    model: BaseModel = stage.output.model_validate(value)
    return model


def _completed(records: Sequence[StageRecord]) -> dict[str, StageRecord]:
    return {r.stage_id: r for r in records if r.status == Status.COMPLETED}


class EarlierOutputs(Mapping[str, BaseModel]):
    """Stage id -> output model instance of the completed earlier stages. An output is
    validated back into its model when it is first read (then kept): a stage reads its
    input's group and what it requires, not every earlier output, so a workflow of n
    stages no longer validates n * (n - 1) / 2 stored outputs per run."""

    __slots__ = ("_models", "_raw")

    def __init__(self, raw: dict[str, tuple[AnyStage, Any]]) -> None:
        self._raw = raw
        self._models: dict[str, BaseModel] = {}

    def __getitem__(self, stage_id: str) -> BaseModel:
        model = self._models.get(stage_id)
        if model is None:
            stage, value = self._raw[stage_id]
            model = self._models[stage_id] = output_model(stage, value)
        return model

    def __contains__(self, stage_id: object) -> bool:
        return stage_id in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"EarlierOutputs({list(self._raw)})"


def build_workflow_context(
    workflow: Workflow, records: Sequence[StageRecord], before_group: int
) -> EarlierOutputs:
    """Outputs of completed stages in groups before ``before_group``, as model instances
    (each validated when first read)."""
    done = _completed(records)
    raw: dict[str, tuple[AnyStage, Any]] = {}
    for number in range(before_group):
        for st in workflow.group(number):
            rec = done.get(st.id)
            if rec is not None and rec.output is not None:
                raw[st.id] = (st, rec.output)
    return EarlierOutputs(raw)


def group_output(
    workflow: Workflow, number: int, context: Mapping[str, BaseModel], consumer: str
) -> BaseModel | dict[str, BaseModel]:
    """A group's output: the stage's output, or a dict keyed by stage id for a parallel group.

    A missing output fails loudly: never a silent fallback to the workflow input.
    """
    stages = workflow.group(number)
    missing = [s.id for s in stages if s.id not in context]
    if missing:
        raise MissingStageOutputError(consumer, missing[0], list(context))
    if len(stages) == 1:
        return context[stages[0].id]
    return {s.id: context[s.id] for s in stages}


def resolve_stage_input(
    workflow: Workflow,
    run: RunRecord,
    stage: AnyStage,
    context: Mapping[str, BaseModel],
) -> BaseModel | None:
    """The typed input of ``stage``: the workflow input for the first group, else the previous
    group's output; ``None`` for stages declared with ``input=None``."""
    number = workflow.group_of(stage.id)
    if stage.input is None:
        return None
    source: Any = (
        run.input if number == 0 else group_output(workflow, number - 1, context, stage.id)
    )
    return validate_model(stage.input, source, InputValidationError, f"input of stage '{stage.id}'")
