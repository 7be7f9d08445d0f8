"""The CeleryExecutor on top of the e2e cluster (``cluster.py``): Redis and Celery workers.

Kept apart from ``cluster.py`` so the cluster helper can move without this file changing:

- :func:`start_redis` / the ``redis_server`` fixture: Debian's ``redis-server`` (installed by
  ``scripts/test.sh`` as root) on 127.0.0.1 and a free port, no persistence, stopped at the end;
  without it the tests skip, except under ``CI=true``, where they fail;
- :func:`celery_env`: the settings that switch a cluster to the CeleryExecutor on that Redis
  (broker and result backend), to apply before its processes start;
- :func:`start_worker`: ``airflow celery worker`` with its own hostname, started and stopped by
  the cluster like its other processes (``cluster.kill(name)`` SIGKILLs one).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster import AirflowCluster, free_port

__all__ = [
    "RedisServer",
    "celery_env",
    "redis_server",
    "start_redis",
    "start_worker",
    "worker_hostname",
]


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
