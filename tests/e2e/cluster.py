"""A throwaway Airflow cluster for the end-to-end tests: the real processes, on 127.0.0.1.

:meth:`AirflowCluster.start` builds it in a temporary ``AIRFLOW_HOME``:

- Airflow's metadata database and the engine's ``wfe_`` tables in one PostgreSQL database
  (``[database] sql_alchemy_conn`` and ``[workflow_engine] sql_alchemy_conn`` name it), or,
  with ``engine_url``, the engine's tables in a database of their own (the SQLite variant:
  Airflow's metadata in ``<home>/airflow.db``, ours in another SQLite file, since Airflow
  holds its file while tasks write ours);
- the LocalExecutor with ``[core] parallelism`` 2, no example DAGs, DAGs from
  ``tests/e2e/dags`` (unpaused at creation);
- the simple auth manager with one admin user whose password the test writes beforehand;
- ``airflow db migrate`` (Airflow's tables, then ours through the provider's DB manager);
- ``airflow scheduler``, ``dag-processor``, ``triggerer`` and ``api-server`` as subprocesses,
  each in its own process group (stopped as a whole) and logging to ``<home>/<name>.log``;
  everything binds 127.0.0.1 on free ports, log servers are skipped (or on free ports).

The tests drive it like a user: the REST API (``/auth/token``, ``/api/v2/...``) to trigger
and watch DAG runs, and :class:`~airflow_workflow_engine.persistence.sql.SqlPersistence` on
the same database for the engine's view. :meth:`diagnostics` gathers the processes' and
tasks' log tails for failure messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
DAGS = Path(__file__).resolve().parent / "dags"
DB_MANAGER = "airflow_workflow_engine.hooks.db_manager.WorkflowEngineDBManager"
ADMIN = "admin"

T = TypeVar("T")

#: The Airflow processes, by name: their CLI arguments.
COMMANDS: dict[str, list[str]] = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log; JSON lines (task logs) shortened to time, level, event."""
    if not path.exists():
        return f"({path.name} missing)"
    out = []
    for line in path.read_text(errors="replace").splitlines()[-lines:]:
        try:
            record = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if isinstance(record, dict):
            event = str(record.get("event", ""))[:400]
            out.append(f"{record.get('timestamp', '')} {record.get('level', '')} {event}")
            if record.get("error_detail"):
                out.append(json.dumps(record["error_detail"])[:3000])
        else:
            out.append(line)
    return "\n".join(out)


