"""The demo: the example document pipeline, run to completion, offline.

``python -m airflow_workflow_engine.demo`` (what ``bash scripts/demo.sh`` runs) starts a real
embedded Airflow on SQLite, triggers the example ``document_pipeline`` DAG with a conf and
prints each stage, the output and the AI cost table: see
:mod:`airflow_workflow_engine.demo_airflow`.

``python -m airflow_workflow_engine.demo --in-process`` runs the same workflow without
Airflow: the kernel drives it in memory, in this process.

Either way the model calls go to the deterministic ``mock`` provider: no API key, no network.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# The prices belong to the example (its module registers them in every process that runs a
# stage); re-exported here, where they used to live.
from airflow_workflow_engine.examples.document_pipeline import (
    DEMO_PRICES,
    register_demo_prices,
)
from airflow_workflow_engine.kernel.status import Status

__all__ = ["DEMO_PRICES", "build_parser", "main", "register_demo_prices", "run_in_process"]


def _short(value: Any, width: int = 96) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= width else text[: width - 3] + "..."


def run_in_process(run_input: dict[str, Any]) -> int:
    """The workflow driven by the in-memory kernel; prints stages, output and costs."""
    from airflow_workflow_engine.ai.ledger import InMemoryLedger
    from airflow_workflow_engine.ai.report import cost_table
    from airflow_workflow_engine.examples.document_pipeline import document_pipeline
    from airflow_workflow_engine.kernel.commands import OutboxFlush, RunCreate
    from airflow_workflow_engine.testing import create_test_kernel, run_to_completion

    def progress(run_id: str, stage_id: str, update: Any) -> None:
        print(f"  .. {stage_id}: {update.fraction:.0%} {update.message or ''}")

    register_demo_prices()
    ledger = InMemoryLedger()
    kit = create_test_kernel([document_pipeline], ledger=ledger, on_progress=progress)
    wf = document_pipeline
    print(f"Workflow {wf.id!r}: {wf!r}")
    created = kit.kernel.dispatch(RunCreate(workflow_id=wf.id, input=run_input))
    run_id = created.workflow_run_id
    print(f"Run {run_id} created (PENDING); driving it with the in-process kernel...")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)

    print("\nStages:")
    for rec in kit.kernel.list_stages(run_id):
        print(
            f"  [{rec.execution_group + 1}] {rec.stage_id:<10} {rec.status.value:<10} "
            f"attempt {rec.attempt}  output={_short(rec.output)}"
        )
    annotations = kit.kernel.annotations.list(run_id)
    if annotations:
        print("\nAnnotations:")
        for a in annotations:
            print(f"  {a.key} = {a.value!r}  (by {a.actor.kind}:{a.actor.id}, stage {a.stage_id})")
    flushed = kit.kernel.dispatch(OutboxFlush(max_events=1000))
    print(
        f"\nEvents published: {flushed.published} "
        f"({', '.join(sorted(set(kit.events.types(run_id))))})"
    )
    print("\nAI cost of the run (from the ledger; illustrative prices for the mock models):")
    print(cost_table(ledger, run_id))
    print(f"Run totals: ${run.total_cost:.6f}, {run.total_tokens} tokens")
    print(f"\nRun {run.status.value}" + (f": {run.error_message}" if run.error_message else ""))
    print(json.dumps(run.output, indent=2))
    return 0 if run.status is Status.COMPLETED else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_workflow_engine.demo",
        description="Runs the example document pipeline offline (mock models) on an embedded "
        "Airflow, or with --in-process on the in-memory kernel.",
    )
    parser.add_argument("--input", help="workflow input as JSON (default: an example document)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run on the in-memory kernel, without Airflow (the pre-Airflow demo)",
    )
    from airflow_workflow_engine.demo_airflow import add_arguments

    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.in_process:
        from airflow_workflow_engine.examples.document_pipeline import EXAMPLE_INPUT

        return run_in_process(json.loads(args.input) if args.input else dict(EXAMPLE_INPUT))
    from airflow_workflow_engine.demo_airflow import run_demo

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
