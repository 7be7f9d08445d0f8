"""``run.create`` refuses typos before anything is written: unknown config keys (with the
closest valid key), unknown input fields, a missing or unknown-provider model key, and lists
every invalid stage (issue 9, item 8). Each refusal leaves no row, on every backend."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, define_stage, with_ai_config
from airflow_workflow_engine.definitions.annotations import Actor
from airflow_workflow_engine.errors import ConfigValidationError, InputValidationError
from airflow_workflow_engine.kernel.commands import AnnotationSpec, RunCreate
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit, create_test_kernel


class Doc(BaseModel):
    title: str
    body: str


class Summary(BaseModel):
    summary: str


class SummarizeOptions(BaseModel):  # a user's model: pydantic would ignore extra keys
    max_words: int = 20


def _summarize(ctx: Any) -> Summary:
    return Summary(summary=ctx.ai.generate_text(ctx.config.model, ctx.input.body).text)


def _label(ctx: Any) -> Summary:
    return Summary(summary=ctx.require("summarize").summary)


summarize = define_stage(
    id="summarize",
    input=Doc,
    output=Summary,
    config=with_ai_config(SummarizeOptions),
    execute=_summarize,
)
label = define_stage(
    id="label",
    output=Summary,
    config=with_ai_config(BaseModel),
    execute=_label,
    dependencies=["summarize"],
)
NOTES = (
    WorkflowBuilder("notes", "Notes", input=Doc, output=Summary).pipe(summarize).pipe(label).build()
)
DOC = {"title": "T", "body": "w1 w2 w3"}
GOOD = {"summarize": {"model": "mock:echo"}, "label": {"model": "mock:echo"}}


@pytest.fixture
def notes(persistence: Any) -> TestKit:
    return create_test_kernel([NOTES], persistence=persistence)


def _create(kit: TestKit, **fields: Any) -> Any:
    fields.setdefault("input", DOC)
    fields.setdefault("config", GOOD)
    return kit.kernel.dispatch(
        RunCreate(
            workflow_id="notes",
            idempotency_key="dag/run-1",
            annotations=[
                AnnotationSpec(actor=Actor(kind="system", id="t"), attributes={"who": "t"})
            ],
            **fields,
        )
    )


def _assert_nothing_written(kit: TestKit) -> None:
    assert kit.persistence.list_runs() == []
    assert kit.persistence.list_unpublished_events() == []
    assert kit.persistence.get_run_by_idempotency_key("dag/run-1") is None


def test_unknown_config_key_is_refused_naming_the_closest_key(notes: TestKit) -> None:
    config = {"summarize": {"modle": "mock:echo", "model": "mock:echo"}, "label": GOOD["label"]}
    with pytest.raises(ConfigValidationError) as err:
        _create(notes, config=config)
    assert str(err.value) == (
        "unknown key 'modle' in config of stage 'summarize'; did you mean 'model'?"
    )
    assert err.value.fields == ["summarize.modle"]
    _assert_nothing_written(notes)


def test_every_invalid_stage_is_reported(notes: TestKit) -> None:
    config = {"summarize": {"model": "mock:echo", "max_word": 5}, "label": {}}
    with pytest.raises(ConfigValidationError) as err:
        _create(notes, config=config)
    message = str(err.value)
    assert message.startswith("Invalid config in 2 stages of workflow 'notes':")
    assert "unknown key 'max_word' in config of stage 'summarize'; did you mean 'max_words'?" in (
        message
    )
    assert "label.model: Field required" in message
    assert err.value.fields == ["summarize.max_word", "label.model"]
    _assert_nothing_written(notes)


def test_missing_model_is_an_error_naming_stage_and_field(notes: TestKit) -> None:
    with pytest.raises(ConfigValidationError) as err:
        _create(notes, config={"summarize": {"model": "mock:echo"}})
    assert str(err.value) == (
        "Invalid config for stage 'label' of workflow 'notes': label.model: Field required"
    )
    _assert_nothing_written(notes)


def test_model_key_with_an_unknown_provider_is_refused(notes: TestKit) -> None:
    config = {"summarize": {"model": "opnai:gpt-4o"}, "label": {"model": "mock:echo"}}
    with pytest.raises(ConfigValidationError) as err:
        _create(notes, config=config)
    assert str(err.value) == (
        "Invalid config for stage 'summarize' of workflow 'notes': summarize.model: unknown "
        "provider 'opnai' in model key 'opnai:gpt-4o'; known providers: google, mock, openai; "
        "did you mean 'openai:gpt-4o'?"
    )
    _assert_nothing_written(notes)


@pytest.mark.filterwarnings("ignore:No price known")
def test_a_configured_provider_is_known(persistence: Any) -> None:
    kit = create_test_kernel(
        [NOTES],
        persistence=persistence,
        ai_providers={"gateway": {"kind": "mock"}},
    )
    config = {"summarize": {"model": "gateway:echo"}, "label": {"model": "mock:echo"}}
    run_id = _create(kit, config=config).workflow_run_id
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status.value == "COMPLETED"


def test_input_field_the_model_does_not_have_is_refused(notes: TestKit) -> None:
    with pytest.raises(InputValidationError) as err:
        _create(notes, input={**DOC, "titel": "typo"})
    assert str(err.value) == (
        "unknown key 'titel' in input for workflow 'notes'; did you mean 'title'?"
    )
    assert err.value.fields == ["titel"]
    _assert_nothing_written(notes)


def test_after_a_refusal_the_corrected_command_creates_the_run(notes: TestKit) -> None:
    with pytest.raises(InputValidationError):
        _create(notes, input={**DOC, "titel": "typo"})
    run_id = _create(notes).workflow_run_id  # same idempotency key: it was released
    run = run_to_completion(notes.kernel, notes.job_transport, run_id)
    assert run.status.value == "COMPLETED"
    assert run.config["summarize"]["model"] == "mock:echo"
