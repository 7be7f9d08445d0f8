"""An embedded Airflow: the real processes of a small cluster, on 127.0.0.1, in one home.

Used by the demo (``python -m airflow_workflow_engine.demo``: SQLite, ``.demo/``), the
end-to-end tests (``tests/e2e``: PostgreSQL or SQLite, a temporary home) and the Airflow
benchmark. :meth:`EmbeddedAirflow.prepare` writes the home and the environment without
starting anything:

- Airflow's metadata database (``db_url``; default ``<home>/airflow.db``) and the engine's
  ``wfe_`` tables (``engine_url``; default: Airflow's database, or ``<home>/engine.db`` when
  Airflow's is the default SQLite file: SQLite has one writer at a time, and Airflow keeps its
  own file busy while tasks write ours); blobs in ``<home>/blobs``, logs in ``<home>/logs``;
- the LocalExecutor, no example DAGs, DAGs from ``dags_folder``;
- the simple auth manager with one ``admin`` user (the password is kept in the home);
- everything bound to 127.0.0.1 on free ports, log servers skipped.

:meth:`~EmbeddedAirflow.migrate` runs ``airflow db migrate`` (Airflow's tables, then the
engine's through the provider's DB manager); :meth:`~EmbeddedAirflow.start` starts
``api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` as subprocesses, each in
its own process group and logging to ``<home>/<name>.log``; :meth:`~EmbeddedAirflow.stop`
ends every process it started, their children included. The REST API methods (``/auth/token``,
``/api/v2/...``) drive it like a user would; :meth:`~EmbeddedAirflow.airflow` runs one CLI
command in its environment.

Everything runs ``airflow`` as subprocesses: this module imports no Airflow code.
"""

from __future__ import annotations

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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ADMIN_USER",
    "COMPONENTS",
    "ApiError",
    "ClusterError",
    "ClusterTimeout",
    "EmbeddedAirflow",
    "airflow_bin",
    "free_port",
    "tail",
    "wait_until",
]

T = TypeVar("T")

ADMIN_USER = "admin"
#: The Airflow processes of a cluster, in start order (the api-server serves the UI, the REST
#: API and the execution API that task processes talk to).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Each process's CLI arguments (the api-server's host, port and workers are added).
COMMANDS: dict[str, list[str]] = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
_HEALTH_KEYS = {
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}
DB_MANAGER = "airflow_workflow_engine.hooks.db_manager.WorkflowEngineDBManager"
#: Marks a home this module created, so that ``fresh`` only ever deletes one of those (the
#: name predates this module: demo homes made before carry it).
_MARKER = ".wfe-demo-home"
#: Every process started from an :class:`EmbeddedAirflow` carries its token in this
#: environment variable, so that :meth:`EmbeddedAirflow.stop` finds their children too.
_TOKEN_VARIABLE = "WFE_EMBEDDED_AIRFLOW"
_TERMINAL = ("success", "failed")


class ClusterError(RuntimeError):
    """The embedded Airflow cannot go on; the message says why and what to look at."""


class ApiError(ClusterError):
    """A REST call failed: ``status`` is the HTTP status, ``None`` when nothing answered."""

    def __init__(self, method: str, path: str, status: int | None, detail: str) -> None:
        what = f"HTTP {status}" if status is not None else "the api-server did not answer"
        super().__init__(f"{method} {path}: {what}: {detail[:2000]}")
        self.status = status


class ClusterTimeout(ClusterError, TimeoutError):
    """A wait ran out of time."""


