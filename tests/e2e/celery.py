"""The CeleryExecutor on top of the e2e cluster (``cluster.py``): Redis and Celery workers.

Kept apart from ``cluster.py`` so the cluster helper can move without this file changing:

- :func:`start_redis` / the ``redis_server`` fixture: Debian's ``redis-server`` (installed by
  ``scripts/test.sh`` as root) on 127.0.0.1 and a free port, no persistence, stopped at the end;
  without it the tests skip, except under ``CI=true``, where they fail;
- :func:`celery_env`: the settings that switch a cluster to the CeleryExecutor on that Redis
  (broker and result backend), to apply before its processes start;
- :func:`start_worker`: ``airflow celery worker`` with its own hostname, started and stopped by
  the cluster like its other processes (``cluster.kill(name)`` SIGKILLs one and its tasks);
- :func:`celery_cluster`: the whole cluster of the Celery suite and of
  ``benchmarks/celery_vs_task.py``: a database of its own, the engine on a least-privilege
  role, the fake LLM server as ``llm_openai_default``, two workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import AirflowCluster, free_port, prepare_cluster

__all__ = [
    "ENGINE_ROLE",
    "WORKERS",
    "RedisServer",
    "celery_cluster",
    "celery_env",
    "redis_server",
    "start_redis",
    "start_worker",
    "worker_hostname",
]


#: The two workers' names (their task instances' ``hostname``).
WORKERS = ("worker-a", "worker-b")
#: The engine's least-privilege PostgreSQL role (``airflow workflow-engine db grant``).
ENGINE_ROLE = "wfe_celery_engine"


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_redis(binary: str) -> RedisServer:
    """Starts ``redis-server`` on 127.0.0.1 and a free port; waits until it answers."""
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="wfe-redis-"))
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly"]
    args += ["no", "--dir", str(root), "--protected-mode", "yes", "--daemonize", "no"]
    with (root / "redis.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(process, port, root)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(root / 'redis.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("redis-server did not answer PING within 30 s")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        reason = (
            "redis-server is not installed (apt-get install redis-server; scripts/test.sh does)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = start_redis(binary)
    try:
        yield server
    finally:
        server.stop()


def celery_env(redis: RedisServer) -> dict[str, str]:
    """The CeleryExecutor on ``redis``: broker and results there (no worker needs Airflow's
    database), workers heartbeating often so a killed one's tasks are found quickly."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"{redis.url}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"{redis.url}/1",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__CORE__PARALLELISM": "8",
        # A task whose worker died stops heartbeating: failed (and retried) after this.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }


def worker_hostname() -> str:
    """``[core] hostname_callable`` for the cluster: a worker's name (``WFE_WORKER_NAME``), so
    task instances say which of two workers on one machine ran them."""
    return os.environ.get("WFE_WORKER_NAME") or socket.getfqdn()


def start_worker(cluster: AirflowCluster, name: str, env: dict[str, str] | None = None) -> None:
    """``airflow celery worker`` named ``name@<host>`` (its tasks' ``hostname``), one task at a
    time, with ``env`` on top of the cluster's (e.g. the engine role's URL)."""
    saved = dict(cluster.env)
    cluster.env.update(env or {})
    cluster.env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
    try:
        cluster.spawn(
            name,
            ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1"],
        )
    finally:
        cluster.env.clear()
        cluster.env.update(saved)


@contextlib.contextmanager
def celery_cluster(
    postgres_server: Any,
    redis: RedisServer,
    openai_base_url: str,
    home: Path,
    dag_ids: tuple[str, ...],
    *,
    env: dict[str, str] | None = None,
) -> Iterator[AirflowCluster]:
    """The CeleryExecutor cluster on a new database of ``postgres_server``: ``airflow db
    migrate`` as the owner, ``db grant`` to :data:`ENGINE_ROLE` (the engine URL every process
    gets), ``llm_openai_default`` pointing at ``openai_base_url``, the usual processes and the
    two :data:`WORKERS`; ``dag_ids`` parsed. Everything is stopped and dropped at the end."""
    database = postgres_server.create_database()
    password = secrets.token_hex(8)
    admin = (
        f"host={postgres_server.host} port={postgres_server.port} "
        f"user={postgres_server.user} password={postgres_server.password} dbname=postgres"
    )
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ENGINE_ROLE}")
        conn.execute(f"CREATE ROLE {ENGINE_ROLE} LOGIN PASSWORD '{password}'")
    role_url = (
        f"postgresql+psycopg://{ENGINE_ROLE}:{password}@{postgres_server.host}:"
        f"{postgres_server.port}/{database}"
    )
    env = {
        **celery_env(redis),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.celery.worker_hostname",
        **(env or {}),
    }
    cluster = prepare_cluster(home, postgres_server.url(database), engine_url=role_url, env=env)
    cluster.env["AIRFLOW_CONN_LLM_OPENAI_DEFAULT"] = json.dumps(
        {"conn_type": "workflow_engine_llm", "password": "test-key", "host": openai_base_url}
    )
    try:
        with cluster.explain_failure():
            cluster.migrate()  # as the owner: the engine URL names the role
            cluster.workflow_engine("db", "grant", ENGINE_ROLE)
            cluster.start_processes()
            for name in WORKERS:
                start_worker(cluster, name, {"WFE_WORKER_NAME": name})
            for dag_id in dag_ids:
                cluster.wait_for_dag(dag_id)
        yield cluster
    finally:
        cluster.stop()
        postgres_server.drop_database(database)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {ENGINE_ROLE}")
