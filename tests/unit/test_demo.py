"""The README's demo command runs the example pipeline to completion."""

from __future__ import annotations

import pytest

from airflow_workflow_engine import demo


def test_demo_completes_and_prints_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    for stage_id in ("extract", "summarize", "classify", "embed", "publish"):
        assert stage_id in out
    assert "Run COMPLETED" in out
    assert '"category": "engineering"' in out


def test_demo_rejects_bad_input_with_field_name() -> None:
    from airflow_workflow_engine.errors import InputValidationError

    with pytest.raises(InputValidationError, match="text: Field required"):
        demo.main(["--input", '{"title": "x"}'])
