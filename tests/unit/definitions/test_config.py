"""Config presets: with_ai_config, with_standard_config, with_full_config."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from airflow_workflow_engine import (
    WorkflowBuilder,
    define_stage,
    with_ai_config,
    with_full_config,
    with_standard_config,
)
from airflow_workflow_engine.definitions.config import model_key_fields

# ``model`` has no default: a stage never calls a model nobody chose.
AI_DEFAULTS = {"temperature": 0.7, "max_tokens": None, "max_cost": None}
STANDARD_DEFAULTS = {**AI_DEFAULTS, "concurrency": 5, "feature_flags": {}}
FULL_DEFAULTS = {**STANDARD_DEFAULTS, "debug": False, "dry_run": False}


class Mine(BaseModel):
    custom_field: str = "x"


@pytest.mark.parametrize(
    ("preset", "suffix", "defaults"),
    [
        (with_ai_config, "WithAI", AI_DEFAULTS),
        (with_standard_config, "Standard", STANDARD_DEFAULTS),
        (with_full_config, "Full", FULL_DEFAULTS),
    ],
)
def test_presets_add_fields_with_defaults(
    preset: Any, suffix: str, defaults: dict[str, Any]
) -> None:
    model = preset(Mine)
    assert model.__name__ == f"Mine{suffix}"
    assert issubclass(model, Mine)
    assert list(model.model_fields) == ["custom_field", "model", *defaults]
    assert model(model="mock:echo").model_dump() == {
        "custom_field": "x",
        "model": "mock:echo",
        **defaults,
    }


@pytest.mark.parametrize("preset", [with_ai_config, with_standard_config, with_full_config])
def test_presets_have_no_default_model(preset: Any) -> None:
    with pytest.raises(ValidationError) as err:
        preset(Mine)()
    assert err.value.errors()[0]["loc"] == ("model",)
    assert err.value.errors()[0]["type"] == "missing"


def test_presets_leave_the_given_model_unchanged() -> None:
    with_full_config(Mine)
    assert list(Mine.model_fields) == ["custom_field"]


def test_ai_fields_have_descriptions() -> None:
    fields = with_ai_config(Mine).model_fields
    assert fields["model"].description == (
        "Model key, e.g. 'openai:gpt-5-mini' ('mock:echo' for the offline mock)"
    )
    assert fields["max_cost"].description == "Budget for this stage (USD)"


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", -0.1), ("temperature", 2.5), ("max_tokens", 0), ("max_cost", -1.0)],
)
def test_ai_fields_are_range_checked(field: str, value: Any) -> None:
    model = with_ai_config(Mine)
    with pytest.raises(ValidationError) as err:
        model(**{"model": "mock:echo", field: value})
    assert err.value.errors()[0]["loc"] == (field,)


def test_ai_fields_accept_valid_values() -> None:
    config = with_ai_config(Mine)(
        model="openai:gpt-5-mini", temperature=0.0, max_tokens=256, max_cost=0.5
    )
    assert (config.model, config.temperature, config.max_tokens, config.max_cost) == (  # type: ignore[attr-defined]
        "openai:gpt-5-mini",
        0.0,
        256,
        0.5,
    )


def test_standard_concurrency_must_be_positive() -> None:
    with pytest.raises(ValidationError) as err:
        with_standard_config(Mine)(model="mock:echo", concurrency=0)
    assert err.value.errors()[0]["loc"] == ("concurrency",)


def test_feature_flags_default_is_fresh_per_instance() -> None:
    model = with_standard_config(Mine)
    first, second = model(model="mock:echo"), model(model="mock:echo")
    assert first.feature_flags == {}  # type: ignore[attr-defined]
    assert first.feature_flags is not second.feature_flags  # type: ignore[attr-defined]


def test_user_fields_win_over_preset_fields() -> None:
    class Tuned(BaseModel):
        model: str = "openai:gpt-5"
        temperature: float = Field(0.1, le=0.5)
        debug: int = 2

    ai = with_ai_config(Tuned)
    assert model_key_fields(ai) == ["model"]  # the user's own field is still a model key
    assert ai().model_dump() == {
        **AI_DEFAULTS,
        "model": "openai:gpt-5",
        "temperature": 0.1,
        "debug": 2,
    }
    with pytest.raises(ValidationError):
        ai(temperature=1.0)  # the user's le=0.5 applies, not the preset's le=2.0

    full = with_full_config(Tuned)
    assert full().debug == 2  # type: ignore[attr-defined]
    assert full.model_fields["debug"].annotation is int


def test_presets_work_as_stage_config_in_a_workflow() -> None:
    class Doc(BaseModel):
        text: str

    config = with_ai_config(Mine)
    summarize = define_stage(
        id="summarize", input=Doc, output=Doc, config=config, execute=lambda ctx: ctx.input
    )
    wf = WorkflowBuilder("wf", "Wf", input=Doc, output=Doc).pipe(summarize).build()

    assert wf.default_config() == {"summarize": {"custom_field": "x", **AI_DEFAULTS}}
    merged = wf.validate_config({"summarize": {"model": "mock:echo", "temperature": 0.2}})
    assert merged["summarize"]["temperature"] == 0.2
    assert merged["summarize"]["model"] == "mock:echo"


def test_preset_models_forbid_unknown_keys_unless_the_user_chose() -> None:
    from pydantic import ConfigDict

    with pytest.raises(ValidationError) as err:
        with_ai_config(Mine)(model="mock:echo", modle="x")
    assert err.value.errors()[0]["type"] == "extra_forbidden"

    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")

    assert with_ai_config(Open)(model="mock:echo", more=1).model_dump()["more"] == 1
