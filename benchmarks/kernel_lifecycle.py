"""Runs per second of a 5-stage workflow (one parallel group) driven to completion in memory.

    .venv/bin/python benchmarks/kernel_lifecycle.py [--runs 500]

Measures the kernel's own overhead: commands, validation, events, in-memory persistence.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, define_stage
from airflow_workflow_engine.kernel.commands import RunCreate
from airflow_workflow_engine.testing import create_test_kernel, run_to_completion


class Doc(BaseModel):
    text: str


class Part(BaseModel):
    value: str


class Pair(BaseModel):
    left: Part
    right: Part


def _build() -> object:
    first = define_stage(id="first", input=Doc, output=Doc, execute=lambda c: c.input)
    left = define_stage(
        id="left", input=Doc, output=Part, execute=lambda c: {"value": c.input.text}
    )
    right = define_stage(
        id="right", input=Doc, output=Part, execute=lambda c: {"value": c.input.text[::-1]}
    )
    join = define_stage(id="join", input=Pair, output=Part, execute=lambda c: c.input.left)
    last = define_stage(id="last", input=Part, output=Part, execute=lambda c: c.input)
    return (
        WorkflowBuilder("bench", "Bench", None, input=Doc, output=Part)
        .pipe(first)
        .parallel([left, right])
        .pipe(join)
        .pipe(last)
        .build()
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    workflow = _build()
    kit = create_test_kernel([workflow])  # type: ignore[list-item]
    tracemalloc.start()
    start = time.perf_counter()
    for i in range(args.runs):
        result = kit.kernel.dispatch(RunCreate(workflow_id="bench", input={"text": f"doc {i}"}))
        run = run_to_completion(kit.kernel, kit.job_transport, result.workflow_run_id)
        assert run.status.value == "COMPLETED", run.error_message
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(f"machine: {machine}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"runs: {args.runs} x 5 stages (1 parallel group), in-memory adapters")
    print(f"elapsed: {elapsed:.2f} s")
    print(f"runs/s: {args.runs / elapsed:.1f}")
    print(f"stages/s: {5 * args.runs / elapsed:.1f}")
    print(f"peak traced memory: {peak / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
