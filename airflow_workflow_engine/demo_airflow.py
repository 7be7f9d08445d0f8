"""The demo on a real, embedded Airflow: SQLite, every process on 127.0.0.1, offline.

``python -m airflow_workflow_engine.demo`` (``bash scripts/demo.sh``):

1. prepares an Airflow home (default ``./.demo``): Airflow's metadata in ``airflow.db``, the
   engine's ``wfe_`` tables in ``engine.db`` (SQLite has one writer at a time, and Airflow
   keeps its own file busy), blobs and logs beside them, and an ``admin`` login of the simple
   auth manager with a fresh password;
2. runs ``airflow db migrate`` (Airflow's tables, then the engine's, through the provider's DB
   manager);
3. starts ``airflow api-server`` (UI, REST API, execution API), ``scheduler``,
   ``dag-processor`` and ``triggerer``, bound to 127.0.0.1, log servers off;
4. unpauses the example ``document_pipeline`` DAG (``dags_examples/``) and triggers it with a
   conf through the REST API, prints the UI address and the login, and follows the tasks;
5. approves the run through the kernel when the ``approve`` sensor waits (what a reviewer
   would do), so the demo never hangs on its human-in-the-loop step;
6. prints each stage from the kernel's tables, the annotations, the output and the AI cost
   table from the ledger, then stops every process it started (also on Ctrl-C or failure).

The embedded Airflow itself (home, environment, processes, REST API) is
:class:`airflow_workflow_engine.testing.cluster.EmbeddedAirflow`, shared with the end-to-end
tests and the Airflow benchmark; this module is the demo's script on top of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.testing.cluster import (
    ADMIN_USER,
    COMPONENTS,
    ClusterError,
    EmbeddedAirflow,
)

__all__ = [
    "DEMO_DAG_ID",
    "DemoError",
    "EmbeddedAirflow",
    "add_arguments",
    "default_dags_folder",
    "run_demo",
]

DEMO_DAG_ID = "document_pipeline"
DEMO_WORKFLOW_ID = "document-pipeline"
#: The demo approves the run once this task is done (the content to review exists).
REVIEWED_TASK_ID = "embed"
_TERMINAL = frozenset({"success", "failed"})


class DemoError(ClusterError):
    """The demo cannot go on; the message says why and what to look at."""


def default_dags_folder() -> Path:
    """``dags_examples/`` of the source tree (or of the working directory)."""
    for candidate in (
        Path(__file__).resolve().parents[1] / "dags_examples",
        Path.cwd() / "dags_examples",
    ):
        if (candidate / "document_pipeline_dag.py").exists():
            return candidate
    raise DemoError(
        "cannot find dags_examples/document_pipeline_dag.py next to the package or in the "
        "working directory: run the demo from the source tree, or pass --dags-folder."
    )


# -- the engine's side (no Airflow import: the kernel over the demo's engine.db) -------------


@contextlib.contextmanager
def _kernel(airflow: EmbeddedAirflow) -> Iterator[Any]:
    from airflow_workflow_engine.blob.local import LocalBlobStore
    from airflow_workflow_engine.examples.document_pipeline import document_pipeline
    from airflow_workflow_engine.host.ports import (
        AirflowJobTransport,
        AirflowScheduler,
        LoggingEventSink,
    )
    from airflow_workflow_engine.kernel.kernel import DictRegistry, create_kernel
    from airflow_workflow_engine.persistence.sql import SqlPersistence

    with SqlPersistence(airflow.engine_url) as store:
        yield create_kernel(
            persistence=store,
            blob_store=LocalBlobStore(airflow.blob_root),
            job_transport=AirflowJobTransport(),
            event_sink=LoggingEventSink(),
            scheduler=AirflowScheduler(),
            registry=DictRegistry([document_pipeline]),
        )


def _workflow_run(kernel: Any, dag_id: str, run_id: str) -> Any:
    key = f"{dag_id}/{run_id}"
    runs = kernel.persistence.list_runs(workflow_id=DEMO_WORKFLOW_ID, limit=10_000)
    return next((r for r in runs if r.idempotency_key == key), None)


def _approve(kernel: Any, workflow_run_id: str) -> None:
    """What a reviewer does: an ``Approval`` annotation on the run, through the kernel."""
    from airflow_workflow_engine.conventions import Actor, Approval

    kernel.annotations.attach(
        workflow_run_id,
        actor=Actor(kind="user", id="demo-reviewer"),
        attributes={
            str(Approval.status): Approval.APPROVED,
            str(Approval.approver): "demo-reviewer",
            str(Approval.comment): "approved by the demo (a reviewer would do this)",
        },
        idempotency_key=f"demo-approval/{workflow_run_id}",
    )


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, separators=(", ", ": "), default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _report(airflow: EmbeddedAirflow, run_id: str, tis: Mapping[str, Mapping[str, Any]]) -> int:
    """Prints stages, annotations, output and costs from the kernel's tables."""
    from airflow_workflow_engine.ai.report import cost_table
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    with _kernel(airflow) as kernel:
        run = _workflow_run(kernel, DEMO_DAG_ID, run_id)
        if run is None:
            print("\nNo workflow run was created (the first stage task never ran).")
            return 1
        print(f"\nWorkflow run {run.id} (kernel) <-> DAG run {run_id} (Airflow)")
        print("\nStages, from the kernel's wfe_ tables (and the Airflow task of each):")
        stages = kernel.list_stages(run.id)
        for rec in stages:
            ti = tis.get(rec.stage_id, {})
            cost = rec.metrics.get("ai_cost")
            money = f"  ${cost:.6f}" if isinstance(cost, (int, float)) and cost else ""
            print(
                f"  [{rec.execution_group + 1}] {rec.stage_id:<10} {rec.status.value:<10} "
                f"attempt {rec.attempt}  task {ti.get('state', '?')}, try "
                f"{ti.get('try_number', '?')}{money}\n"
                f"      output={_short(rec.output)}"
            )
        stage_ids = {rec.stage_id for rec in stages}
        for task_id in (t for t in tis if t not in stage_ids):
            print(f"  (task {task_id}: {tis[task_id].get('state')}; not a stage)")
        notes = kernel.annotations.list(run.id)
        if notes:
            print("\nAnnotations:")
            for a in notes:
                where = f", stage {a.stage_id}" if a.stage_id else ""
                print(f"  {a.key} = {a.value!r}  (by {a.actor.kind}:{a.actor.id}{where})")
        ledger = SqlLedger(kernel.persistence.engine)
        entries = ledger.entries(run.id)
        labels = sorted({f"{e.dag_id}/{e.task_id} try {e.attempt}" for e in entries})
        print(
            "\nAI cost of the run (the wfe_ai_calls ledger; illustrative prices for the mock "
            "models):"
        )
        print(cost_table(ledger, run.id))
        if labels:
            print(f"Ledger rows are labelled with the Airflow task: {', '.join(labels)}")
        print(f"Run totals: ${run.total_cost:.6f}, {run.total_tokens} tokens")
        print(f"\nRun {run.status.value}" + (f": {run.error_message}" if run.error_message else ""))
        print(json.dumps(run.output, indent=2))
        return 0 if run.status is Status.COMPLETED else 1