def free_port(preferred: int | None = None) -> int:
    """A free TCP port on 127.0.0.1: ``preferred`` when it is free, else any."""
    for port in [*([preferred] if preferred else []), 0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            found: int = sock.getsockname()[1]
            return found
    raise ClusterError("no free TCP port on 127.0.0.1")


def airflow_bin() -> str:
    """The ``airflow`` command beside this Python, else on ``PATH``."""
    beside = Path(sys.executable).with_name("airflow")
    if beside.exists():
        return str(beside)
    found = shutil.which("airflow")
    if found is None:
        raise ClusterError(
            "the 'airflow' command is not installed: install the 'airflow' extra "
            "(pip install -e '.[airflow]'), or run the demo without Airflow: "
            "python -m airflow_workflow_engine.demo --in-process"
        )
    return found


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log; JSON lines (task logs) shortened to time, level, event."""
    if not path.exists():
        return f"({path} does not exist)"
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
            raise ClusterTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class EmbeddedAirflow:
    """An Airflow of its own in ``home``; see the module docstring."""

    home: Path
    dags_folder: Path
    port: int
    password: str
    env: dict[str, str]
    #: The working directory of the processes and CLI commands.
    cwd: Path
    #: The live processes, by component name.
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Every process started, by log name (a restart gets a new one), for stop() and logs.
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None
    #: Process groups already stopped (never signalled again).
    _stopped: set[int] = field(default_factory=set)

    # -- setup ------------------------------------------------------------------------------
    @classmethod
    def prepare(
        cls,
        home: Path,
        dags_folder: Path,
        *,
        db_url: str | None = None,
        engine_url: str | None = None,
        port: int | None = None,
        parallelism: int = 4,
        paused_at_creation: bool = True,
        fresh: bool = True,
        cwd: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> EmbeddedAirflow:
        """Creates (``fresh``: re-creates) the home and the processes' environment.

        ``port``: the api-server's; ``None`` is 8080 when free, else any; ``0`` is any.
        ``cwd``: the processes' working directory (default: the home).
        """
        home = home.resolve()
        if fresh and home.exists():
            if any(home.iterdir()) and not (home / _MARKER).exists():
                raise ClusterError(
                    f"{home} exists and is not a demo home (no {_MARKER} file): not deleting "
                    "it. Pick another --home."
                )
            shutil.rmtree(home)
        home.mkdir(parents=True, exist_ok=True)
        (home / _MARKER).write_text("created by airflow_workflow_engine.testing.cluster\n")
        password_file = home / "simple_auth_manager_passwords.json"
        if password_file.exists():
            password = str(json.loads(password_file.read_text())[ADMIN_USER])
        else:
            password = secrets.token_urlsafe(12)
            password_file.write_text(json.dumps({ADMIN_USER: password}) + "\n")
            password_file.chmod(0o600)
        chosen = free_port(8080 if port is None else port)
        if port and chosen != port:
            raise ClusterError(f"port {port} on 127.0.0.1 is in use: pick another --port.")
        base = f"http://127.0.0.1:{chosen}"
        if db_url is None:
            db_url = f"sqlite:///{home}/airflow.db"
            engine_url = engine_url or f"sqlite:///{home}/engine.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.resolve()),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(paused_at_creation),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(chosen),
                "AIRFLOW__API__BASE_URL": base,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN": engine_url or db_url,
                "AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE": str(home / "blobs"),
            }
        )
        if not db_url.startswith("sqlite"):
            # Airflow derives postgresql+asyncpg otherwise; psycopg 3 does async too.
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = db_url
        if not _provider_registered():
            env["AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS"] = DB_MANAGER
        env.update(extra_env or {})
        env[_TOKEN_VARIABLE] = secrets.token_hex(8)  # marks the processes started from here
        return cls(
            home=home,
            dags_folder=dags_folder,
            port=chosen,
            password=password,
            env=env,
            cwd=cwd or home,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_url(self) -> str:
        """Airflow's metadata database."""
        return self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]

    @property
    def engine_url(self) -> str:
        """The engine's database (``wfe_`` tables)."""
        return self.env["AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN"]

    @property
    def blob_root(self) -> Path:
        return Path(self.env["AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE"])

    def airflow(
        self, args: Sequence[str], *, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs one ``airflow`` command in this environment; with ``check``, a non-zero exit
        raises :class:`ClusterError` with its output."""
        done = subprocess.run(
            [airflow_bin(), *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"`airflow {' '.join(args)}` failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-4000:]}"
            )
        return done

    def workflow_engine(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """``airflow workflow-engine ARGS``; with ``ok``, it must exit 0."""
        return self.airflow(["workflow-engine", *args], timeout=180, check=ok)

    def migrate(self) -> None:
        """``airflow db migrate``: Airflow's tables, then the engine's (its DB manager); the
        output goes to ``<home>/db-migrate.log``."""
        done = self.airflow(["db", "migrate"], check=False)
        (self.home / "db-migrate.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise ClusterError(
                f"`airflow db migrate` failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-4000:]}"
            )

    # -- processes --------------------------------------------------------------------------
    def start(self, components: Sequence[str] = COMPONENTS) -> None:
        """Starts the processes (without waiting for them)."""
        for name in components:
            self.spawn(name)

    def start_processes(self, timeout: float = 180) -> None:
        """Starts every component, waits until they are healthy and warms up the execution
        API."""
        self.start()
        self.wait_healthy(timeout)
        self.warm_up_execution_api()

    def spawn(self, name: str, args: Sequence[str] | None = None) -> subprocess.Popen[bytes]:
        """Starts one Airflow process in its own process group (stopped as a whole); it logs
        to ``<home>/<name>.log`` (``<name>-2.log`` ... when restarted)."""
        if args is None:
            args = COMMANDS[name]
            if name == "api-server":
                args = [*args, "-H", "127.0.0.1", "-p", str(self.port), "-w", "1"]
        log_name = name
        n = 1
        while log_name in self.started:
            n += 1
            log_name = f"{name}-{n}"
        with (self.home / f"{log_name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [airflow_bin(), *args],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes[name] = proc
        self.started[log_name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> list[int]:
        """Kills a process and all its descendants, and waits for it; returns the pids of the
        descendants that were outside its process group (Airflow's task supervisor puts each
        task process in a group of its own, so killing the group alone would leave a worker's
        tasks running). The group is stopped first, so that nothing forks while the tree is
        read."""
        proc = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGSTOP)
        outside = [p for p in _descendants(proc.pid) if _pgid(p) != proc.pid]
        for pid in outside:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
            os.killpg(proc.pid, signal.SIGCONT)  # a stopped process acts on no other signal
        _kill_group(proc, sig)
        self._stopped.add(proc.pid)
        return outside

    def stop(self, timeout: float = 10) -> list[str]:
        """Stops every process started here (SIGTERM, then SIGKILL after ``timeout``), with
        their children; returns the names of those that were still running."""
        procs = {n: p for n, p in self.started.items() if p.pid not in self._stopped}
        stopped = []
        for name, proc in procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + timeout  # the dag-processor may never exit on SIGTERM
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in procs.values():
            # The group too: children (executor workers, task processes) may outlive the leader.
            _kill_group(proc, signal.SIGKILL)
            self._stopped.add(proc.pid)
        # Children that left the group: only processes carrying this object's token.
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
        """Raises with the end of its log when a started process has exited."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                log = self.home / f"{self._log_name(proc)}.log"
                raise ClusterError(
                    f"airflow {name} exited with code {proc.returncode}; the end of "
                    f"{log}:\n{tail(log, 80)}"
                )

    def wait_healthy(self, timeout: float = 180) -> dict[str, Any]:
        """Until the api-server answers and every started component reports healthy."""
        wanted = ["metadatabase", *(_HEALTH_KEYS[n] for n in self.processes if n in _HEALTH_KEYS)]
        last: Any = None

        def check() -> dict[str, Any] | None:
            nonlocal last
            self.check_alive()
            try:
                last = self.request("GET", "/api/v2/monitor/health", auth=False)
            except ApiError:
                last = None
            healthy = isinstance(last, dict) and all(
                (last.get(key) or {}).get("status") == "healthy" for key in wanted
            )
            return last if healthy else None

        try:
            return wait_until("every Airflow component to report healthy", check, timeout)
        except ClusterTimeout:
            raise ClusterTimeout(
                f"Airflow did not become healthy in {timeout:.0f}s: {last}"
            ) from None

    def warm_up_execution_api(self) -> None:
        """The execution API's first request takes seconds (and blocks the one api-server
        worker meanwhile); when a task's first call is that request, it times out and is
        retried, and on a busy machine the task can fail. So make the first request here."""
        with urllib.request.urlopen(f"{self.url}/execution/health", timeout=120) as resp:
            if resp.status != 200:
                raise ClusterError(f"execution API not healthy: HTTP {resp.status}")

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
        """One JSON request to the api-server; failures raise :class:`ApiError`."""
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
            detail = exc.read().decode(errors="replace")
            raise ApiError(method, path, exc.code, detail) from None
        except OSError as exc:  # refused, reset, timed out
            raise ApiError(method, path, None, str(exc)) from None
        return json.loads(raw) if raw else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """``/api/v2`` + path, authenticated."""
        return self.request(method, "/api/v2" + path, body)

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        """Until the dag-processor has parsed ``dag_id``, which is then unpaused; import
        errors end the wait."""

        def check() -> dict[str, Any] | None:
            self.check_alive()
            try:
                dag: dict[str, Any] = self.api("GET", f"/dags/{dag_id}")
                return dag
            except ApiError as exc:
                if exc.status != 404:
                    raise
            errors = self.api("GET", "/importErrors").get("import_errors", [])
            if errors:
                listed = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise ClusterError(f"the DAG files have import errors:\n{listed}")
            return None

        try:
            dag = wait_until(f"DAG {dag_id} to be parsed", check, timeout)
        except ClusterTimeout:
            log = self.home / "dag-processor.log"
            raise ClusterTimeout(
                f"DAG {dag_id!r} did not appear in {timeout:.0f}s; see {log}:\n{tail(log)}"
            ) from None
        if dag.get("is_paused"):
            self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        return dag

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None
    ) -> dict[str, Any]:
        """Creates a DAG run with ``conf`` (and ``run_id``, else Airflow picks one)."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if run_id is not None:
            body["dag_run_id"] = run_id
        created: dict[str, Any] = self.api("POST", f"/dags/{dag_id}/dagRuns", body)
        return created

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
        found: dict[str, Any] = self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}")
        return found

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances")
        return {ti["task_id"]: ti for ti in answer.get("task_instances", [])}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries"
        return self.api("GET", f"{path}/return_value?deserialize=true")["value"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Polls the DAG run until it is finished; returns it (whatever its state)."""

        def check() -> dict[str, Any] | None:
            self.check_alive()
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in _TERMINAL else None

        return wait_until(f"DAG run {dag_id}/{run_id} to finish", check, timeout, 2.0)

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 180
    ) -> dict[str, Any]:
        """Until ``task_id`` is in ``state``; a failed task ends the wait."""

        def check() -> dict[str, Any] | None:
            self.check_alive()
            ti = self.task_instances(dag_id, run_id).get(task_id)
            if ti is not None and ti["state"] in ("failed", "upstream_failed"):
                raise ClusterError(f"task {task_id} is {ti['state']}, waiting for {state}")
            return ti if ti is not None and ti["state"] == state else None

        return wait_until(f"task {task_id} of {run_id} to be {state}", check, timeout)

    # -- diagnostics ------------------------------------------------------------------------
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

    @contextlib.contextmanager
    def explain_failure(
        self, dag_id: str | None = None, run_id: str | None = None
    ) -> Iterator[None]:
        """Re-raises a failure as an ``AssertionError`` with the processes' and tasks' log
        tails attached."""
        try:
            yield
        except (AssertionError, TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{exc}\n\n{self.diagnostics(dag_id, run_id)}") from exc

    def _log_name(self, proc: subprocess.Popen[bytes]) -> str:
        return next(k for k, v in self.started.items() if v is proc)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux ``/proc``; elsewhere none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


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
    """Whether this package is installed as an Airflow provider (its DB manager then comes
    from the provider's metadata; otherwise the environment names it)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="apache_airflow_provider"):
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.metadata["Name"] == "airflow-workflow-engine":
            return True
    return False
