"""Stage definitions: sync stages and async-batch stages, as plain typed values."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from airflow_workflow_engine.definitions.ids import STAGE_ID_PATTERN, is_well_formed_stage_id
from airflow_workflow_engine.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.context import StageContext

__all__ = [
    "CompletionCheck",
    "EmptyConfig",
    "Stage",
    "StageMode",
    "StageResult",
    "Suspended",
    "batch_stage",
    "define_async_batch_stage",
    "define_stage",
    "stage",
]

InputT = TypeVar("InputT", bound=BaseModel | None)
OutputT = TypeVar("OutputT", bound=BaseModel)
ConfigT = TypeVar("ConfigT", bound=BaseModel)

StageMode = Literal["sync", "async-batch"]


class EmptyConfig(BaseModel):
    """The config model of a stage declared with ``config=None``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StageResult(Generic[OutputT]):
    """What an execute function may return instead of the bare output."""

    output: OutputT | dict[str, Any]
    custom_metrics: dict[str, Any] = field(default_factory=dict)


class Suspended(BaseModel):
    """Returned by an async-batch stage's ``execute``: wait, then poll ``check_completion``.

    ``poll_interval`` and ``max_wait`` are seconds; ``max_wait=None`` waits without limit.
    """

    model_config = ConfigDict(frozen=True)

    state: dict[str, Any]
    poll_interval: float = 60.0
    max_wait: float | None = 86_400.0

    @field_validator("state")
    @classmethod
    def _json_able(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"suspended state must be JSON-serializable: {exc}") from None
        return value

    @field_validator("poll_interval")
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("poll_interval must be > 0 seconds")
        return value

    @field_validator("max_wait")
    @classmethod
    def _positive_wait(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("max_wait must be > 0 seconds (or None for no limit)")
        return value


class CompletionCheck(BaseModel):
    """Answer of ``check_completion``.

    - ``ready=True, output=...``: the stage completes with that output;
    - ``ready=True`` without output: ``execute`` runs again with ``ctx.resume_state`` set;
    - ``ready=False, next_check_in=...``: poll again later (seconds; ``None`` = poll interval);
    - ``ready=False, error="..."``: the stage fails, without retry.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    ready: bool
    output: Any = None
    next_check_in: float | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _error_implies_not_ready(self) -> CompletionCheck:
        if self.error is not None and self.ready:
            raise ValueError("a CompletionCheck with an error cannot be ready")
        return self


ExecuteReturn: TypeAlias = "OutputT | dict[str, Any] | StageResult[OutputT] | Suspended"
ExecuteFn: TypeAlias = Callable[..., Any]
CheckCompletionFn: TypeAlias = Callable[..., "CompletionCheck | Awaitable[CompletionCheck]"]
CancelFn: TypeAlias = Callable[..., Any]


@dataclass(frozen=True, eq=False)
class Stage(Generic[InputT, OutputT, ConfigT]):
    """A typed unit of work. Build with :func:`define_stage` or :func:`define_async_batch_stage`."""

    id: str
    name: str
    input: type[BaseModel] | None
    output: type[OutputT]
    config: type[ConfigT]
    execute: Callable[[StageContext[InputT, ConfigT]], Any]
    description: str | None = None
    dependencies: tuple[str, ...] = ()
    mode: StageMode = "sync"
    check_completion: Callable[[dict[str, Any], StageContext[InputT, ConfigT]], Any] | None = None
    on_cancel: Callable[[dict[str, Any], StageContext[InputT, ConfigT]], Any] | None = None

    @property
    def is_async_batch(self) -> bool:
        return self.mode == "async-batch"

    def __repr__(self) -> str:
        return f"Stage(id={self.id!r}, mode={self.mode!r})"


def _check_model(stage_id: str, role: str, model: Any, allow_none: bool) -> None:
    if model is None and allow_none:
        return
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise WorkflowDefinitionError(
            f"Stage '{stage_id}': {role} must be a pydantic model class, got {model!r}."
        )


def _build(
    *,
    id: str,
    name: str | None,
    description: str | None,
    input: type[BaseModel] | None,
    output: type[BaseModel],
    config: type[BaseModel] | None,
    execute: Callable[..., Any],
    dependencies: Sequence[str],
    mode: StageMode,
    check_completion: Callable[..., Any] | None = None,
    on_cancel: Callable[..., Any] | None = None,
) -> Stage[Any, Any, Any]:
    if not isinstance(id, str) or not is_well_formed_stage_id(id):
        raise WorkflowDefinitionError(
            f"Invalid stage id {id!r}: must match {STAGE_ID_PATTERN.pattern} "
            "(a letter, then letters, digits, '-' or '_')."
        )
    _check_model(id, "input", input, allow_none=True)
    _check_model(id, "output", output, allow_none=False)
    _check_model(id, "config", config, allow_none=True)
    if not callable(execute):
        raise WorkflowDefinitionError(f"Stage '{id}': execute must be callable.")
    if mode == "async-batch" and not callable(check_completion):
        raise WorkflowDefinitionError(
            f"Stage '{id}': an async-batch stage needs a check_completion function."
        )
    if isinstance(dependencies, str):
        raise WorkflowDefinitionError(f"Stage '{id}': dependencies must be a list of stage ids.")
    return Stage(
        id=id,
        name=name or id,
        description=description,
        input=input,
        output=output,
        config=config or EmptyConfig,
        execute=execute,
        dependencies=tuple(dependencies),
        mode=mode,
        check_completion=check_completion,
        on_cancel=on_cancel,
    )


def define_stage(
    *,
    id: str,
    output: type[OutputT],
    execute: Callable[[StageContext[Any, Any]], Any],
    input: type[BaseModel] | None = None,
    config: type[BaseModel] | None = None,
    name: str | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
) -> Stage[Any, OutputT, Any]:
    """Defines a sync stage. ``execute(ctx)`` may be ``def`` or ``async def`` and returns the
    output model, a dict validated into it, or a :class:`StageResult`."""
    return _build(
        id=id,
        name=name,
        description=description,
        input=input,
        output=output,
        config=config,
        execute=execute,
        dependencies=dependencies,
        mode="sync",
    )


def stage(
    *,
    id: str,
    output: type[OutputT],
    input: type[BaseModel] | None = None,
    config: type[BaseModel] | None = None,
    name: str | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
) -> Callable[[Callable[[StageContext[Any, Any]], Any]], Stage[Any, OutputT, Any]]:
    """Decorator form of :func:`define_stage`; the docstring becomes the description."""

    def wrap(fn: Callable[[StageContext[Any, Any]], Any]) -> Stage[Any, OutputT, Any]:
        return define_stage(
            id=id,
            output=output,
            execute=fn,
            input=input,
            config=config,
            name=name,
            description=description or inspect.getdoc(fn),
            dependencies=dependencies,
        )

    return wrap


def define_async_batch_stage(
    *,
    id: str,
    output: type[OutputT],
    execute: Callable[[StageContext[Any, Any]], Any],
    check_completion: Callable[[dict[str, Any], StageContext[Any, Any]], Any],
    input: type[BaseModel] | None = None,
    config: type[BaseModel] | None = None,
    name: str | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
    on_cancel: Callable[[dict[str, Any], StageContext[Any, Any]], Any] | None = None,
) -> Stage[Any, OutputT, Any]:
    """Defines an async-batch stage: ``execute`` returns an output or :class:`Suspended`;
    ``check_completion(state, ctx)`` returns a :class:`CompletionCheck`. ``on_cancel(state, ctx)``
    (optional) cancels the external job when the run is cancelled."""
    return _build(
        id=id,
        name=name,
        description=description,
        input=input,
        output=output,
        config=config,
        execute=execute,
        dependencies=dependencies,
        mode="async-batch",
        check_completion=check_completion,
        on_cancel=on_cancel,
    )


def batch_stage(
    *,
    id: str,
    output: type[OutputT],
    check_completion: Callable[[dict[str, Any], StageContext[Any, Any]], Any],
    input: type[BaseModel] | None = None,
    config: type[BaseModel] | None = None,
    name: str | None = None,
    description: str | None = None,
    dependencies: Sequence[str] = (),
    on_cancel: Callable[[dict[str, Any], StageContext[Any, Any]], Any] | None = None,
) -> Callable[[Callable[[StageContext[Any, Any]], Any]], Stage[Any, OutputT, Any]]:
    """Decorator form of :func:`define_async_batch_stage`."""

    def wrap(fn: Callable[[StageContext[Any, Any]], Any]) -> Stage[Any, OutputT, Any]:
        return define_async_batch_stage(
            id=id,
            output=output,
            execute=fn,
            check_completion=check_completion,
            input=input,
            config=config,
            name=name,
            description=description or inspect.getdoc(fn),
            dependencies=dependencies,
            on_cancel=on_cancel,
        )

    return wrap
