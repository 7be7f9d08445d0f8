"""Stage definitions: define_stage / @stage, async-batch stages, Suspended, CompletionCheck."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from airflow_workflow_engine import (
    CompletionCheck,
    EmptyConfig,
    Stage,
    StageResult,
    Suspended,
    batch_stage,
    define_async_batch_stage,
    define_stage,
    stage,
)
from airflow_workflow_engine.definitions.ids import STAGE_ID_PATTERN
from airflow_workflow_engine.errors import WorkflowDefinitionError


class In(BaseModel):
    text: str


class Out(BaseModel):
    n: int


class Cfg(BaseModel):
    limit: int = 3


def _execute(ctx: Any) -> Out:
    return Out(n=len(ctx.input.text))


def _check(state: dict[str, Any], ctx: Any) -> CompletionCheck:
    return CompletionCheck(ready=True, output={"n": 1})


def _cancel(state: dict[str, Any], ctx: Any) -> None:
    return None


# -- define_stage / @stage --------------------------------------------------------------------


def test_define_stage_builds_a_sync_stage_with_defaults() -> None:
    st = define_stage(id="count", input=In, output=Out, execute=_execute)

    assert isinstance(st, Stage)
    assert st.id == "count"
    assert st.name == "count"  # the name defaults to the id
    assert st.description is None
    assert st.input is In
    assert st.output is Out
    assert st.config is EmptyConfig
    assert st.execute is _execute
    assert st.dependencies == ()
    assert st.mode == "sync"
    assert st.is_async_batch is False
    assert st.check_completion is None
    assert st.on_cancel is None
    assert repr(st) == "Stage(id='count', mode='sync')"


def test_define_stage_keeps_every_given_field() -> None:
    st = define_stage(
        id="count",
        name="Count characters",
        description="Counts.",
        input=In,
        output=Out,
        config=Cfg,
        execute=_execute,
        dependencies=["extract", "clean"],
    )

    assert (st.name, st.description, st.config) == ("Count characters", "Counts.", Cfg)
    assert st.dependencies == ("extract", "clean")  # stored as a tuple


def test_define_stage_accepts_no_input_model() -> None:
    st = define_stage(id="count", input=None, output=Out, execute=_execute)
    assert st.input is None


def test_stage_is_immutable() -> None:
    st = define_stage(id="count", output=Out, execute=_execute)
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.id = "other"  # type: ignore[misc]


def test_stage_decorator_is_define_stage_with_the_docstring_as_description() -> None:
    @stage(id="count", input=In, output=Out, config=Cfg, name="Count", dependencies=["x"])
    def count(ctx: Any) -> Out:
        """Counts the characters of the text."""
        return Out(n=len(ctx.input.text))

    explicit = define_stage(
        id="count",
        input=In,
        output=Out,
        config=Cfg,
        name="Count",
        dependencies=["x"],
        execute=count.execute,
        description="Counts the characters of the text.",
    )

    fields = ("id", "name", "description", "input", "output", "config", "dependencies", "mode")
    assert {f: getattr(count, f) for f in fields} == {f: getattr(explicit, f) for f in fields}
    assert count.description == "Counts the characters of the text."
    assert count.execute.__name__ == "count"  # the decorated function is the execute


def test_stage_decorator_explicit_description_wins_over_docstring() -> None:
    @stage(id="count", output=Out, description="Given description.")
    def count(ctx: Any) -> Out:
        """Docstring."""
        return Out(n=0)

    assert count.description == "Given description."


def test_stage_decorator_without_docstring_has_no_description() -> None:
    @stage(id="count", output=Out)
    def count(ctx: Any) -> Out:
        return Out(n=0)

    assert count.description is None


def test_stage_decorator_validates_like_define_stage() -> None:
    with pytest.raises(WorkflowDefinitionError, match="Invalid stage id 'bad id'"):

        @stage(id="bad id", output=Out)
        def bad(ctx: Any) -> Out:
            return Out(n=0)


# -- async-batch stages -----------------------------------------------------------------------


def test_define_async_batch_stage() -> None:
    st = define_async_batch_stage(
        id="batch",
        input=In,
        output=Out,
        execute=_execute,
        check_completion=_check,
        on_cancel=_cancel,
    )

    assert st.mode == "async-batch"
    assert st.is_async_batch is True
    assert st.check_completion is _check
    assert st.on_cancel is _cancel
    assert st.config is EmptyConfig
    assert repr(st) == "Stage(id='batch', mode='async-batch')"


def test_batch_stage_decorator_matches_define_async_batch_stage() -> None:
    @batch_stage(id="batch", input=In, output=Out, check_completion=_check, on_cancel=_cancel)
    def submit(ctx: Any) -> Suspended:
        """Submits the batch."""
        return Suspended(state={"id": 1})

    assert submit.mode == "async-batch"
    assert submit.description == "Submits the batch."
    assert submit.check_completion is _check
    assert submit.on_cancel is _cancel
    assert submit.execute.__name__ == "submit"


def test_async_batch_stage_without_check_completion_is_rejected() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        define_async_batch_stage(
            id="batch",
            output=Out,
            execute=_execute,
            check_completion=None,  # type: ignore[arg-type]
        )
    assert (
        str(err.value) == "Stage 'batch': an async-batch stage needs a check_completion function."
    )


def test_async_batch_stage_with_non_callable_check_completion_is_rejected() -> None:
    with pytest.raises(WorkflowDefinitionError, match="needs a check_completion function"):
        define_async_batch_stage(
            id="batch",
            output=Out,
            execute=_execute,
            check_completion="poll",  # type: ignore[arg-type]
        )


# -- invalid definitions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    ["", "1abc", "-abc", "_abc", "has space", "a.b", "a/b", "émoji", "a" * 101, 42, None],
)
def test_invalid_stage_ids_are_rejected(bad_id: Any) -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        define_stage(id=bad_id, output=Out, execute=_execute)
    message = str(err.value)
    assert message.startswith(
        f"Invalid stage id {bad_id!r}: must match {STAGE_ID_PATTERN.pattern} "
    )
    assert "a letter, then letters, digits, '-' or '_'" in message


@pytest.mark.parametrize("good_id", ["a", "A", "extract-text", "load_data", "x1-y_2", "a" * 100])
def test_valid_stage_ids_are_accepted(good_id: str) -> None:
    assert define_stage(id=good_id, output=Out, execute=_execute).id == good_id


@pytest.mark.parametrize("role", ["input", "output", "config"])
@pytest.mark.parametrize("bad_model", [dict, int, In(text="an instance, not a class"), "In"])
def test_non_model_input_output_config_are_rejected(role: str, bad_model: Any) -> None:
    kwargs: dict[str, Any] = {"input": In, "output": Out, "config": Cfg, role: bad_model}
    with pytest.raises(WorkflowDefinitionError) as err:
        define_stage(id="count", execute=_execute, **kwargs)
    assert str(err.value) == (
        f"Stage 'count': {role} must be a pydantic model class, got {bad_model!r}."
    )


def test_output_model_is_required() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        define_stage(id="count", output=None, execute=_execute)  # type: ignore[arg-type]
    assert str(err.value) == "Stage 'count': output must be a pydantic model class, got None."


def test_async_batch_stage_models_are_checked_too() -> None:
    with pytest.raises(WorkflowDefinitionError, match="Stage 'batch': output must be a pydantic"):
        define_async_batch_stage(
            id="batch",
            output=dict,  # type: ignore[type-var]
            execute=_execute,
            check_completion=_check,
        )


def test_execute_must_be_callable() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        define_stage(id="count", output=Out, execute="run")  # type: ignore[arg-type]
    assert str(err.value) == "Stage 'count': execute must be callable."


def test_dependencies_given_as_a_string_are_rejected() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        define_stage(id="count", output=Out, execute=_execute, dependencies="extract")
    assert str(err.value) == "Stage 'count': dependencies must be a list of stage ids."


def test_definition_errors_are_not_retryable() -> None:
    assert WorkflowDefinitionError.retryable is False


# -- EmptyConfig ------------------------------------------------------------------------------


def test_empty_config_rejects_fields_and_is_frozen() -> None:
    assert EmptyConfig().model_dump() == {}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        EmptyConfig.model_validate({"unexpected": 1})


# -- Suspended --------------------------------------------------------------------------------


def test_suspended_defaults() -> None:
    s = Suspended(state={"batch_id": "b-1"})
    assert s.state == {"batch_id": "b-1"}
    assert s.poll_interval == 60.0
    assert s.max_wait == 86_400.0


def test_suspended_max_wait_none_means_no_limit() -> None:
    s = Suspended(state={}, poll_interval=5, max_wait=None)
    assert (s.poll_interval, s.max_wait) == (5.0, None)


def test_suspended_accepts_json_state() -> None:
    state = {"id": "b", "n": 1, "f": 1.5, "ok": True, "none": None, "items": [1, {"a": "b"}]}
    assert Suspended(state=state).state == state


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, datetime(2026, 1, 1, tzinfo=timezone.utc), b"bytes", In(text="model")],
)
def test_suspended_state_must_be_json_serializable(value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        Suspended(state={"value": value})
    assert "suspended state must be JSON-serializable" in str(err.value)
    assert err.value.errors()[0]["loc"] == ("state",)


def test_suspended_state_must_be_a_dict() -> None:
    with pytest.raises(ValidationError) as err:
        Suspended(state=["not", "a", "dict"])  # type: ignore[arg-type]
    assert err.value.errors()[0]["loc"] == ("state",)


@pytest.mark.parametrize("interval", [0, 0.0, -1, -0.5])
def test_suspended_poll_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValidationError) as err:
        Suspended(state={}, poll_interval=interval)
    assert "poll_interval must be > 0 seconds" in str(err.value)
    assert err.value.errors()[0]["loc"] == ("poll_interval",)


@pytest.mark.parametrize("max_wait", [0, -5])
def test_suspended_max_wait_must_be_positive(max_wait: float) -> None:
    with pytest.raises(ValidationError) as err:
        Suspended(state={}, max_wait=max_wait)
    assert "max_wait must be > 0 seconds (or None for no limit)" in str(err.value)
    assert err.value.errors()[0]["loc"] == ("max_wait",)


def test_suspended_is_frozen() -> None:
    s = Suspended(state={})
    with pytest.raises(ValidationError):
        s.poll_interval = 1.0  # type: ignore[misc]


# -- CompletionCheck --------------------------------------------------------------------------


def test_completion_check_defaults() -> None:
    check = CompletionCheck(ready=False)
    assert (check.ready, check.output, check.next_check_in, check.error) == (
        False,
        None,
        None,
        None,
    )


def test_completion_check_ready_with_output() -> None:
    check = CompletionCheck(ready=True, output=Out(n=3))
    assert check.ready and check.output == Out(n=3)


def test_completion_check_not_ready_with_next_check_in() -> None:
    assert CompletionCheck(ready=False, next_check_in=30).next_check_in == 30.0


def test_completion_check_with_error_is_not_ready() -> None:
    check = CompletionCheck(ready=False, error="batch failed")
    assert (check.ready, check.error) == (False, "batch failed")


def test_completion_check_error_implies_not_ready() -> None:
    with pytest.raises(ValidationError) as err:
        CompletionCheck(ready=True, error="batch failed")
    assert "a CompletionCheck with an error cannot be ready" in str(err.value)


def test_completion_check_validates_from_a_dict() -> None:
    check = CompletionCheck.model_validate({"ready": True, "output": {"n": 1}})
    assert check.output == {"n": 1}


# -- StageResult ------------------------------------------------------------------------------


def test_stage_result_holds_output_and_metrics() -> None:
    result = StageResult(output=Out(n=2), custom_metrics={"items": 2})
    assert result.output == Out(n=2)
    assert result.custom_metrics == {"items": 2}


def test_stage_result_metrics_default_to_a_fresh_dict() -> None:
    first, second = StageResult(output={"n": 1}), StageResult(output={"n": 2})
    assert first.custom_metrics == {}
    assert first.custom_metrics is not second.custom_metrics


def test_stage_result_is_immutable() -> None:
    result = StageResult(output={"n": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.output = {"n": 2}  # type: ignore[misc]
