"""Counting what a SQL database sees: statements and client/server round trips.

:class:`SqlCounter` listens to one SQLAlchemy ``Engine`` (the benchmarks and the statement
budget tests use it):

* ``statements``: every SQL statement SQLAlchemy sends through a cursor
  (``before_cursor_execute``) except transaction control (SQLite's explicit ``BEGIN``,
  ``SAVEPOINT``/``RELEASE``), which counts under ``round_trips``;
* ``round_trips``: what the server answers on PostgreSQL (psycopg 3): each statement, the
  ``BEGIN`` psycopg sends before the first statement of a transaction, each ``COMMIT`` or
  ``ROLLBACK`` of a transaction that sent something (psycopg sends nothing for an idle one),
  and the pool's liveness ping on checkout when the engine has ``pool_pre_ping``. On SQLite
  (in-process, no server) it counts the same events: statements plus commits and rollbacks.

Per-label figures: ``with counter.label("job.execute"):`` attributes what runs inside to that
label (``counter.by_label``). Thread-safe, for counting one workload at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event

__all__ = ["Counts", "SqlCounter"]


@dataclass
class Counts:
    statements: int = 0
    round_trips: int = 0
    transactions: int = 0
    #: The statements' SQL, when the counter keeps it (``keep_sql=True``).
    sql: list[str] = field(default_factory=list)

    def add(self, other: Counts) -> None:
        self.statements += other.statements
        self.round_trips += other.round_trips
        self.transactions += other.transactions
        self.sql.extend(other.sql)


_CONTROL = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")


def _idle(dbapi_connection: Any) -> bool:
    """``True`` when a psycopg 3 connection has no transaction open (``None``: unknown)."""
    info = getattr(dbapi_connection, "info", None)
    status = getattr(info, "transaction_status", None)
    return status is not None and int(status) == 0  # pq.TransactionStatus.IDLE


class SqlCounter:
    """Counts statements and round trips on ``engine`` between ``start()`` and ``stop()``."""

    def __init__(self, engine: Engine, *, keep_sql: bool = False) -> None:
        self.engine = engine
        self.keep_sql = keep_sql
        self.total = Counts()
        self.by_label: dict[str, Counts] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._postgres = engine.dialect.name == "postgresql"
        self._ping = bool(getattr(engine.pool, "_pre_ping", False))
        self._listening = False

    # -- events ----------------------------------------------------------------------------
    def _bump(
        self, *, statements: int = 0, round_trips: int = 0, tx: int = 0, sql: str = ""
    ) -> None:
        label: str | None = getattr(self._local, "label", None)
        with self._lock:
            targets = [self.total]
            if label is not None:
                targets.append(self.by_label.setdefault(label, Counts()))
            for counts in targets:
                counts.statements += statements
                counts.round_trips += round_trips
                counts.transactions += tx
                if sql and self.keep_sql:
                    counts.sql.append(sql)

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        del cursor, args
        dbapi = conn.connection.dbapi_connection
        head = statement.lstrip()[:9].upper()
        if head.startswith(_CONTROL):
            self._bump(round_trips=1, tx=int(head.startswith("BEGIN")))
            return
        begin = 0
        if self._postgres and not getattr(dbapi, "autocommit", False) and _idle(dbapi):
            begin = 1  # psycopg sends BEGIN before the transaction's first statement
        self._bump(statements=1, round_trips=1 + begin, tx=begin, sql=statement)

    def _on_end(self, conn: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        if self._postgres and (getattr(dbapi, "autocommit", False) or _idle(dbapi)):
            return  # nothing was sent in this transaction: psycopg sends no COMMIT either
        self._bump(round_trips=1)

    def _on_checkout(self, *args: Any) -> None:
        del args
        if self._ping:
            self._bump(round_trips=1)

    # -- control ---------------------------------------------------------------------------
    def start(self) -> SqlCounter:
        if not self._listening:
            event.listen(self.engine, "before_cursor_execute", self._on_execute)
            event.listen(self.engine, "commit", self._on_end)
            event.listen(self.engine, "rollback", self._on_end)
            event.listen(self.engine.pool, "checkout", self._on_checkout)
            self._listening = True
        return self

    def stop(self) -> None:
        if self._listening:
            event.remove(self.engine, "before_cursor_execute", self._on_execute)
            event.remove(self.engine, "commit", self._on_end)
            event.remove(self.engine, "rollback", self._on_end)
            event.remove(self.engine.pool, "checkout", self._on_checkout)
            self._listening = False

    def __enter__(self) -> SqlCounter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.total = Counts()
            self.by_label = {}

    @contextmanager
    def label(self, name: str) -> Iterator[None]:
        """Attributes what this thread runs inside the block to ``name`` (nests: innermost)."""
        previous = getattr(self._local, "label", None)
        self._local.label = name
        try:
            yield
        finally:
            self._local.label = previous


def drive_run(
    kernel: Any,
    job_transport: Any,
    counter: SqlCounter,
    workflow_id: str,
    run_input: dict[str, Any],
    *,
    idempotency_key: str | None = None,
) -> str:
    """One whole run, counted per command: ``run.create``, ``run.claimPending``, then
    {dequeue, ``job.execute``, complete, ``run.transition``} until the queue is empty, then
    ``outbox.flush`` (the drive of ``benchmarks/kernel_lifecycle.py``). Returns the run id."""
    from airflow_workflow_engine.kernel.commands import (
        JobExecute,
        OutboxFlush,
        RunClaimPending,
        RunCreate,
        RunTransition,
    )

    with counter.label("run.create"):
        created = kernel.dispatch(
            RunCreate(workflow_id=workflow_id, input=run_input, idempotency_key=idempotency_key)
        )
    run_id: str = created.workflow_run_id
    with counter.label("run.claimPending"):
        kernel.dispatch(RunClaimPending(workflow_run_id=run_id, worker_id="counted"))
    while (job := job_transport.dequeue("counted")) is not None:
        with counter.label("job.execute"):
            kernel.dispatch(
                JobExecute(
                    workflow_run_id=job.workflow_run_id,
                    workflow_id=job.workflow_id,
                    stage_id=job.stage_id,
                    job_id=job.job_id,
                )
            )
        job_transport.complete(job.job_id)
        with counter.label("run.transition"):
            kernel.dispatch(RunTransition(workflow_run_id=job.workflow_run_id))
    with counter.label("outbox.flush"):
        kernel.dispatch(OutboxFlush())
    return run_id


def five_stage_workflow(workflow_id: str = "bench") -> Any:
    """``stage1 -> [stage2a || stage2b] -> stage3 -> stage4``, each ``x + 1``: the workload of
    ``benchmarks/kernel_lifecycle.py`` (and of the original's seed bench)."""
    from pydantic import BaseModel

    from airflow_workflow_engine.definitions.stage import define_stage
    from airflow_workflow_engine.definitions.workflow import WorkflowBuilder

    class X(BaseModel):
        x: int

    class Joined(BaseModel):
        stage2a: X
        stage2b: X

    def plus_one(stage_id: str) -> Any:
        return define_stage(id=stage_id, input=X, output=X, execute=lambda c: {"x": c.input.x + 1})

    stage3 = define_stage(
        id="stage3", input=Joined, output=X, execute=lambda c: {"x": c.input.stage2a.x + 1}
    )
    return (
        WorkflowBuilder(workflow_id, "Bench", None, input=X, output=X)
        .pipe(plus_one("stage1"))
        .parallel([plus_one("stage2a"), plus_one("stage2b")])
        .pipe(stage3)
        .pipe(plus_one("stage4"))
        .build()
    )
