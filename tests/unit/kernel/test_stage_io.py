"""Earlier outputs reach a stage validated only when they are read."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, define_stage
from airflow_workflow_engine.definitions.stage import Stage
from airflow_workflow_engine.kernel import stage_io
from airflow_workflow_engine.kernel.commands import RunCreate
from airflow_workflow_engine.kernel.stage_io import EarlierOutputs
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing import create_test_kernel, run_to_completion


class N(BaseModel):
    n: int


def _plus_one(stage_id: str, seen: dict[str, Any] | None = None) -> Stage[Any, Any, Any]:
    def execute(ctx: Any) -> dict[str, int]:
        if seen is not None:
            seen[stage_id] = {k: ctx.require(k).n for k in ctx.workflow_context}
        return {"n": ctx.input.n + 1}

    return define_stage(id=stage_id, input=N, output=N, execute=execute)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    validated: list[str] = []
    real = stage_io.output_model

    def counted(stage: Any, value: Any) -> BaseModel:
        validated.append(stage.id)
        return real(stage, value)

    monkeypatch.setattr(stage_io, "output_model", counted)
    return validated


def test_outputs_are_validated_when_first_read_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    validated = _counting(monkeypatch)
    a, b = _plus_one("a"), _plus_one("b")
    outputs = EarlierOutputs({"a": (a, {"n": 1}), "b": (b, {"n": 2})})

    assert list(outputs) == ["a", "b"] and len(outputs) == 2
    assert "a" in outputs and "c" not in outputs
    assert validated == []
    first = outputs["b"]
    assert first == N(n=2) and outputs["b"] is first
    assert validated == ["b"]
    assert outputs.get("c") is None
    assert dict(outputs) == {"a": N(n=1), "b": N(n=2)}
    assert validated == ["b", "a"]


def test_an_invalid_stored_output_fails_when_read() -> None:
    outputs = EarlierOutputs({"a": (_plus_one("a"), {"n": "not a number"})})
    assert "a" in outputs
    with pytest.raises(ValueError, match="n"):
        outputs["a"]


def test_a_chain_validates_each_stored_output_once_per_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six stages in a row, each reading only its input: six validations of stored outputs
    (five stage inputs and the workflow output), where reading every earlier output for
    every stage took 15 + 6."""
    stage_ids = [f"s{i}" for i in range(6)]
    builder = WorkflowBuilder("chain", "Chain", None, input=N, output=N)
    for stage_id in stage_ids:
        builder = builder.pipe(_plus_one(stage_id))
    kit = create_test_kernel([builder.build()])
    validated = _counting(monkeypatch)

    created = kit.kernel.dispatch(RunCreate(workflow_id="chain", input={"n": 0}))
    run = run_to_completion(kit.kernel, kit.job_transport, created.workflow_run_id)

    assert run.status == Status.COMPLETED and run.output == {"n": 6}
    assert validated == ["s0", "s1", "s2", "s3", "s4", "s5"]


def test_a_stage_still_reads_every_earlier_output(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    builder = WorkflowBuilder("chain", "Chain", None, input=N, output=N)
    for stage_id in ("s0", "s1", "s2"):
        builder = builder.pipe(_plus_one(stage_id, seen))
    kit = create_test_kernel([builder.build()])

    created = kit.kernel.dispatch(RunCreate(workflow_id="chain", input={"n": 0}))
    run = run_to_completion(kit.kernel, kit.job_transport, created.workflow_run_id)

    assert run.status == Status.COMPLETED
    assert seen == {"s0": {}, "s1": {"s0": 1}, "s2": {"s0": 1, "s1": 2}}
