"""The in-process demo (``python -m airflow_workflow_engine.demo --in-process``) runs the example
pipeline to completion; the Airflow demo is tested in
``tests/integration/airflow/test_airflow_examples.py``."""

from __future__ import annotations

import subprocess
from pathlib import Path

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


def test_demo_prints_the_environment_that_points_the_cli_at_it(tmp_path: Path) -> None:
    """The ``export`` lines, sourced by bash, give the CLI the demo's home, databases and
    DAGs, exactly as the demo's Airflow processes have them."""
    from airflow_workflow_engine.demo_airflow import CLI_VARIABLES, cli_exports
    from airflow_workflow_engine.testing.cluster import EmbeddedAirflow

    airflow = EmbeddedAirflow.prepare(tmp_path / "home with space", tmp_path / "dags", port=0)
    lines = cli_exports(airflow.env, bin_dir=tmp_path / "bin")
    assert all(line.startswith("export ") for line in lines)
    script = "\n".join([*lines, "env -0 | grep -z -E '^(PATH|AIRFLOW)'"])
    done = subprocess.run(
        ["bash", "-c", script], env={"PATH": "/usr/bin:/bin"}, capture_output=True, check=True
    )
    seen = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if item)
    assert seen["PATH"].startswith(f"{tmp_path / 'bin'}:")
    expected = {k: airflow.env[k] for k in CLI_VARIABLES if k in airflow.env}
    assert {k: v for k, v in seen.items() if k != "PATH"} == expected
    assert expected["AIRFLOW_HOME"] == str(airflow.home)
    assert "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN" in expected
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in expected