def _follow(
    airflow: EmbeddedAirflow, run_id: str, timeout: float, auto_approve: bool
) -> dict[str, dict[str, Any]]:
    """Prints task state changes until the DAG run ends; approves the run (through the
    kernel) once the content to review is there, unless ``auto_approve`` is off."""
    start = time.monotonic()
    seen: dict[str, str] = {}
    approved = False
    tis: dict[str, dict[str, Any]] = {}
    while True:
        airflow.check_alive()
        elapsed = time.monotonic() - start
        tis = airflow.task_instances(DEMO_DAG_ID, run_id)
        for task_id, ti in tis.items():
            state = str(ti.get("state") or "waiting")
            if seen.get(task_id, "waiting") != state:
                seen[task_id] = state
                print(f"  [{elapsed:6.1f}s] {task_id:<10} {state}", flush=True)
        # Approve once there is something to review (the batch is embedded), usually before
        # the sensor's first check, so that it succeeds without deferring.
        ready = str(tis.get(REVIEWED_TASK_ID, {}).get("state")) == "success"
        if auto_approve and ready and not approved:
            with _kernel(airflow) as kernel:
                run = _workflow_run(kernel, DEMO_DAG_ID, run_id)
                if run is not None:
                    _approve(kernel, run.id)
                    approved = True
                    print(
                        f"  [{elapsed:6.1f}s] approving workflow run {run.id} through the kernel, "
                        "as a reviewer would (approval.status=approved by demo-reviewer)",
                        flush=True,
                    )
        state = str(airflow.dag_run(DEMO_DAG_ID, run_id).get("state"))
        if state in _TERMINAL:
            print(f"  [{elapsed:6.1f}s] DAG run {state}", flush=True)
            return airflow.task_instances(DEMO_DAG_ID, run_id)
        if elapsed > timeout:
            raise DemoError(f"the DAG run did not finish in {timeout:.0f}s (state {state})")
        time.sleep(1)


def _terminate(signum: int, frame: types.FrameType | None) -> None:
    raise SystemExit(128 + signum)