def wait_until(
    what: str, check: Callable[[], T | None], timeout: float, interval: float = 1.0
) -> T:
    """Calls ``check`` until it returns something other than ``None``/``False``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:2000]}")
        self.status = status


@dataclass
class AirflowCluster:
    home: Path
    db_url: str
    env: dict[str, str]
    api_port: int
    password: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Every process started, by log name (restarts get a new name), for stop() and logs.
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None
    #: Process groups already stopped (never signalled again).
    _stopped: set[int] = field(default_factory=set)
    #: The engine's database (``wfe_`` tables); default: Airflow's (``db_url``).
    engine_url: str = ""

    def __post_init__(self) -> None:
        self.engine_url = self.engine_url or self.db_url

    # -- setup ----------------------------------------------------------------------------
    @classmethod
    def create(cls, home: Path, db_url: str, engine_url: str | None = None) -> AirflowCluster:
        """Writes the home (config through the environment) without starting anything."""
        port = free_port()
        password = secrets.token_urlsafe(12)
        passwords = home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({ADMIN: password}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
                "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN": engine_url or db_url,
                "AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE": str(home / "blobs"),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                # A killed triggerer's triggers move to a live one after this many seconds.
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                "PYTHONPATH": os.pathsep.join(
                    [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            }
        )
        if not db_url.startswith("sqlite"):
            # Airflow derives postgresql+asyncpg otherwise; psycopg 3 does async too.
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = db_url
        if not _provider_registered():
            env["AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS"] = DB_MANAGER
        return cls(
            home=home,
            db_url=db_url,
            env=env,
            api_port=port,
            password=password,
            engine_url=engine_url or db_url,
        )

    def migrate(self) -> None:
        result = subprocess.run(
            [airflow_bin(), "db", "migrate"],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        (self.home / "db-migrate.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate failed:\n{(result.stdout + result.stderr)[-6000:]}"
            )

    def start_processes(self, timeout: float = 180) -> None:
        api = ["api-server", "-H", "127.0.0.1", "-p", str(self.api_port), "-w", "1"]
        self.spawn("api-server", api)
        for name in COMMANDS:
            self.spawn(name)
        self.wait_healthy(timeout)
        self.warm_up_execution_api()

    def warm_up_execution_api(self) -> None:
        """The execution API's first request takes seconds (and blocks the one api-server
        worker meanwhile); when a task's first call is that request, it times out and is
        retried, and on a busy machine the task can fail. So make the first request here."""
        with urllib.request.urlopen(f"{self.base_url}/execution/health", timeout=120) as resp:
            if resp.status != 200:
                raise RuntimeError(f"execution API not healthy: HTTP {resp.status}")

    # -- processes ------------------------------------------------------------------------
    def spawn(self, name: str, args: list[str] | None = None) -> subprocess.Popen[bytes]:
        """Starts an Airflow process in its own process group; logs to ``<home>/<name>*.log``."""
        log_name = name
        n = 1
        while log_name in self.started:
            n += 1
            log_name = f"{name}-{n}"
        with (self.home / f"{log_name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [airflow_bin(), *(args or COMMANDS[name])],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = proc
        self.started[log_name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kills a process and its children (its process group), and waits for it."""
        proc = self.processes.pop(name)
        _kill_group(proc, sig)
        self._stopped.add(proc.pid)

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                log = next(k for k, v in self.started.items() if v is proc)
                raise RuntimeError(
                    f"airflow {name} exited with {proc.returncode}:\n"
                    f"{tail(self.home / f'{log}.log', 80)}"
                )

    def stop(self) -> None:
        """Stops every process this cluster started (SIGTERM, then SIGKILL), by group."""
        procs = [p for p in self.started.values() if p.pid not in self._stopped]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10  # the dag-processor may never exit on SIGTERM
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in procs:
            # The group too: children (executor workers, task processes) may outlive the leader.
            _kill_group(proc, signal.SIGKILL)
            self._stopped.add(proc.pid)
        self.processes.clear()

    # -- REST API -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise ApiError(method, path, err.code, err.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        """A JWT from the simple auth manager (``POST /auth/token``)."""
        if self._token is None:
            answer = self._request(
                "POST", "/auth/token", {"username": ADMIN, "password": self.password}, auth=False
            )
            self._token = str(answer["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """``/api/v2`` + path, authenticated."""
        return self._request(method, "/api/v2" + path, body)

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/api/v2/monitor/health", auth=False)
        return result

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            self.check_alive()
            try:
                health = self.health()
            except (OSError, ApiError):
                return None
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            statuses = [(health.get(p) or {}).get("status") for p in parts]
            return health if all(s == "healthy" for s in statuses) else None

        return wait_until("every Airflow component to report healthy", check, timeout)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        """Waits until the DAG processor has parsed ``dag_id`` (and checks it is unpaused)."""

        def check() -> dict[str, Any] | None:
            self.check_alive()
            try:
                dag: dict[str, Any] = self.api("GET", f"/dags/{dag_id}")
            except ApiError as err:
                if err.status == 404:
                    return None
                raise
            return dag

        dag = wait_until(f"DAG {dag_id} to be parsed", check, timeout)
        if dag.get("is_paused"):
            self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        return dag

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str) -> dict[str, Any]:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        result: dict[str, Any] = self.api("POST", f"/dags/{dag_id}/dagRuns", body)
        return result

    def clear(
        self, dag_id: str, run_id: str, task_ids: list[str], *, downstream: bool = True
    ) -> list[str]:
        """Clears tasks of a DAG run like the UI's "Clear" (failed or not); returns the
        cleared task ids."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": False,
            "include_downstream": downstream,
            "reset_dag_runs": True,
        }
        answer = self.api("POST", f"/dags/{dag_id}/clearTaskInstances", body)
        return sorted(ti["task_id"] for ti in answer["task_instances"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}")
        return result

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries"
        return self.api("GET", f"{path}/return_value?deserialize=true")["value"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Polls the DAG run until it is finished; returns it (whatever its state)."""

        def check() -> dict[str, Any] | None:
            self.check_alive()
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        return wait_until(f"DAG run {dag_id}/{run_id} to finish", check, timeout, 2.0)

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 180
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            self.check_alive()
            ti = self.task_instances(dag_id, run_id).get(task_id)
            if ti is not None and ti["state"] in ("failed", "upstream_failed"):
                raise AssertionError(f"task {task_id} is {ti['state']}, waiting for {state}")
            return ti if ti is not None and ti["state"] == state else None

        return wait_until(f"task {task_id} of {run_id} to be {state}", check, timeout)

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics(self, dag_id: str | None = None, run_id: str | None = None) -> str:
        """Tails of every process log (and of the run's task logs) for failure messages."""
        parts = []
        for log_name, proc in self.started.items():
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            parts.append(f"===== {log_name} ({state}) =====\n{tail(self.home / f'{log_name}.log')}")
        if dag_id and run_id:
            folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
            for path in sorted(folder.glob("task_id=*/attempt=*.log*")):
                rel = path.relative_to(folder)
                parts.append(f"===== task log {rel} =====\n{tail(path, 25)}")
        return "\n".join(parts)

    def workflow_engine(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """``airflow workflow-engine ARGS`` against this cluster; with ``ok``, it must exit 0."""
        done = subprocess.run(
            [airflow_bin(), "workflow-engine", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if ok:
            assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    @contextlib.contextmanager
    def explain_failure(
        self, dag_id: str | None = None, run_id: str | None = None
    ) -> Iterator[None]:
        """Re-raises a failure with the processes' and tasks' log tails attached."""
        try:
            yield
        except (AssertionError, TimeoutError, ApiError, RuntimeError) as exc:
            raise AssertionError(f"{exc}\n\n{self.diagnostics(dag_id, run_id)}") from exc


def e2e_marks(timeout: int, reruns: int = 1) -> list[Any]:
    """The marks of an end-to-end module: integration, skipped without Airflow, a timeout,
    and ``reruns`` reruns (one by default: Airflow 3.3.2 can mark a resumed deferred task
    failed while it still runs, its own state update then getting 409
    "previous_state=failed"; apache/airflow#72716)."""
    import importlib.util

    import pytest

    return [
        pytest.mark.integration,
        pytest.mark.skipif(
            importlib.util.find_spec("airflow") is None,
            reason="apache-airflow is not installed in this environment; install the "
            "'airflow' extra (pip install -e '.[airflow,test]') to run the end-to-end tests",
        ),
        pytest.mark.timeout(timeout),
        *([pytest.mark.flaky(reruns=reruns)] if reruns else []),
    ]


@contextlib.contextmanager
def running_cluster(
    home: Path,
    db_url: str,
    dag_ids: tuple[str, ...],
    *,
    engine_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[AirflowCluster]:
    """A migrated Airflow with its processes running and ``dag_ids`` parsed; stopped at the
    end (the home, with its logs and blobs, stays for inspection)."""
    cluster = AirflowCluster.create(home, db_url, engine_url=engine_url)
    cluster.env.update(env or {})
    try:
        with cluster.explain_failure():
            cluster.migrate()
            cluster.start_processes()
            for dag_id in dag_ids:
                cluster.wait_for_dag(dag_id)
        yield cluster
    finally:
        cluster.stop()


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _provider_registered() -> bool:
    from importlib.metadata import entry_points

    for ep in entry_points(group="apache_airflow_provider"):
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.metadata["Name"] == "airflow-workflow-engine":
            return True
    return False
