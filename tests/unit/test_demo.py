"""The in-process demo (``python -m airflow_workflow_engine.demo --in-process``) runs the example
pipeline to completion; the Airflow demo is tested in
``tests/integration/airflow/test_airflow_examples.py``."""

from __future__ import annotations

import pytest

from airflow_workflow_engine import demo


def test_demo_completes_and_prints_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--in-process"]) == 0
    out = capsys.readouterr().out
    for stage_id in ("extract", "summarize", "classify", "embed", "publish"):
        assert stage_id in out
    assert "Run COMPLETED" in out
    assert '"category": "engineering"' in out


def test_demo_prints_the_runs_cost_table_from_the_ledger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert demo.main(["--in-process"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("AI cost of the run"))) + 1 :]
    # Mock tokens are words; prices are the demo's: summarizer $0.25/$2, classifier $0.10/$0.40,
    # embedder $0.05/$0.20 per million tokens. summarize: 35 * 0.25 + 12 * 2 = 32.75; classify:
    # 36 * 0.1 + 16 * 0.4 = 10; embed (one batch of two requests): 21 * 0.05 + 18 * 0.2 = 4.65
    # (micro-dollars).
    assert table[:8] == [
        "stage      model            calls  in tokens  out tokens       cost",
        "---------  ---------------  -----  ---------  ----------  ---------",
        "classify   mock:classifier      1         36          16  $0.000010",
        "embed      mock:embedder        2         21          18  $0.000005",
        "summarize  mock:summarizer      1         35          12  $0.000033",
        "---------  ---------------  -----  ---------  ----------  ---------",
        "total                           4         92          46  $0.000047",
        "Run totals: $0.000047, 138 tokens",
    ]


def test_demo_rejects_bad_input_with_field_name() -> None:
    from airflow_workflow_engine.errors import InputValidationError

    with pytest.raises(InputValidationError, match="text: Field required"):
        demo.main(["--in-process", "--input", '{"title": "x"}'])


def test_example_workflow_does_not_import_the_demo() -> None:
    """The example is plain workflow definitions; the demo imports it, never the reverse."""
    import subprocess
    import sys

    code = (
        "import sys, airflow_workflow_engine.examples.document_pipeline as example; "
        "assert example.DEMO_PRICES; "
        "print(sorted(m for m in sys.modules if m.startswith('airflow_workflow_engine.demo')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
