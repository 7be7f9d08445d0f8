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

:class:`EmbeddedAirflow` is reusable (the Airflow benchmark starts one too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
ADMIN_USER = "admin"
#: Every Airflow process the demo starts (the api-server serves the UI, the REST API and the
#: execution API that task processes talk to).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
_HEALTH_KEYS = {
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}
_MARKER = ".wfe-demo-home"
_TOKEN_VARIABLE = "WFE_EMBEDDED_AIRFLOW"
_TERMINAL = frozenset({"success", "failed"})


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to look at."""


def _free_port(preferred: int | None = None) -> int:
    candidates = [preferred] if preferred else []
    for port in [*candidates, 0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            found: int = sock.getsockname()[1]
            return found
    raise DemoError("no free TCP port on 127.0.0.1")


def _airflow_bin() -> str:
    beside = Path(sys.executable).with_name("airflow")
    if beside.exists():
        return str(beside)
    found = shutil.which("airflow")
    if found is None:
        raise DemoError(
            "the 'airflow' command is not installed: install the 'airflow' extra "
            "(pip install -e '.[airflow]'), or run the demo without Airflow: "
            "python -m airflow_workflow_engine.demo --in-process"
        )
    return found


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


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


@dataclass
class EmbeddedAirflow:
    """An Airflow of its own in ``home``: SQLite, LocalExecutor, everything on 127.0.0.1.

    ``prepare`` writes the home and the environment, ``migrate`` creates the tables, ``start``
    starts the processes (each in its own process group), ``stop`` ends them all.
    """

    home: Path
    dags_folder: Path
    port: int
    password: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None

    # -- setup ------------------------------------------------------------------------------
    @classmethod
    def prepare(
        cls,
        home: Path,
        dags_folder: Path,
        *,
        port: int | None = None,
        parallelism: int = 4,
        fresh: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> EmbeddedAirflow:
        """Creates (``fresh``: re-creates) the home and the processes' environment."""
        home = home.resolve()
        if fresh and home.exists():
            if any(home.iterdir()) and not (home / _MARKER).exists():
                raise DemoError(
                    f"{home} exists and is not a demo home (no {_MARKER} file): not deleting "
                    "it. Pick another --home."
                )
            shutil.rmtree(home)
        home.mkdir(parents=True, exist_ok=True)
        (home / _MARKER).write_text("created by airflow_workflow_engine.demo_airflow\n")
        password_file = home / "simple_auth_manager_passwords.json"
        if password_file.exists():
            password = str(json.loads(password_file.read_text())[ADMIN_USER])
        else:
            password = secrets.token_urlsafe(12)
            password_file.write_text(json.dumps({ADMIN_USER: password}) + "\n")
            password_file.chmod(0o600)
        chosen = _free_port(8080 if port is None else port)  # 0: any free port
        if port and chosen != port:
            raise DemoError(f"port {port} on 127.0.0.1 is in use: pick another --port.")
        base = f"http://127.0.0.1:{chosen}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.resolve()),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(chosen),
                "AIRFLOW__API__BASE_URL": base,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
                "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/engine.db",
                "AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE": str(home / "blobs"),
                # Airflow's SQLite warning about concurrency is expected here: say it once.
                "PYTHONWARNINGS": env.get("PYTHONWARNINGS", "ignore::DeprecationWarning"),
            }
        )
        env.update(extra_env or {})
        env[_TOKEN_VARIABLE] = secrets.token_hex(8)  # marks the processes started from here
        return cls(home=home, dags_folder=dags_folder, port=chosen, password=password, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine_url(self) -> str:
        return self.env["AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN"]

    @property
    def blob_root(self) -> Path:
        return Path(self.env["AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE"])

    def airflow(
        self, args: Sequence[str], timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Runs one ``airflow`` command in this home; raises with its output on failure."""
        done = subprocess.run(
            [_airflow_bin(), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise DemoError(
                f"`airflow {' '.join(args)}` failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-4000:]}"
            )
        return done

    def migrate(self) -> None:
        """``airflow db migrate``: Airflow's tables, then the engine's (its DB manager)."""
        self.airflow(["db", "migrate"])

    def start(self, components: Sequence[str] = COMPONENTS) -> None:
        """Starts the processes; each writes ``<home>/<name>.log``."""
        args = {
            "api-server": ["api-server", "-H", "127.0.0.1", "-p", str(self.port), "-w", "1"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        for name in components:
            log = (self.home / f"{name}.log").open("wb")
            try:
                self.processes[name] = subprocess.Popen(
                    [_airflow_bin(), *args[name]],
                    env=self.env,
                    cwd=self.home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stopped as a whole
                )
            finally:
                log.close()

    def stop(self, timeout: float = 30) -> list[str]:
        """Stops every started process and its children; returns the names stopped."""
        stopped = []
        for name, proc in self.processes.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Children that outlived their leader (task processes): the leaders are reaped now,
        # so their pids may belong to someone else; kill only processes of this home.
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.processes.clear()
        return stopped

    def leftover_pids(self) -> list[int]:
        """Live processes this object started, and their children: they carry its
        ``WFE_EMBEDDED_AIRFLOW`` token in their environment (Linux ``/proc``; else none)."""
        wanted = f"{_TOKEN_VARIABLE}={self.env[_TOKEN_VARIABLE]}".encode()
        found: list[int] = []
        proc_root = Path("/proc")
        if not proc_root.is_dir():
            return found
        for entry in proc_root.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if wanted in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise DemoError(
                    f"airflow {name} exited with code {proc.returncode}; the end of "
                    f"{self.home / (name + '.log')}:\n{_tail(self.home / (name + '.log'))}"
                )

    def wait_healthy(self, timeout: float = 180) -> None:
        """Until the api-server answers and every started component reports healthy."""
        wanted = [_HEALTH_KEYS[n] for n in self.processes if n in _HEALTH_KEYS]
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                last = self.request("GET", "/api/v2/monitor/health", auth=False)
            except DemoError:
                last = None
            if isinstance(last, dict) and all(
                (last.get(key) or {}).get("status") == "healthy" for key in wanted
            ):
                return
            time.sleep(1)
        raise DemoError(f"Airflow did not become healthy in {timeout:.0f}s: {last}")

    # -- REST API ---------------------------------------------------------------------------
    def token(self) -> str:
        """A JWT for the admin user (``POST /auth/token`` of the simple auth manager)."""
        if self._token is None:
            body = {"username": ADMIN_USER, "password": self.password}
            answer = self.request("POST", "/auth/token", body, auth=False)
            self._token = str(answer["access_token"])
        return self._token

    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, timeout: float = 30
    ) -> Any:
        """One JSON request to the api-server; HTTP errors raise :class:`DemoError`."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise DemoError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except OSError as exc:  # refused, reset, timed out
            raise DemoError(f"{method} {path}: the api-server did not answer: {exc}") from None
        return json.loads(raw) if raw else None

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag-processor has parsed ``dag_id``; import errors end the wait."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                self.request("GET", f"/api/v2/dags/{dag_id}")
                return
            except DemoError as exc:
                if "HTTP 404" not in str(exc):
                    raise
            errors = self.request("GET", "/api/v2/importErrors").get("import_errors", [])
            if errors:
                listed = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise DemoError(f"the DAG files have import errors:\n{listed}")
            time.sleep(1)
        raise DemoError(
            f"DAG {dag_id!r} did not appear in {timeout:.0f}s; see "
            f"{self.home / 'dag-processor.log'}:\n{_tail(self.home / 'dag-processor.log')}"
        )

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        """Unpauses ``dag_id`` and creates a DAG run with ``conf``; returns its run id."""
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf)}
        )
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        quoted = urllib.parse.quote(run_id, safe="")
        found: dict[str, Any] = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")
        return found

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        quoted = urllib.parse.quote(run_id, safe="")
        answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")
        return {ti["task_id"]: ti for ti in answer.get("task_instances", [])}


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
        stages = kernel.persistence.list_stages(run.id)
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
        return 0 if run.status.value == "COMPLETED" else 1


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
        airflow = EmbeddedAirflow.prepare(args.home, dags, port=args.port)
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
        airflow.wait_for_dag(DEMO_DAG_ID)
        run_id = airflow.trigger(DEMO_DAG_ID, run_input)
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
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        if airflow is not None:
            print(f"logs: {airflow.home}/*.log and {airflow.home}/logs/", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if airflow is not None and airflow.processes:
            step("stopping the Airflow processes")
            stopped = airflow.stop(timeout=20)
            if stopped:
                step(f"stopped {', '.join(stopped)}; logs in {airflow.home}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