#: What ``airflow workflow-engine ...`` in another shell needs to see the demo's Airflow and
#: engine: the home, Airflow's database, the DAGs (``rerun`` reads the DAG files), the engine's
#: tables and blobs.
CLI_VARIABLES = (
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
    "AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS",
    "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN",
    "AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE",
)


def cli_exports(env: Mapping[str, str], bin_dir: Path | None = None) -> list[str]:
    """``export NAME=value`` lines (shell-quoted) that point the CLI at the demo's Airflow;
    ``PATH`` first gets the directory of the ``airflow`` command that runs it."""
    bin_dir = bin_dir or Path(sys.executable).parent
    lines = [f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"']
    lines += [f"export {name}={shlex.quote(env[name])}" for name in CLI_VARIABLES if name in env]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The Airflow demo's options (``--input`` and ``--in-process`` are the caller's)."""
    group = parser.add_argument_group("embedded Airflow")
    group.add_argument(
        "--home",
        type=Path,
        default=Path(".demo"),
        help="AIRFLOW_HOME (default ./.demo; recreated on each run)",
    )
    group.add_argument(
        "--port", type=int, help="api-server port (default 8080 if free, else any; 0: any)"
    )
    group.add_argument("--dags-folder", type=Path, help="default: dags_examples/ of the source")
    group.add_argument("--timeout", type=float, default=600, help="seconds for the DAG run")
    group.add_argument(
        "--no-approve",
        action="store_true",
        help="do not approve the run: it waits for a reviewer (Ctrl-C to stop)",
    )
    group.add_argument(
        "--keep-running",
        action="store_true",
        help="keep Airflow running after the run, until Ctrl-C, to look around in the UI",
    )


def run_demo(args: argparse.Namespace) -> int:
    """The demo on an embedded Airflow (see the module docstring); returns the exit code."""
    from airflow_workflow_engine.examples.document_pipeline import EXAMPLE_INPUT

    run_input = json.loads(args.input) if args.input else dict(EXAMPLE_INPUT)
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C stops the demo even when started with SIGINT ignored (a background job).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    airflow: EmbeddedAirflow | None = None
    started = time.monotonic()

    def step(text: str) -> None:
        print(f"==> [{time.monotonic() - started:5.1f}s] {text}", flush=True)

    try:
        dags = args.dags_folder or default_dags_folder()
        airflow = EmbeddedAirflow.prepare(
            args.home,
            dags,
            port=args.port,
            # Airflow's SQLite warning about concurrency is expected here: say it once.
            extra_env={
                "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore::DeprecationWarning")
            },
        )
        step(f"Airflow home {airflow.home} (SQLite; DAGs from {dags})")
        step("airflow db migrate (Airflow's tables, then the engine's wfe_ tables)")
        airflow.migrate()
        step(f"starting {', '.join(COMPONENTS)} on 127.0.0.1")
        airflow.start()
        airflow.wait_healthy()
        print(
            f"\n    Airflow UI: {airflow.url}   login: {ADMIN_USER} / {airflow.password}"
            f"\n    workflow runs and AI spend: {airflow.url}/workflow-engine/runs\n",
            flush=True,
        )
        print("    To use the CLI on this Airflow from another shell, paste:")
        for line in cli_exports(airflow.env):
            print(f"      {line}")
        print("      airflow workflow-engine runs list\n", flush=True)
        airflow.wait_for_dag(DEMO_DAG_ID)  # and unpauses it
        run_id = str(airflow.trigger(DEMO_DAG_ID, run_input)["dag_run_id"])
        step(f"triggered DAG {DEMO_DAG_ID!r} through the REST API: run {run_id}")
        print(f"    follow it in the UI: {airflow.url}/dags/{DEMO_DAG_ID}/runs/{run_id}")
        workflow_page = f"{airflow.url}/workflow-engine/dags/{DEMO_DAG_ID}/runs/{run_id}"
        print(f"    its workflow run: {workflow_page}\n")
        tis = _follow(airflow, run_id, args.timeout, auto_approve=not args.no_approve)
        code = _report(airflow, run_id, tis)
        if args.keep_running:
            print(
                f"\nAirflow keeps running: {airflow.url} (login {ADMIN_USER} / "
                f"{airflow.password}). Ctrl-C stops it."
            )
            while True:
                airflow.check_alive()
                time.sleep(2)
        return code
    except ClusterError as exc:  # DemoError included
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        if airflow is not None:
            print(f"logs: {airflow.home}/*.log and {airflow.home}/logs/", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if airflow is not None and airflow.started:
            step("stopping the Airflow processes")
            stopped = airflow.stop(timeout=20)
            if stopped:
                step(f"stopped {', '.join(stopped)}; logs in {airflow.home}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
