"""Stage-id helpers: create/define_stage_ids, is_valid_stage_id, assert_valid_stage_id."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine import (
    Workflow,
    WorkflowBuilder,
    assert_valid_stage_id,
    create_stage_ids,
    define_stage,
    define_stage_ids,
    is_valid_stage_id,
)
from airflow_workflow_engine.definitions.ids import (
    STAGE_ID_PATTERN,
    StageIds,
    constant_name,
    is_well_formed_stage_id,
)
from airflow_workflow_engine.errors import StageNotFoundError


class Doc(BaseModel):
    text: str


def _stage(stage_id: str) -> Any:
    return define_stage(id=stage_id, input=Doc, output=Doc, execute=lambda ctx: ctx.input)


@pytest.fixture
def workflow() -> Workflow:
    return (
        WorkflowBuilder("docs", "Docs", input=Doc, output=Doc)
        .pipe(_stage("extract-text"))
        .parallel([_stage("summarize"), _stage("load_data")])
        .build()
    )


def test_create_stage_ids_makes_constants(workflow: Workflow) -> None:
    ids = create_stage_ids(workflow)
    assert ids.EXTRACT_TEXT == "extract-text"
    assert ids.SUMMARIZE == "summarize"
    assert ids.LOAD_DATA == "load_data"


def test_stage_ids_iterate_in_plan_order_and_support_in_and_len(workflow: Workflow) -> None:
    ids = create_stage_ids(workflow)
    assert list(ids) == ["extract-text", "summarize", "load_data"]
    assert "summarize" in ids
    assert "SUMMARIZE" not in ids
    assert len(ids) == 3
    assert repr(ids) == "StageIds(['extract-text', 'summarize', 'load_data'])"


def test_unknown_constant_names_the_known_ids(workflow: Workflow) -> None:
    ids = create_stage_ids(workflow)
    with pytest.raises(AttributeError) as err:
        _ = ids.SUMMARISE
    assert str(err.value) == (
        "No stage id constant 'SUMMARISE'; known: extract-text, summarize, load_data"
    )


def test_define_stage_ids_declares_constants_up_front() -> None:
    ids = define_stage_ids(["extract-text", "summarize"])
    assert (ids.EXTRACT_TEXT, ids.SUMMARIZE) == ("extract-text", "summarize")
    assert isinstance(ids, StageIds)
    assert list(define_stage_ids(s for s in ("a", "b"))) == ["a", "b"]


def test_define_stage_ids_rejects_invalid_ids() -> None:
    with pytest.raises(ValueError) as err:
        define_stage_ids(["ok", "1bad", "has space"])
    assert str(err.value) == (
        f"Invalid stage ids ['1bad', 'has space']: must match {STAGE_ID_PATTERN.pattern}"
    )


def test_defined_ids_match_the_built_workflow(workflow: Workflow) -> None:
    declared = define_stage_ids(["extract-text", "summarize", "load_data"])
    assert list(declared) == list(create_stage_ids(workflow))


def test_is_valid_stage_id(workflow: Workflow) -> None:
    assert is_valid_stage_id(workflow, "extract-text") is True
    assert is_valid_stage_id(workflow, "EXTRACT_TEXT") is False
    assert is_valid_stage_id(workflow, "nope") is False


def test_assert_valid_stage_id(workflow: Workflow) -> None:
    assert_valid_stage_id(workflow, "summarize")  # no error
    with pytest.raises(StageNotFoundError) as err:
        assert_valid_stage_id(workflow, "summarise")
    assert str(err.value) == (
        "Stage 'summarise' is not part of workflow 'docs'. "
        "Known stages: extract-text, summarize, load_data."
    )
    assert (err.value.workflow_id, err.value.stage_id) == ("docs", "summarise")
    assert err.value.retryable is False


def test_stage_not_found_without_known_stages_has_no_hint() -> None:
    assert str(StageNotFoundError("wf", "x")) == "Stage 'x' is not part of workflow 'wf'."


@pytest.mark.parametrize(
    ("stage_id", "ok"),
    [
        ("a", True),
        ("extract-text", True),
        ("load_data", True),
        ("A1-b_2", True),
        ("a" * 100, True),
        ("a" * 101, False),
        ("", False),
        ("1a", False),
        ("-a", False),
        ("a b", False),
        ("a.b", False),
    ],
)
def test_is_well_formed_stage_id(stage_id: str, ok: bool) -> None:
    assert is_well_formed_stage_id(stage_id) is ok


def test_constant_name() -> None:
    assert constant_name("extract-text") == "EXTRACT_TEXT"
    assert constant_name("load_data") == "LOAD_DATA"


@pytest.mark.parametrize(
    "clone",
    [copy.copy, copy.deepcopy, lambda ids: pickle.loads(pickle.dumps(ids))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_stage_ids_can_be_copied_and_pickled(clone: Any) -> None:
    ids = define_stage_ids(["extract-text"])
    cloned = clone(ids)
    assert cloned.EXTRACT_TEXT == "extract-text"
    assert list(cloned) == ["extract-text"]
