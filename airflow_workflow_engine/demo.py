"""The demo: the example document pipeline driven to completion by the kernel, in-process.

``python -m airflow_workflow_engine.demo`` (the README's first command) prints each stage, its
output, the run's result and its AI cost table (from the ledger). Everything is in memory and
offline: the model calls go to the deterministic ``mock`` provider.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from airflow_workflow_engine.ai.ledger import InMemoryLedger
from airflow_workflow_engine.ai.prices import register_model
from airflow_workflow_engine.ai.report import cost_table
from airflow_workflow_engine.examples.document_pipeline import EXAMPLE_INPUT, document_pipeline
from airflow_workflow_engine.kernel.commands import OutboxFlush, RunCreate
from airflow_workflow_engine.testing import create_test_kernel, run_to_completion

#: Illustrative prices (USD per million tokens) for the example's mock models: mock calls are
#: free unless a price is registered, and a cost table of zeros would show nothing.
DEMO_PRICES = {
    "mock:summarizer": (0.25, 2.0),
    "mock:classifier": (0.10, 0.40),
}


def _short(value: Any, width: int = 96) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", help="workflow input as JSON (default: an example document)")
    args = parser.parse_args(argv)
    run_input = json.loads(args.input) if args.input else EXAMPLE_INPUT

    def progress(run_id: str, stage_id: str, update: Any) -> None:
        print(f"  .. {stage_id}: {update.fraction:.0%} {update.message or ''}")

    for key, (input_price, output_price) in DEMO_PRICES.items():
        register_model(key, input_per_mtok=input_price, output_per_mtok=output_price)
    ledger = InMemoryLedger()
    kit = create_test_kernel([document_pipeline], ledger=ledger, on_progress=progress)
    wf = document_pipeline
    print(f"Workflow {wf.id!r}: {wf!r}")
    created = kit.kernel.dispatch(RunCreate(workflow_id=wf.id, input=run_input))
    run_id = created.workflow_run_id
    print(f"Run {run_id} created (PENDING); driving it with the in-process kernel...")
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)

    print("\nStages:")
    for rec in kit.persistence.list_stages(run_id):
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
    return 0 if run.status.value == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
