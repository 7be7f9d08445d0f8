"""WorkflowBuilder and Workflow: groups, plan, config defaults and validation, build errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from airflow_workflow_engine import EmptyConfig, Stage, Workflow, WorkflowBuilder, define_stage
from airflow_workflow_engine.errors import (
    ConfigValidationError,
    InputValidationError,
    StageNotFoundError,
    WorkflowDefinitionError,
)


class Doc(BaseModel):
    text: str


class Cleaned(BaseModel):
    text: str


class Count(BaseModel):
    n: int


class Report(BaseModel):
    line: str


class CleanConfig(BaseModel):
    lower: bool = True
    max_chars: int = Field(100, ge=1)


class ReportConfig(BaseModel):
    title: str  # required: no default
    tags: list[str] = Field(default_factory=list)
    max_lines: int = Field(10, alias="max-lines")


def _identity(ctx: Any) -> Any:
    return ctx.input


def _stage(stage_id: str, **kwargs: Any) -> Stage[Any, Any, Any]:
    kwargs.setdefault("input", Doc)
    kwargs.setdefault("output", Doc)
    return define_stage(id=stage_id, execute=_identity, **kwargs)


clean = _stage("clean", output=Cleaned, config=CleanConfig)
words = _stage("words", input=Cleaned, output=Count)
chars = _stage("chars", input=Cleaned, output=Count)
report = _stage("report", input=None, output=Report, config=ReportConfig, dependencies=["words"])


def _builder(**kwargs: Any) -> WorkflowBuilder:
    kwargs.setdefault("input", Doc)
    kwargs.setdefault("output", Report)
    return WorkflowBuilder("doc-stats", "Document stats", "Counts things", **kwargs)


@pytest.fixture
def workflow() -> Workflow:
    return _builder().pipe(clean).parallel([words, chars]).pipe(report).build()


# -- shape ------------------------------------------------------------------------------------


def test_builder_methods_chain() -> None:
    builder = _builder()
    assert builder.pipe(clean) is builder
    assert builder.parallel([words, chars]) is builder


def test_pipe_and_parallel_make_groups(workflow: Workflow) -> None:
    plan = workflow.execution_plan()
    assert [[s.id for s in group] for group in plan] == [["clean"], ["words", "chars"], ["report"]]
    assert plan[1][0] is words
    assert workflow.group_count == 3
    assert workflow.group(1) == (words, chars)
    assert [workflow.group_of(s) for s in ("clean", "words", "chars", "report")] == [0, 1, 1, 2]


def test_execution_plan_is_a_copy(workflow: Workflow) -> None:
    workflow.execution_plan()[0].append(report)
    assert [s.id for s in workflow.execution_plan()[0]] == ["clean"]


def test_stage_ids_in_plan_order(workflow: Workflow) -> None:
    assert workflow.stage_ids() == ["clean", "words", "chars", "report"]
    assert [s.id for s in workflow.stages()] == workflow.stage_ids()


def test_workflow_attributes_and_repr(workflow: Workflow) -> None:
    assert (workflow.id, workflow.name, workflow.description) == (
        "doc-stats",
        "Document stats",
        "Counts things",
    )
    assert (workflow.input, workflow.output) == (Doc, Report)
    assert repr(workflow) == "Workflow('doc-stats': [clean] -> [words, chars] -> [report])"


def test_parallel_accepts_any_iterable() -> None:
    wf = _builder().pipe(clean).parallel(s for s in (words, chars)).build()
    assert wf.stage_ids() == ["clean", "words", "chars"]


def test_get_stage(workflow: Workflow) -> None:
    assert workflow.get_stage("words") is words
    with pytest.raises(StageNotFoundError) as err:
        workflow.get_stage("nope")
    assert str(err.value) == (
        "Stage 'nope' is not part of workflow 'doc-stats'. "
        "Known stages: clean, words, chars, report."
    )
    with pytest.raises(StageNotFoundError, match="Stage 'nope' is not part of workflow"):
        workflow.group_of("nope")


def test_workflow_id_may_contain_dots() -> None:
    assert _builder().pipe(clean).build().id == "doc-stats"
    assert WorkflowBuilder("team.docs", "T", input=Doc, output=Doc).pipe(clean).build().id == (
        "team.docs"
    )


# -- input ------------------------------------------------------------------------------------


def test_validate_input(workflow: Workflow) -> None:
    assert workflow.validate_input({"text": "hi"}) == Doc(text="hi")
    assert workflow.validate_input(Doc(text="hi")) == Doc(text="hi")


def test_validate_input_names_the_field(workflow: Workflow) -> None:
    with pytest.raises(InputValidationError) as err:
        workflow.validate_input({"text": 3})
    assert str(err.value).startswith("Invalid input for workflow 'doc-stats': text: ")
    assert err.value.fields == ["text"]


# -- config -----------------------------------------------------------------------------------


def test_default_config(workflow: Workflow) -> None:
    assert workflow.default_config() == {
        "clean": {"lower": True, "max_chars": 100},
        "words": {},
        "chars": {},
        # 'title' is required, so it has no default; aliases are used as keys
        "report": {"tags": [], "max-lines": 10},
    }


def test_default_config_calls_default_factories_each_time(workflow: Workflow) -> None:
    first, second = workflow.default_config(), workflow.default_config()
    assert first["report"]["tags"] is not second["report"]["tags"]


def test_validate_config_merges_with_defaults(workflow: Workflow) -> None:
    merged = workflow.validate_config(
        {"clean": {"max_chars": 7}, "report": {"title": "T", "max-lines": 2}}
    )
    assert merged == {
        "clean": {"lower": True, "max_chars": 7},
        "words": {},
        "chars": {},
        "report": {"title": "T", "tags": [], "max-lines": 2},
    }


def test_validate_config_accepts_model_instances(workflow: Workflow) -> None:
    merged = workflow.validate_config(
        {"clean": CleanConfig(lower=False), "report": ReportConfig(title="T")}
    )
    assert merged["clean"] == {"lower": False, "max_chars": 100}
    assert merged["report"]["title"] == "T"


def test_validate_config_without_required_fields() -> None:
    wf = _builder().pipe(clean).build()
    assert wf.validate_config() == {"clean": {"lower": True, "max_chars": 100}}
    assert wf.validate_config(None) == wf.validate_config({})


class NestedConfig(BaseModel):
    tags: list[str] = Field(default_factory=lambda: ["a"])
    limits: dict[str, list[int]] = Field(default_factory=lambda: {"x": [1, 2]})
    model: str = Field("openai:gpt-5-mini", json_schema_extra={"x-model-key": True})


def test_validate_config_defaults_are_a_new_copy_each_time() -> None:
    # A stage given no config gets its validated defaults from a per-workflow cache: each
    # run still gets its own dicts and lists.
    wf = _builder().pipe(_stage("clean", config=NestedConfig)).build()
    expected = {"clean": {"tags": ["a"], "limits": {"x": [1, 2]}, "model": "openai:gpt-5-mini"}}
    first = wf.validate_config()
    assert first == expected
    first["clean"]["tags"].append("changed")
    first["clean"]["limits"]["x"].append(3)
    first["clean"]["extra"] = True
    second = wf.validate_config({"clean": {}})
    assert second == expected
    assert second["clean"]["limits"] is not first["clean"]["limits"]
    assert wf.validate_config({"clean": {"tags": []}})["clean"]["tags"] == []


def test_validate_config_default_cache_checks_model_keys_per_provider_set() -> None:
    wf = _builder().pipe(_stage("clean", config=NestedConfig)).build()
    assert wf.validate_config(model_providers=["openai"])["clean"]["model"] == "openai:gpt-5-mini"
    with pytest.raises(ConfigValidationError, match=r"clean\.model"):
        wf.validate_config(model_providers=["mock"])
    with pytest.raises(ConfigValidationError, match=r"clean\.model"):
        wf.validate_config(model_providers=["mock"])  # refused again, not served from a cache
    assert wf.validate_config(model_providers=["openai", "mock"])["clean"]["tags"] == ["a"]
    assert wf.validate_config()["clean"]["model"] == "openai:gpt-5-mini"  # not checked


def test_validate_config_missing_required_field(workflow: Workflow) -> None:
    with pytest.raises(ConfigValidationError) as err:
        workflow.validate_config({})
    assert str(err.value) == (
        "Invalid config for stage 'report' of workflow 'doc-stats': report.title: Field required"
    )
    assert err.value.fields == ["report.title"]


def test_validate_config_unknown_stage(workflow: Workflow) -> None:
    with pytest.raises(ConfigValidationError) as err:
        workflow.validate_config({"report": {"title": "T"}, "summarise": {}, "x": {}})
    assert str(err.value) == (
        "Invalid config for workflow 'doc-stats': unknown stage(s) 'summarise', 'x'; "
        "stages are clean, words, chars, report."
    )
    assert err.value.fields == ["summarise", "x"]
    assert err.value.errors[0] == {"field": "summarise", "message": "not a stage of this workflow"}


def test_validate_config_wrong_field_type_names_stage_and_field(workflow: Workflow) -> None:
    with pytest.raises(ConfigValidationError) as err:
        workflow.validate_config({"clean": {"max_chars": "many"}, "report": {"title": "T"}})
    message = str(err.value)
    assert message.startswith(
        "Invalid config for stage 'clean' of workflow 'doc-stats': clean.max_chars: "
    )
    assert "valid integer" in message
    assert err.value.fields == ["clean.max_chars"]


def test_validate_config_constraint_violation(workflow: Workflow) -> None:
    with pytest.raises(ConfigValidationError) as err:
        workflow.validate_config({"clean": {"max_chars": 0}, "report": {"title": "T"}})
    assert err.value.fields == ["clean.max_chars"]
    assert "greater than or equal to 1" in str(err.value)


def test_validate_config_nested_field_path(workflow: Workflow) -> None:
    with pytest.raises(ConfigValidationError) as err:
        workflow.validate_config({"report": {"title": "T", "tags": ["ok", 5]}})
    assert err.value.fields == ["report.tags.1"]


def test_validate_config_extra_field_for_a_stage_without_config(workflow: Workflow) -> None:
    with pytest.raises(ConfigValidationError) as err:
        workflow.validate_config({"words": {"verbose": True}, "report": {"title": "T"}})
    assert err.value.fields == ["words.verbose"]
    assert str(err.value) == (
        "unknown key 'verbose' in config of stage 'words'; there are no valid keys"
    )


def test_validate_config_stage_part_must_be_an_object(workflow: Workflow) -> None:
    with pytest.raises(ConfigValidationError) as err:
        workflow.validate_config({"clean": 3, "report": {"title": "T"}})
    assert str(err.value) == "Invalid config for stage 'clean': expected an object, got int."
    assert err.value.fields == ["clean"]


def test_config_errors_are_not_retryable() -> None:
    assert ConfigValidationError.retryable is False


def test_stage_config_returns_the_typed_model(workflow: Workflow) -> None:
    config = workflow.validate_config({"report": {"title": "T"}})
    assert workflow.stage_config("clean", config) == CleanConfig()
    assert workflow.stage_config("words", config) == EmptyConfig()
    typed = workflow.stage_config("report", config)
    assert isinstance(typed, ReportConfig)
    assert typed.max_lines == 10


# -- build errors -----------------------------------------------------------------------------


def test_build_rejects_an_empty_workflow() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder().build()
    assert str(err.value) == (
        "Workflow 'doc-stats' has no stages: add at least one with .pipe() or .parallel()."
    )


def test_parallel_needs_stages() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder().parallel([])
    assert str(err.value) == "Workflow 'doc-stats': parallel() needs stages."


def test_build_rejects_duplicate_stage_ids_across_groups() -> None:
    other_clean = _stage("clean")
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder().pipe(clean).pipe(words).pipe(other_clean).build()
    assert str(err.value) == (
        "Workflow 'doc-stats': duplicate stage id 'clean' (groups 0 and 2); "
        "stage ids must be unique within a workflow."
    )


def test_build_rejects_the_same_stage_twice() -> None:
    with pytest.raises(WorkflowDefinitionError, match="duplicate stage id 'clean'"):
        _builder().pipe(clean).pipe(clean).build()


def test_build_rejects_duplicate_stage_ids_in_one_parallel_group() -> None:
    twin = _stage("words", input=Cleaned, output=Count)
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder().pipe(clean).parallel([words, twin]).build()
    assert str(err.value) == (
        "Workflow 'doc-stats': duplicate stage id 'words' (groups 1 and 1); "
        "stage ids must be unique within a workflow."
    )
    with pytest.raises(WorkflowDefinitionError, match="duplicate stage id 'clean'"):
        _builder().parallel([clean, clean]).build()


def test_build_rejects_a_dependency_in_the_same_parallel_group() -> None:
    needs_words = _stage("needs-words", input=Cleaned, output=Count, dependencies=["words"])
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder().pipe(clean).parallel([words, needs_words]).build()
    assert str(err.value) == (
        "Workflow 'doc-stats': stage 'needs-words' depends on 'words', "
        "which runs in the same parallel group."
    )


def test_build_rejects_a_dependency_in_a_later_group() -> None:
    early = _stage("early", dependencies=["clean"])
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder().pipe(early).pipe(clean).build()
    assert str(err.value) == (
        "Workflow 'doc-stats': stage 'early' depends on 'clean', which is not in an earlier group."
    )


def test_build_rejects_a_dependency_not_in_the_workflow() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder().pipe(clean).pipe(report).build()
    assert str(err.value) == (
        "Workflow 'doc-stats': stage 'report' depends on 'words', "
        "which is not part of the workflow."
    )


def test_build_accepts_dependencies_on_any_earlier_group() -> None:
    late = _stage("late", input=None, dependencies=["clean", "words", "chars"])
    wf = _builder().pipe(clean).parallel([words, chars]).pipe(report).pipe(late).build()
    assert wf.get_stage("late").dependencies == ("clean", "words", "chars")


def test_builder_requires_input_and_output_models() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        WorkflowBuilder("doc-stats", "Doc", input=Doc)
    assert str(err.value) == (
        "Workflow 'doc-stats': input= and output= pydantic model classes are required."
    )
    with pytest.raises(WorkflowDefinitionError, match="input= and output="):
        WorkflowBuilder("doc-stats", "Doc", output=Doc)


@pytest.mark.parametrize("role", ["input", "output"])
@pytest.mark.parametrize("bad_model", [dict, str, Doc(text="an instance")])
def test_build_rejects_invalid_workflow_models(role: str, bad_model: Any) -> None:
    kwargs: dict[str, Any] = {"input": Doc, "output": Report, role: bad_model}
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder(**kwargs).pipe(clean).build()
    assert str(err.value) == (
        f"Workflow 'doc-stats': {role} must be a pydantic model class, got {bad_model!r}."
    )


@pytest.mark.parametrize("bad_id", ["", "has space", "1st", "a/b", 7])
def test_build_rejects_invalid_workflow_ids(bad_id: Any) -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        WorkflowBuilder(bad_id, "W", input=Doc, output=Doc).pipe(clean).build()
    assert str(err.value) == f"Invalid workflow id {bad_id!r}."


def test_build_rejects_something_that_is_not_a_stage() -> None:
    with pytest.raises(WorkflowDefinitionError) as err:
        _builder().pipe(clean).parallel([words, "chars"]).build()  # type: ignore[list-item]
    assert str(err.value) == "Workflow 'doc-stats': group 1 contains 'chars', not a Stage."


# -- unknown keys, model keys, every invalid stage (issue 9, item 8) ---------------------------


def _ai_workflow() -> Workflow:
    from airflow_workflow_engine import with_ai_config

    class Options(BaseModel):  # a user's own model: extra keys not forbidden by the model
        max_words: int = 50

    summarize = _stage("summarize", config=with_ai_config(Options))
    classify = _stage("classify", config=with_ai_config(BaseModel), dependencies=["summarize"])
    return _builder(output=Doc).pipe(summarize).pipe(classify).build()


def test_unknown_config_key_is_refused_naming_the_closest_key() -> None:
    wf = _ai_workflow()
    with pytest.raises(ConfigValidationError) as err:
        wf.validate_config(
            {"summarize": {"modle": "mock:echo"}, "classify": {"model": "mock:echo"}}
        )
    assert str(err.value).startswith(
        "unknown key 'modle' in config of stage 'summarize'; did you mean 'model'?"
    )
    # The typo also leaves the required model unset: both are named.
    assert err.value.fields == ["summarize.modle", "summarize.model"]


def test_unknown_config_key_without_a_close_match_lists_the_valid_keys(
    workflow: Workflow,
) -> None:
    with pytest.raises(ConfigValidationError) as err:
        workflow.validate_config({"clean": {"zzz": 1}, "report": {"title": "T"}})
    assert str(err.value) == (
        "unknown key 'zzz' in config of stage 'clean'; valid keys are lower, max_chars"
    )
    assert err.value.fields == ["clean.zzz"]


def test_unknown_key_in_a_nested_config_model_is_refused() -> None:
    class Retry(BaseModel):
        attempts: int = 3

    class Nested(BaseModel):
        retry: Retry = Field(default_factory=Retry)

    st = _stage("fetch", config=Nested)
    wf = _builder(output=Doc).pipe(st).build()
    with pytest.raises(ConfigValidationError) as err:
        wf.validate_config({"fetch": {"retry": {"atempts": 5}}})
    assert str(err.value) == (
        "unknown key 'retry.atempts' in config of stage 'fetch'; did you mean 'retry.attempts'?"
    )


def test_config_models_that_allow_or_ignore_extras_explicitly_keep_them() -> None:
    from pydantic import ConfigDict

    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")

    class Lax(BaseModel):
        model_config = ConfigDict(extra="ignore")

    wf = _builder(output=Doc).pipe(_stage("a", config=Open)).pipe(_stage("b", config=Lax)).build()
    merged = wf.validate_config({"a": {"anything": 1}, "b": {"dropped": 2}})
    assert merged == {"a": {"anything": 1}, "b": {}}


def test_config_alias_and_field_name_are_both_known_keys(workflow: Workflow) -> None:
    merged = workflow.validate_config({"report": {"title": "T", "max-lines": 3}})
    assert merged["report"]["max-lines"] == 3


def test_validate_config_reports_every_invalid_stage() -> None:
    wf = _ai_workflow()
    with pytest.raises(ConfigValidationError) as err:
        wf.validate_config({"summarize": {"model": "mock:echo", "max_wrds": 3}, "classify": {}})
    message = str(err.value)
    assert message.startswith("Invalid config in 2 stages of workflow 'doc-stats':\n- ")
    assert (
        "- unknown key 'max_wrds' in config of stage 'summarize'; did you mean 'max_words'?"
        in message
    )
    assert (
        "- Invalid config for stage 'classify' of workflow 'doc-stats': classify.model: "
        "Field required" in message
    )
    assert err.value.fields == ["summarize.max_wrds", "classify.model"]


def test_missing_model_of_with_ai_config_names_stage_and_field() -> None:
    wf = _ai_workflow()
    with pytest.raises(ConfigValidationError) as err:
        wf.validate_config({"summarize": {"model": "mock:echo"}})
    assert str(err.value) == (
        "Invalid config for stage 'classify' of workflow 'doc-stats': classify.model: "
        "Field required"
    )


def test_model_key_with_an_unknown_provider_is_refused() -> None:
    wf = _ai_workflow()
    config = {"summarize": {"model": "opnai:gpt-4o"}, "classify": {"model": "gpt-4o"}}
    assert wf.validate_config(config)["summarize"]["model"] == "opnai:gpt-4o"  # no providers
    with pytest.raises(ConfigValidationError) as err:
        wf.validate_config(config, model_providers=["google", "mock", "openai"])
    message = str(err.value)
    assert (
        "Invalid config for stage 'summarize' of workflow 'doc-stats': summarize.model: "
        "unknown provider 'opnai' in model key 'opnai:gpt-4o'; known providers: google, mock, "
        "openai; did you mean 'openai:gpt-4o'?" in message
    )
    assert "classify.model: model key 'gpt-4o' must look like '<provider>:<model>'" in message
    assert err.value.fields == ["summarize.model", "classify.model"]
    ok = {"summarize": {"model": "openai:gpt-4o"}, "classify": {"model": "mock:echo"}}
    assert wf.validate_config(ok, model_providers=["mock", "openai"])


def test_input_with_a_field_the_model_does_not_have_is_refused(workflow: Workflow) -> None:
    with pytest.raises(InputValidationError) as err:
        workflow.validate_input({"text": "t", "txet": "oops"})
    assert str(err.value) == (
        "unknown key 'txet' in input for workflow 'doc-stats'; did you mean 'text'?"
    )
    assert err.value.fields == ["txet"]


def test_input_model_that_allows_extras_explicitly_keeps_them() -> None:
    from pydantic import ConfigDict

    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        text: str

    wf = _builder(input=Loose, output=Doc).pipe(_stage("a", input=Loose)).build()
    assert wf.validate_input({"text": "t", "more": 1}).model_dump() == {"text": "t", "more": 1}
