"""What running stages as Airflow tasks costs over plain ``@task`` tasks, and what parsing a
workflow DAG file costs over a DAG of ``EmptyOperator``s.

    .venv/bin/python benchmarks/airflow_overhead.py [--tasks 10] [--rounds 3] [--work 200000]

1. **Run time.** One embedded Airflow (SQLite metadata, LocalExecutor, ``api-server``,
   ``scheduler`` and ``dag-processor`` on 127.0.0.1; the engine's tables in a SQLite file of
   their own, as in the quick start) runs two DAGs of ``--tasks`` tasks in a chain, doing the
   same work (``--work`` rounds of SHA-256 each, the value passed from task to task):

   - ``bench_stages``: a workflow of N sync stages, ``build_dag`` -> N ``StageOperator`` tasks
     (each creates or finds the workflow run, runs ``job.execute``, ``run.transition`` and
     writes its XCom summary);
   - ``bench_tasks``: N bare ``@task`` functions (the value goes through XCom).

   They are triggered through the REST API in alternating order, ``--rounds`` times after one
   warm-up round; the figures are medians of Airflow's own timestamps: the DAG run's wall time
   (start to end, scheduling included) and the sum of its task instances' durations (the task
   processes' time: start-up, DAG-file parse, the operator).

2. **Parse time.** ``DagBag`` of one file, in a fresh process per measurement (Airflow's task
   SDK already imported, as in the dag-processor): a 20-stage workflow DAG (``build_dag``)
   against 20 chained ``EmptyOperator``s. "First parse" includes importing this package's
   modules; "re-parse" is a second ``DagBag`` of the same file in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from airflow_workflow_engine.testing.cluster import EmbeddedAirflow

WORK_FUNCTION = """
import hashlib


def work(value: str, rounds: int = {work}) -> str:
    digest = value.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]
"""

STAGES_DAG = '''
"""N sync stages in a chain: N StageOperator tasks."""
from datetime import datetime

from pydantic import BaseModel

from airflow_workflow_engine import StageContext, WorkflowBuilder, define_stage
from airflow_workflow_engine.dag import build_dag
{work_function}

class Value(BaseModel):
    value: str = "seed"


def _step(ctx: StageContext[Value, None]) -> Value:
    return Value(value=work(ctx.input.value))


builder = WorkflowBuilder("{workflow_id}", "Benchmark", input=Value, output=Value)
for i in range({n}):
    builder.pipe(define_stage(id=f"s{{i:02d}}", input=Value, output=Value, execute=_step))

dag = build_dag(builder.build(), dag_id="{dag_id}", start_date=datetime(2025, 1, 1))
'''

TASKS_DAG = '''
"""N bare @task functions in a chain."""
from datetime import datetime

from airflow.sdk import DAG, task
{work_function}

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:

    @task
    def step(value: str) -> str:
        return work(value)

    value = "seed"
    for i in range({n}):
        value = step.override(task_id=f"t{{i:02d}}")(value)
'''

EMPTY_DAG = '''
"""N EmptyOperators in a chain."""
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, chain

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    chain(*[EmptyOperator(task_id=f"t{{i:02d}}") for i in range({n})])
'''

PARSE_PROBE = """
import json, sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag

