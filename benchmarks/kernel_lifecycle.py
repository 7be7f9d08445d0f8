"""The in-memory kernel lifecycle of issue 11, the same drive as the original's seed bench.

    .venv/bin/python benchmarks/kernel_lifecycle.py [--ns 200,1000] [--reps 3]
        [--warmup 500] [--lifecycle 2000] [--json out.json]
        [--original DIR [--rounds 2]]

Workflow ``stage1 -> [stage2a || stage2b] -> stage3 -> stage4`` (each ``x+1``) over the
in-memory adapters. Each trial gets one fresh kernel, so runs accumulate in it (this is what
shows whether per-run time stays flat). One run is ``run.create``, ``run.claimPending``, then
{dequeue, ``job.execute``, complete, ``run.transition``} until the queue is empty, then
``outbox.flush``. Prints runs/s per N, the median per-run time of the first 100 runs and of
the last 10%, one warm run (median over fresh kernels after warm-up) and peak RSS; the
figures are medians over ``--reps`` trials.

``--original DIR`` runs the side-by-side of issue 11 in one sequence: DIR is a prepared copy of
``../shared/bench-original/`` (its README says how; ``npx tsx seed_bench.ts`` must run there),
and each of ``--rounds`` rounds runs this benchmark and then the TypeScript original, each in a
fresh process with the same flags, interleaved (ours, original, ours, original, ...) so that
the machine's load moves both alike. It prints both sides, the ratios per round and their
medians against the issue's targets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from airflow_workflow_engine import WorkflowBuilder, define_stage
from airflow_workflow_engine.definitions.workflow import Workflow
from airflow_workflow_engine.kernel.commands import (
    JobExecute,
    OutboxFlush,
    RunClaimPending,
    RunCreate,
    RunTransition,
)
from airflow_workflow_engine.testing import create_test_kernel
from airflow_workflow_engine.testing.kit import TestKit


class X(BaseModel):
    x: int


class Joined(BaseModel):
    stage2a: X
    stage2b: X


def _build() -> Workflow:
    def plus_one(stage_id: str) -> Any:
        return define_stage(id=stage_id, input=X, output=X, execute=lambda c: {"x": c.input.x + 1})

    stage3 = define_stage(
        id="stage3", input=Joined, output=X, execute=lambda c: {"x": c.input.stage2a.x + 1}
    )
    return (
        WorkflowBuilder("bench", "Bench", None, input=X, output=X)
        .pipe(plus_one("stage1"))
        .parallel([plus_one("stage2a"), plus_one("stage2b")])
        .pipe(stage3)
        .pipe(plus_one("stage4"))
        .build()
    )


_keys = itertools.count(1)


def _one_run(kit: TestKit) -> str:
    kernel, queue = kit.kernel, kit.job_transport
    created = kernel.dispatch(
        RunCreate(workflow_id="bench", input={"x": 0}, idempotency_key=f"k{next(_keys)}")
    )
    kernel.dispatch(RunClaimPending(worker_id="bench-worker"))
    while (job := queue.dequeue("bench-worker")) is not None:
        kernel.dispatch(
            JobExecute(
                workflow_run_id=job.workflow_run_id,
                workflow_id=job.workflow_id,
                stage_id=job.stage_id,
                job_id=job.job_id,
            )
        )
        queue.complete(job.job_id)
        kernel.dispatch(RunTransition(workflow_run_id=job.workflow_run_id))
    kernel.dispatch(OutboxFlush())
    return created.workflow_run_id


def _trial(workflow: Workflow, n: int) -> dict[str, float]:
    kit = create_test_kernel([workflow])
    ids: list[str] = []
    per_us: list[float] = []
    t0 = time.perf_counter()
    for _ in range(n):
        a = time.perf_counter()
        ids.append(_one_run(kit))
        per_us.append((time.perf_counter() - a) * 1e6)
    elapsed = time.perf_counter() - t0
    for run_id in ids:  # every run finished, with the right output
        run = kit.kernel.require_run(run_id)
        assert run.status.value == "COMPLETED", run.error_message
    assert kit.kernel.require_run(ids[-1]).output == {"x": 4}
    assert len(kit.events.events) == len({e.id for e in kit.events.events})
    return {
        "runs_per_s": n / elapsed,
        "first100_us": statistics.median(per_us[:100]),
        "last10_us": statistics.median(per_us[int(n * 0.9) :]),
        "median_us": statistics.median(per_us),
    }


def _child_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--ns",
        args.ns,
        "--reps",
        str(args.reps),
        "--warmup",
        str(args.warmup),
        "--lifecycle",
        str(args.lifecycle),
    ]


def _run_side(command: list[str], cwd: Path, label: str) -> dict[str, Any]:
    """Runs one side's benchmark process; returns the figures it wrote as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        print(f"  .. {label}: running", flush=True)
        start = time.perf_counter()
        done = subprocess.run(
            [*command, "--json", str(out)], cwd=cwd, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not out.exists():
            raise SystemExit(
                f"{label} failed (exit {done.returncode}) in {cwd}:\n{done.stderr[-2000:]}"
            )
        print(f"  .. {label}: done in {time.perf_counter() - start:.0f} s", flush=True)
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures


def _trial_median(figures: dict[str, Any], n: int, key: str) -> float:
    trials = figures["trials"].get(str(n)) or figures["trials"].get(n)
    return float(statistics.median(t[key] for t in trials))


def side_by_side(args: argparse.Namespace) -> None:
    """Ours and the original, interleaved in one sequence, and the issue's ratios."""
    original = Path(args.original).resolve()
    if not (original / "seed_bench.ts").exists():
        raise SystemExit(
            f"--original {original}: no seed_bench.ts there; prepare a copy of "
            "../shared/bench-original as its README says"
        )
    ns = [int(n) for n in args.ns.split(",")]
    flags = _child_flags(args)
    ours_cmd = [sys.executable, str(Path(__file__).resolve()), *flags]
    original_cmd = ["npx", "tsx", "seed_bench.ts", *flags]
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for number in range(1, args.rounds + 1):
        print(f"round {number} of {args.rounds}", flush=True)
        ours = _run_side(ours_cmd, Path.cwd(), "ours")
        theirs = _run_side(original_cmd, original, "original (TS)")
        rounds.append((ours, theirs))

    def row(label: str, values: list[tuple[float, float]], unit: str, fmt: str) -> None:
        cells = " | ".join(f"{o:{fmt}} / {t:{fmt}} {unit}".rstrip() for o, t in values)
        print(f"| {label} | {cells} |")

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus, python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}"
    )
    header = " | ".join(f"round {i} (ours / original)" for i in range(1, len(rounds) + 1))
    print(f"| figure | {header} |")
    print("|---|" + "---|" * len(rounds))
    warm = [(o["lifecycle_us"], t["lifecycle_us"]) for o, t in rounds]
    row("one warm run", warm, "us", ",.0f")
    for n in ns:
        rate = [
            (_trial_median(o, n, "runs_per_s"), _trial_median(t, n, "runs_per_s"))
            for o, t in rounds
        ]
        row(f"runs/s at N={n}", rate, "", ",.0f")
    big = max(ns)
    first = [
        (_trial_median(o, big, "first100_us"), _trial_median(t, big, "first100_us"))
        for o, t in rounds
    ]
    last = [
        (_trial_median(o, big, "last10_us"), _trial_median(t, big, "last10_us")) for o, t in rounds
    ]
    row(f"per run, first 100 of N={big}", first, "us", ",.0f")
    row(f"per run, last 10% of N={big}", last, "us", ",.0f")
    row("peak RSS", [(o["maxrss_MB"], t["maxrss_MB"]) for o, t in rounds], "MB", ",.0f")

    warm_ratio = statistics.median(o / t for o, t in warm)
    flat = statistics.median(lo / fo for (lo, _), (fo, _) in zip(last, first, strict=True))
    rate_ratio = statistics.median(
        _trial_median(o, big, "runs_per_s") / _trial_median(t, big, "runs_per_s") for o, t in rounds
    )

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"\nmedians over {len(rounds)} rounds, against issue 11's targets:")
    print(
        f"  one warm run, ours / original: {warm_ratio:.2f}x "
        f"(target <= 2x: {verdict(warm_ratio <= 2)})"
    )
    print(
        f"  ours, last 10% / first 100 of N={big}: {flat:.2f} "
        f"(flat, target <= 1.2: {verdict(flat <= 1.2)})"
    )
    print(
        f"  runs/s at N={big}, ours / original: {rate_ratio:.2f} "
        f"(target >= 2: {verdict(rate_ratio >= 2)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ns", default="200,1000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--lifecycle", type=int, default=2000)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--original",
        default=None,
        metavar="DIR",
        help="a prepared copy of ../shared/bench-original: run both sides interleaved",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the side-by-side")
    args = parser.parse_args()
    if args.original:
        side_by_side(args)
        return
    ns = [int(n) for n in args.ns.split(",")]
    workflow = _build()

    warm_kit = create_test_kernel([workflow])
    for _ in range(args.warmup):
        _one_run(warm_kit)
    del warm_kit

    out: dict[str, Any] = {"trials": {}}
    for n in ns:
        out["trials"][n] = [_trial(workflow, n) for _ in range(args.reps)]
    if args.lifecycle:
        times = []
        for _ in range(args.lifecycle):
            kit = create_test_kernel([workflow])
            a = time.perf_counter()
            _one_run(kit)
            times.append((time.perf_counter() - a) * 1e6)
        out["lifecycle_us"] = statistics.median(times)
    out["maxrss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(f"machine: {machine}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print("workflow: stage1 -> [stage2a || stage2b] -> stage3 -> stage4, in-memory adapters")
    print(f"reps per N: {args.reps} (medians shown), warm-up runs: {args.warmup}")
    for n, trials in out["trials"].items():

        def med(key: str, trials: list[dict[str, float]] = trials) -> float:
            return statistics.median(t[key] for t in trials)

        first, last = med("first100_us"), med("last10_us")
        print(
            f"N={n}: {med('runs_per_s'):,.0f} runs/s; per run first 100: {first:,.0f} us, "
            f"last 10%: {last:,.0f} us (x{last / first:.2f})"
        )
    if "lifecycle_us" in out:
        print(f"one warm run (fresh kernel): {out['lifecycle_us']:,.0f} us")
    print(f"peak RSS: {out['maxrss_MB']:.0f} MB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main()
