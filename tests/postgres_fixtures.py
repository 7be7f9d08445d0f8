"""A throwaway PostgreSQL server for the tests, from the machine's PostgreSQL binaries.

Register with ``pytest_plugins = ["tests.postgres_fixtures"]``. Fixtures:

* ``postgres_server`` (session): finds ``initdb``/``pg_ctl`` (``/usr/lib/postgresql/*/bin``,
  ``$WFE_PG_BINDIR`` or ``PATH``), installs the ``postgresql`` apt package when missing and
  allowed (root and ``CI=true`` or ``WFE_INSTALL_POSTGRES=1``), initialises a cluster in a
  temporary directory (as the ``postgres`` OS user when running as root: the server refuses
  root), starts it on 127.0.0.1 only, on a free port, and removes it at the end.
  Without PostgreSQL it skips the test, except under ``CI=true``, where it fails.
* ``postgres_url`` (function): a fresh, empty database on that server, dropped afterwards.

Speed: the cluster runs with fsync off, and new databases are copied from a template.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["PostgresServer", "postgres_server", "postgres_url", "start_postgres"]

_SUPERUSER = "wfe"
_START_TIMEOUT_SECONDS = 60


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _find_bindir() -> Path | None:
    candidates: list[str] = []
    if os.environ.get("WFE_PG_BINDIR"):
        candidates.append(os.environ["WFE_PG_BINDIR"])

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates += [str(Path(p).parent) for p in sorted(found, key=version, reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for directory in candidates:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    return None


def _install_postgres() -> None:
    """``apt-get install postgresql`` without creating or starting Debian's own cluster."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql-common"], check=True, env=env)
    conf = Path("/etc/postgresql-common/createcluster.conf")
    if conf.exists():
        text = conf.read_text()
        if "create_main_cluster = false" not in text:
            conf.write_text(text + "\ncreate_main_cluster = false\n")
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running throwaway cluster; ``url()`` gives SQLAlchemy URLs for its databases."""

    bindir: Path
    root: Path
    port: int
    password: str
    run_as: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    user: str = _SUPERUSER
    _templates: dict[str, str] = field(default_factory=dict)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return (
            f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )

    def _admin(self, sql: str) -> None:
        import psycopg

        conninfo = (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname=postgres"
        )
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql)

    def create_database(
        self, name: str | None = None, *, template: str = "template0", options: str = ""
    ) -> str:
        """Creates an empty database (a copy of ``template``) and returns its name.

        ``options`` are appended to CREATE DATABASE (``LOCALE_PROVIDER icu ICU_LOCALE 'en'``).
        """
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY {options}')
        return name

    def create_database_from(self, key: str, prepare: Callable[[str], None]) -> str:
        """A fresh database copied from a template that ``prepare(url)`` builds once.

        ``prepare`` must close its connections (a template cannot be copied while in use).
        """
        template = self._templates.get(key)
        if template is None:
            template = self.create_database(f"tpl_{key}_{uuid.uuid4().hex[:8]}")
            prepare(self.url(template))
            self._templates[key] = template
        return self.create_database(template=template)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
            check=False,
            capture_output=True,
            text=True,
        )

    def start(self) -> None:
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        result = self._pg_ctl(
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(_START_TIMEOUT_SECONDS),
            "start",
        )
        if result.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()}\n{log}")

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop")


def start_postgres(bindir: Path) -> PostgresServer:
    """initdb + start a cluster in a new temporary directory (caller stops and removes it)."""
    root = Path(tempfile.mkdtemp(prefix="wfe-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_urlsafe(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if run_as:
        shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    init = subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            _SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    pwfile.unlink()
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    last_error: Exception | None = None
    for _ in range(3):  # the free port may be taken between probing and binding
        server = PostgresServer(bindir, root, _free_port(), password, run_as)
        try:
            server.start()
            return server
        except RuntimeError as err:
            last_error = err
            time.sleep(0.2)
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"could not start PostgreSQL: {last_error}")


def _unavailable(reason: str) -> NoReturn:
    if _truthy("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _find_bindir()
    may_install = os.geteuid() == 0 and (_truthy("CI") or _truthy("WFE_INSTALL_POSTGRES"))
    if bindir is None and may_install and shutil.which("apt-get"):
        try:
            _install_postgres()
        except (OSError, subprocess.CalledProcessError) as err:
            _unavailable(f"installing it with apt-get failed: {err}")
        bindir = _find_bindir()
    if bindir is None:
        _unavailable(
            "no initdb/pg_ctl found (install the 'postgresql' package, set WFE_PG_BINDIR, or "
            "set WFE_INSTALL_POSTGRES=1 to let the tests install it as root)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    try:
        server = start_postgres(bindir)
    except (OSError, RuntimeError) as err:
        _unavailable(str(err))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test; dropped (connections and all) afterwards."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
