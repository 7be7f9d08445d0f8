"""Fixtures of the Airflow integration tests (imported by each test module; no conftest).

``airflow_env`` (one per session) is a throwaway Airflow on 127.0.0.1:

- ``AIRFLOW_HOME`` in a temp dir, SQLite metadata database, ``[core] parallelism`` 4;
- ``airflow db migrate`` (which also migrates the engine's tables through the provider's DB
  manager);
- the engine's tables in a SQLite file of their own (``engine.db``: Airflow holds its own
  SQLite file while tasks write ours) and blobs under the home;
- an ``api-server`` serving the execution API (task processes talk to it) and a
  ``triggerer`` (deferred tasks wait in it), both started here and stopped by process group.

DAGs run through ``run_dag.py`` in a subprocess with ``dag.test(use_executor=True)``.

Without ``airflow`` installed every test here is skipped with the reason.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

#: Looked up without importing it: importing airflow reads (and creates) AIRFLOW_HOME.
AIRFLOW_AVAILABLE = importlib.util.find_spec("airflow") is not None

#: Apply to every test module: ``pytestmark = AIRFLOW_MARKS``.
AIRFLOW_MARKS = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not AIRFLOW_AVAILABLE,
        reason="apache-airflow is not installed in this environment; install the 'airflow' "
        "extra (pip install -e '.[airflow,test]') to run the Airflow integration tests",
    ),
]

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
DAGS = HERE / "dags"
BAD_DAGS = HERE / "bad_dags"
PROVIDER_DIST = "airflow-workflow-engine"
DB_MANAGER = "airflow_workflow_engine.hooks.db_manager.WorkflowEngineDBManager"

if AIRFLOW_AVAILABLE and "airflow" not in sys.modules:
    # In-process tests import airflow: give them a throwaway home, never the developer's.
    _home = tempfile.mkdtemp(prefix="wfe-airflow-home-")
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.pop("AIRFLOW_CONFIG", None)


def provider_registered() -> bool:
    """Whether the ``apache_airflow_provider`` entry point of this package is installed."""
    for ep in entry_points(group="apache_airflow_provider"):
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.metadata["Name"] == PROVIDER_DIST:
            return True
    return False


def policy_registered() -> bool:
    """Whether the ``airflow.policy`` entry point (the DAG import check) is installed."""
    policies = entry_points(group="airflow.policy")
    return any(ep.value == "airflow_workflow_engine.dag" for ep in policies)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def airflow_env_vars(home: Path, **extra: str) -> dict[str, str]:
    """The environment of every Airflow process of a test home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    if not provider_registered():
        # The entry point is missing (pyproject without it, or not reinstalled): name the
        # DB manager in the config instead, so `airflow db migrate` still runs it.
        env["AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS"] = DB_MANAGER
    env.update(extra)
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def run_airflow(
    args: list[str], env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [airflow_bin(), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class DagRunResult:
    dag_id: str
    run_id: str = ""
    state: str = ""
    tis: dict[str, dict[str, Any]] = field(default_factory=dict)
    xcom: dict[str, Any] = field(default_factory=dict)
    #: Set when dag.test itself raised (the run was never created or ran).
    error: str | None = None
    log: str = ""

    def ti_state(self, task_id: str) -> str:
        return str(self.tis[task_id]["state"])

    def try_number(self, task_id: str) -> int:
        return int(self.tis[task_id]["try_number"])


@dataclass
class AirflowEnv:
    home: Path
    env: dict[str, str]
    api_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def engine_url(self) -> str:
        return f"sqlite:///{self.home}/engine.db"

    @property
    def blob_root(self) -> Path:
        return self.home / "blobs"

    # -- lifecycle ----------------------------------------------------------------------
    @classmethod
    def start(cls, home: Path) -> AirflowEnv:
        port = free_port()
        env = airflow_env_vars(
            home,
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__WORKFLOW_ENGINE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/engine.db",
            AIRFLOW__WORKFLOW_ENGINE__BLOB_STORE=str(home / "blobs"),
        )
        self = cls(home=home, env=env, api_port=port)
        migrated = run_airflow(["db", "migrate"], env)
        if migrated.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrated.stderr[-4000:]}")
        try:
            api = ["api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port)]
            self._spawn("api-server", [*api, "-w", "1"])
            self._spawn("triggerer", ["triggerer", "--skip-serve-logs"])
            self._wait_for_api()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.home / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [airflow_bin(), *args],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )

    def _wait_for_api(self, timeout: float = 120) -> None:
        url = f"http://127.0.0.1:{self.api_port}/execution/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes["api-server"]
            if proc.poll() is not None:
                raise RuntimeError(f"api-server exited:\n{tail(self.home / 'api-server.log')}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"api-server not healthy:\n{tail(self.home / 'api-server.log')}")

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.processes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    # -- running DAGs -------------------------------------------------------------------
    def _run_helper(self, args: list[str], timeout: float) -> tuple[int | None, str, str]:
        """Runs ``run_dag.py`` in its own process group; output goes to files, not pipes.

        The LocalExecutor's worker processes may outlive ``dag.test`` (holding inherited
        pipes open), so the group is terminated once the helper exits.
        """
        out_path = self.home / f"run-{time.monotonic_ns()}.out"
        err_path = out_path.with_suffix(".err")
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.airflow.run_dag", *args],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                code: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        return code, out_path.read_text(errors="replace"), err_path.read_text(errors="replace")

    @staticmethod
    def _result(stdout: str) -> dict[str, Any] | None:
        for line in stdout.splitlines():
            if line.startswith("@@RESULT@@"):
                data: dict[str, Any] = json.loads(line[len("@@RESULT@@") :])
                return data
        return None

    def run_dag(
        self, dag_file: str, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 240
    ) -> DagRunResult:
        """Runs ``dag_id`` of ``dags/<dag_file>`` once; returns Airflow's view of the run."""
        conf_json = json.dumps(conf) if conf is not None else ""
        code, out, err = self._run_helper(["run", str(DAGS / dag_file), dag_id, conf_json], timeout)
        data = self._result(out)
        if data is None:
            raise AssertionError(
                f"dag.test of {dag_id} did not finish (exit code {code}):\n"
                f"{(out + err)[-6000:]}\n--- triggerer:\n{tail(self.home / 'triggerer.log')}"
            )
        return DagRunResult(**data, log=out + err)

    def task_log(self, result: DagRunResult, task_id: str) -> str:
        """Every attempt's log of one task, concatenated."""
        folder = self.home / "logs" / f"dag_id={result.dag_id}" / f"run_id={result.run_id}"
        files = sorted((folder / f"task_id={task_id}").glob("attempt=*.log"))
        return "\n".join(f.read_text(errors="replace") for f in files)

    def import_errors(self, folder: Path) -> dict[str, Any]:
        """Airflow's DagBag over ``folder``: the DAGs it loaded and its import errors."""
        code, out, err = self._run_helper(["import-errors", str(folder)], 120)
        data = self._result(out)
        if data is None:
            raise AssertionError(f"DagBag failed (exit code {code}):\n{(out + err)[-4000:]}")
        return data

    # -- the engine's view --------------------------------------------------------------
    def store(self) -> Any:
        from airflow_workflow_engine.persistence.sql import SqlPersistence

        return SqlPersistence(self.engine_url)

    def kernel_run(self, result: DagRunResult, workflow_id: str) -> Any:
        """The workflow run of a DAG run (by its idempotency key), or ``None``."""
        key = f"{result.dag_id}/{result.run_id}"
        with self.store() as store:
            runs = store.list_runs(workflow_id=workflow_id, limit=1000)
        return next((r for r in runs if r.idempotency_key == key), None)

    def stages(self, workflow_run_id: str) -> dict[str, Any]:
        with self.store() as store:
            return {s.stage_id: s for s in store.list_stages(workflow_run_id)}

    def blob_count(self, workflow_run_id: str, stage_id: str, name: str) -> int:
        path = self.blob_root / "runs" / workflow_run_id / "stages" / stage_id / name
        return int(path.read_text()) if path.exists() else 0


#: The session's one Airflow: the fixture below is imported by several modules, and pytest
#: would otherwise start one per module.
_STARTED: dict[str, AirflowEnv] = {}


@pytest.fixture(scope="session")
def airflow_env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AirflowEnv]:
    """The session's Airflow (started on first use, shared by every module)."""
    if "env" not in _STARTED:
        env = AirflowEnv.start(tmp_path_factory.mktemp("airflow-home"))
        _STARTED["env"] = env
        request.config.add_cleanup(env.stop)
    yield _STARTED["env"]