path = sys.argv[1]
t = time.perf_counter()
bag = DagBag(dag_folder=path)
first = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
t = time.perf_counter()
DagBag(dag_folder=path)
again = time.perf_counter() - t
tasks = len(next(iter(bag.dags.values())).tasks)
print(json.dumps({"first": first, "again": again, "tasks": tasks}))
"""


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    from importlib.metadata import version

    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, Airflow {version('apache-airflow')}; load average at "
        f"start {load:.1f}"
    )


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _write_dags(folder: Path, n: int, work: int) -> None:
    fn = WORK_FUNCTION.format(work=work)
    (folder / "bench_stages.py").write_text(
        STAGES_DAG.format(work_function=fn, workflow_id="bench-stages", dag_id="bench_stages", n=n)
    )
    (folder / "bench_tasks.py").write_text(
        TASKS_DAG.format(work_function=fn, dag_id="bench_tasks", n=n)
    )


def _run_once(airflow: EmbeddedAirflow, dag_id: str, timeout: float) -> dict[str, float]:
    run_id = str(airflow.trigger(dag_id, {})["dag_run_id"])
    deadline = time.monotonic() + timeout
    while True:
        run = airflow.dag_run(dag_id, run_id)
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id} run {run_id} did not finish in {timeout:.0f}s")
        airflow.check_alive()
        time.sleep(0.5)
    if run["state"] != "success":
        raise RuntimeError(f"{dag_id} run {run_id} failed; logs in {airflow.home}/logs")
    tis = airflow.task_instances(dag_id, run_id)
    return {
        "wall": _seconds(run.get("start_date"), run.get("end_date")),
        "tasks": sum(float(ti.get("duration") or 0.0) for ti in tis.values()),
    }


def measure_runs(n: int, rounds: int, work: int, root: Path) -> dict[str, list[dict[str, float]]]:
    dags = root / "dags"
    dags.mkdir()
    _write_dags(dags, n, work)
    airflow = EmbeddedAirflow.prepare(root / "home", dags, port=0, parallelism=4)
    results: dict[str, list[dict[str, float]]] = {"bench_stages": [], "bench_tasks": []}
    try:
        airflow.migrate()
        airflow.start(("api-server", "scheduler", "dag-processor"))
        airflow.wait_healthy()
        for dag_id in results:
            airflow.wait_for_dag(dag_id)
        for r in range(rounds + 1):  # round 0 warms up
            order = list(results) if r % 2 == 0 else list(reversed(results))
            for dag_id in order:
                figures = _run_once(airflow, dag_id, timeout=60 + 30 * n)
                label = "warm-up" if r == 0 else f"round {r}"
                print(
                    f"  {label:<8} {dag_id:<13} wall {figures['wall']:6.1f} s, "
                    f"task durations {figures['tasks']:6.1f} s",
                    flush=True,
                )
                if r:
                    results[dag_id].append(figures)
    finally:
        airflow.stop()
    return results


def measure_parse(n: int, runs: int, root: Path) -> dict[str, list[dict[str, float]]]:
    folder = root / "parse"
    folder.mkdir()
    fn = WORK_FUNCTION.format(work=1)
    files = {
        f"{n} stages (build_dag)": folder / "parse_stages.py",
        f"{n} EmptyOperators": folder / "parse_empty.py",
    }
    files[f"{n} stages (build_dag)"].write_text(
        STAGES_DAG.format(work_function=fn, workflow_id="parse-stages", dag_id="parse_stages", n=n)
    )
    files[f"{n} EmptyOperators"].write_text(EMPTY_DAG.format(dag_id="parse_empty", n=n))
    home = root / "parse-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    results: dict[str, list[dict[str, float]]] = {label: [] for label in files}
    for _ in range(runs):
        for label, path in files.items():  # alternate, so drift hits both alike
            done = subprocess.run(
                [sys.executable, "-c", PARSE_PROBE, str(path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"parsing {path.name} failed:\n{done.stderr[-3000:]}")
            data = json.loads(done.stdout.strip().splitlines()[-1])
            assert data["tasks"] == n, data
            results[label].append(data)
    return results


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10, help="tasks per DAG (run time)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per DAG")
    parser.add_argument("--work", type=int, default=200_000, help="SHA-256 rounds per task")
    parser.add_argument("--parse-stages", type=int, default=20, help="tasks of the parsed DAGs")
    parser.add_argument("--parse-runs", type=int, default=7, help="fresh processes per file")
    parser.add_argument("--skip-runs", action="store_true", help="only the parse benchmark")
    args = parser.parse_args(argv)

    print(f"Machine: {_machine()}\n")
    with tempfile.TemporaryDirectory(prefix="wfe-airflow-bench-") as tmp:
        root = Path(tmp)
        if not args.skip_runs:
            print(
                f"Run time: {args.tasks} tasks in a chain, {args.work:,} SHA-256 rounds each, "
                f"{args.rounds} rounds (+1 warm-up):",
                flush=True,
            )
            runs = measure_runs(args.tasks, args.rounds, args.work, root)
            stages, tasks = runs["bench_stages"], runs["bench_tasks"]
            print()
            print("| median of rounds | StageOperator | @task | ratio |")
            print("|---|---|---|---|")
            for key, title in (("wall", "DAG run wall time"), ("tasks", "sum of task durations")):
                s, t = _median(stages, key), _median(tasks, key)
                print(f"| {title} | {s:.1f} s | {t:.1f} s | {s / t:.2f} |")
            per_task = (_median(stages, "tasks") - _median(tasks, "tasks")) / args.tasks
            print(f"\nStageOperator's extra time per task: {per_task * 1000:.0f} ms\n")
        print(
            f"Parse time: DagBag of one file, {args.parse_runs} fresh processes per file:",
            flush=True,
        )
        parsed = measure_parse(args.parse_stages, args.parse_runs, root)
        print()
        print("| DAG file | first parse (median) | re-parse (median) |")
        print("|---|---|---|")
        for label, rows in parsed.items():
            first, again = _median(rows, "first"), _median(rows, "again")
            print(f"| {label} | {first * 1000:.0f} ms | {again * 1000:.0f} ms |")
        labels = list(parsed)
        ratio = _median(parsed[labels[0]], "first") / _median(parsed[labels[1]], "first")
        ratio_again = _median(parsed[labels[0]], "again") / _median(parsed[labels[1]], "again")
        print(
            f"\nratio (stages / EmptyOperators): first parse {ratio:.1f}, "
            f"re-parse {ratio_again:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
