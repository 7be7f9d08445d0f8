"""The Persistence port over SQL (PostgreSQL in production, SQLite embedded), SQLAlchemy Core.

Behaves like :class:`~airflow_workflow_engine.persistence.memory.InMemoryPersistence`: the same
ordering, return values and errors. Transactions:

* ``with store.transaction():`` opens one connection and transaction for the calling thread;
  store calls made by that thread inside the block use it, nested blocks join it, and it
  commits (or rolls back) when the outermost block ends.
* A call outside any block runs in a short transaction of its own.
* Idempotency keys are claimed, completed and released in their own committed transaction
  on a separate connection, even inside a block (the claim must be visible to other
  dispatchers at once). SQLite has a single writer, so there, inside a block, they use a
  savepoint of the block's connection instead (waiting for a second connection would wait
  on ourselves); they then commit with the block.

Driver errors never escape: they become ``DatabaseUnavailableError``,
``MigrationsNotAppliedError`` or :class:`~.errors.DatabaseOperationError`, after the
transaction was rolled back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Table,
    bindparam,
    delete,
    exc,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from airflow_workflow_engine.definitions.annotations import Actor
from airflow_workflow_engine.errors import (
    IdempotencyInProgressError,
    MigrationsNotAppliedError,
    RunNotFoundError,
    StageExistsError,
    WorkflowEngineError,
)
from airflow_workflow_engine.kernel.records import (
    AnnotationRecord,
    IdempotencyRecord,
    LogRecord,
    OutboxEvent,
    RunRecord,
    StageRecord,
)
from airflow_workflow_engine.kernel.status import Status
from airflow_workflow_engine.persistence.sql.engine import (
    BEGIN_MODE_OPTION,
    EngineSource,
    describe_url,
    make_engine,
    set_current_connection,
)
from airflow_workflow_engine.persistence.sql.errors import MIGRATE_HINT, translate_error
from airflow_workflow_engine.persistence.sql.tables import (
    UTCDateTime,
    annotations_table,
    idempotency_keys,
    outbox_events,
    run_and_stage_ai_sums,
    workflow_logs,
    workflow_runs,
    workflow_stages,
)

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.ports import Persistence

__all__ = ["SqlPersistence"]

_DB_ERRORS = (exc.DBAPIError, exc.TimeoutError)
_IN_PROGRESS = "in_progress"
_COMPLETED = "completed"
#: How often acquire_idempotency retries when a key is released while it looks at it.
_ACQUIRE_ATTEMPTS = 5


def _columns(table: Table) -> list[Any]:
    """The columns that are record fields (not the ``pk`` that keeps insertion order)."""
    return [c for c in table.c if c.name != "pk"]


# Hot statements, built once with bound parameters and given their values at execution:
# SQLAlchemy then finds the compiled SQL in its cache instead of building and keying a new
# statement from the values each time (most of a stage completion's CPU went there). An
# UPDATE without .values() SETs the columns named in the parameters.
_R, _S, _E = workflow_runs, workflow_stages, outbox_events
_RUN = select(_R).where(_R.c.id == bindparam("w_run"))
_RUN_FOR_UPDATE = _RUN.with_for_update()  # rendered as nothing on SQLite
_STAGE = select(_S).where(
    _S.c.workflow_run_id == bindparam("w_run"), _S.c.stage_id == bindparam("w_stage")
)
_UPDATE_RUN = update(_R).where(_R.c.id == bindparam("w_run"))
_UPDATE_STAGE = update(_S).where(
    _S.c.workflow_run_id == bindparam("w_run"), _S.c.stage_id == bindparam("w_stage")
)
#: The UPDATE locks the run row until commit: concurrent appenders for the same run queue
#: up there and each sees the sequence the previous one committed.
_BUMP = (
    update(_R).where(_R.c.id == bindparam("w_run")).values(event_sequence=_R.c.event_sequence + 1)
)
_EVENT_COLUMNS = [c.name for c in _columns(_E)]
_UPDATE_RUN_RETURNING = _UPDATE_RUN.returning(*_R.c)
_UPDATE_STAGE_RETURNING = _UPDATE_STAGE.returning(*_S.c)


def _bump(changed: tuple[str, ...]) -> Any:
    """The sequence bump, also SETting the ``changed`` run columns (from ``c_<name>``)."""
    if not changed:
        return _BUMP
    extra = {name: bindparam(f"c_{name}", type_=_R.c[name].type) for name in changed}
    return _BUMP.values(**extra)


def _append_in_one(changed: tuple[str, ...] = ()) -> Any:
    """``WITH seq AS (UPDATE runs ... RETURNING event_sequence) INSERT INTO outbox_events
    SELECT ..., seq.event_sequence FROM seq RETURNING sequence`` (PostgreSQL): one statement,
    and nothing is inserted when the run does not exist."""
    seq = _bump(changed).returning(_R.c.event_sequence).cte("seq")
    columns = [
        seq.c.event_sequence
        if name == "sequence"
        else bindparam(f"p_{name}", type_=_E.c[name].type)
        for name in _EVENT_COLUMNS
    ]
    return insert(_E).from_select(_EVENT_COLUMNS, select(*columns)).returning(_E.c.sequence)


#: Per set of run columns changed along (``append_event``'s ``run_changes``): few distinct.
_APPEND_IN_ONE: dict[tuple[str, ...], Any] = {(): _append_in_one()}

#: The trigger of migration 0005 (SQLite): an event's INSERT advances its run's sequence.
SQLITE_SEQUENCE_TRIGGER = "wfe_outbox_events_advance_run_sequence"
#: ``INSERT INTO outbox_events SELECT ..., event_sequence + 1 FROM runs WHERE id = :w_run
#: RETURNING sequence`` (SQLite with that trigger): one statement, nothing inserted when the
#: run does not exist. Only inside a write transaction (``BEGIN IMMEDIATE`` holds the lock).
_APPEND_BY_TRIGGER = (
    insert(_E)
    .from_select(
        _EVENT_COLUMNS,
        select(
            *(
                (_R.c.event_sequence + 1)
                if name == "sequence"
                else bindparam(f"p_{name}", type_=_E.c[name].type)
                for name in _EVENT_COLUMNS
            )
        ).where(_R.c.id == bindparam("w_run")),
    )
    .returning(_E.c.sequence)
)
_BUMP_RETURNING_WITH: dict[tuple[str, ...], Any] = {(): _BUMP.returning(_R.c.event_sequence)}
_RUN_LABELS = [f"r_{c.name}" for c in _R.c]
_STAGE_LABELS = [f"s_{c.name}" for c in _S.c]


def _db(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _values(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _db(v) for k, v in record.items()}


class SqlPersistence:
    """Runs, stages, logs, outbox, idempotency keys and annotations in ``wfe_`` tables.

    ``url_or_engine`` is a SQLAlchemy URL (``sqlite:////path/engine.db``,
    ``postgresql://user:pw@host/db``; ``postgres://`` and ``postgresql://`` use psycopg 3)
    or an ``Engine``. ``create_tables=True`` applies the migrations on construction; otherwise
    run :func:`~airflow_workflow_engine.persistence.sql.migrate.migrate` (or
    ``airflow db migrate``) first.
    """

    def __init__(
        self,
        url_or_engine: EngineSource,
        *,
        create_tables: bool = False,
    ) -> None:
        self._engine = make_engine(url_or_engine)
        self._owns_engine = not isinstance(url_or_engine, Engine)
        self._dialect = self._engine.dialect.name
        self._local = threading.local()
        #: UPDATE ... RETURNING the row: one statement instead of an UPDATE and a SELECT.
        self._returning = self._dialect in ("postgresql", "sqlite")
        self._if_absent: dict[str, Any] = {}
        #: SQLite: whether migration 0005's sequence trigger exists (None: not looked up yet).
        self._has_sequence_trigger: bool | None = None
        t = workflow_stages
        self._stages_of_run = (
            select(t)
            .where(t.c.workflow_run_id == bindparam("w_run"))
            .order_by(t.c.stage_number, self._text_order(t.c.stage_id))
        )
        # The run's row joined to its stages' rows: one statement where the kernel read the
        # run (locked) and then its stages.
        with_stages = (
            select(
                *(c.label(n) for c, n in zip(_R.c, _RUN_LABELS, strict=True)),
                *(c.label(n) for c, n in zip(t.c, _STAGE_LABELS, strict=True)),
            )
            .select_from(_R.outerjoin(t, t.c.workflow_run_id == _R.c.id))
            .where(_R.c.id == bindparam("w_run"))
            .order_by(t.c.stage_number, self._text_order(t.c.stage_id))
        )
        self._run_with_stages = with_stages
        self._run_with_stages_for_update = with_stages.with_for_update(of=_R)
        # The same, locked, with the run's and a stage's AI totals from the ledger's table
        # (one row, joined to each): the kernel's outcome transaction in one read.
        sums = run_and_stage_ai_sums().subquery("ai")
        self._run_with_stages_and_ai_sums = (
            with_stages.add_columns(*sums.c)
            .join_from(_R, sums, literal(True))
            .with_for_update(of=_R)
        )
        if create_tables:
            from airflow_workflow_engine.persistence.sql.migrate import migrate

            migrate(self._engine)

    def __repr__(self) -> str:
        return f"SqlPersistence({describe_url(self._engine.url)})"

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Closes the connection pool (when the store created the engine)."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> SqlPersistence:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_schema(self) -> None:
        """Raises ``MigrationsNotAppliedError`` unless the tables are at the newest revision."""
        from airflow_workflow_engine.persistence.sql.migrate import (
            HEAD_REVISION,
            current_revision,
        )

        current = current_revision(self._engine)
        if current != HEAD_REVISION:
            state = "missing" if current is None else f"at revision {current}"
            raise MigrationsNotAppliedError(
                f"The workflow engine's tables in the {describe_url(self._engine.url)} are "
                f"{state}, expected revision {HEAD_REVISION}. {MIGRATE_HINT}"
            )

    # -- transactions ----------------------------------------------------------------------
    def _current(self) -> Connection | None:
        conn: Connection | None = getattr(self._local, "conn", None)
        return conn

    def _translate(self, err: BaseException, *, connecting: bool = False) -> WorkflowEngineError:
        return translate_error(err, self._engine.url, connecting=connecting)

    @contextmanager
    def _own_transaction(self, *, write: bool) -> Iterator[Connection]:
        try:
            conn = self._engine.connect()
        except _DB_ERRORS as err:
            raise self._translate(err, connecting=True) from err
        try:
            with conn:
                if self._dialect == "sqlite":
                    mode = "IMMEDIATE" if write else "DEFERRED"
                    conn.execution_options(**{BEGIN_MODE_OPTION: mode})
                elif not write and self._dialect == "postgresql":
                    # A read outside any transaction is one statement: in autocommit it
                    # is one round trip instead of three (BEGIN, SELECT, COMMIT).
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                with conn.begin():
                    yield conn
        except _DB_ERRORS as err:
            raise self._translate(err) from err

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[Connection]:
        """The thread's open transaction, or a short one of its own."""
        outer = self._current()
        if outer is None:
            with self._own_transaction(write=write) as conn:
                yield conn
            return
        try:
            yield outer
        except _DB_ERRORS as err:
            raise self._translate(err) from err

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._current() is not None:
            yield
            return
        with self._own_transaction(write=True) as conn:
            self._local.conn = conn
            set_current_connection(self._engine, conn)
            try:
                yield
            finally:
                self._local.conn = None
                set_current_connection(self._engine, None)

    # -- helpers ---------------------------------------------------------------------------
    def _text_order(self, column: ColumnElement[str]) -> ColumnElement[str]:
        """Orders strings by code point, like Python (PostgreSQL would use the locale)."""
        return column.collate("C") if self._dialect == "postgresql" else column

    def _insert_if_absent(self, conn: Connection, table: Table, values: dict[str, Any]) -> bool:
        """Inserts a row unless it violates a unique constraint; ``True`` if inserted.

        ``ON CONFLICT DO NOTHING`` instead of catching the violation keeps an enclosing
        PostgreSQL transaction usable.
        """
        if self._dialect == "postgresql":
            # RETURNING, not rowcount: SQLAlchemy may add its own RETURNING, hiding rowcount.
            pg_stmt = self._if_absent.get(table.name)
            if pg_stmt is None:
                pg_stmt = self._if_absent[table.name] = (
                    postgresql.insert(table).on_conflict_do_nothing().returning(literal(1))
                )
            return conn.execute(pg_stmt, values).first() is not None
        if self._dialect == "sqlite":
            lite_stmt = self._if_absent.get(table.name)
            if lite_stmt is None:
                lite_stmt = self._if_absent[table.name] = sqlite.insert(
                    table
                ).on_conflict_do_nothing()
            return conn.execute(lite_stmt, values).rowcount == 1
        try:
            with conn.begin_nested():
                conn.execute(insert(table).values(values))
        except exc.IntegrityError:
            return False
        return True

    @staticmethod
    def _changes(table: Table, changes: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(changes) - set(table.c.keys()) | ({"pk"} & set(changes)))
        if unknown:
            raise ValueError(f"{table.name} has no field(s) {', '.join(unknown)}")
        return _values(changes)

    # -- runs ------------------------------------------------------------------------------
    def insert_run(self, run: RunRecord) -> None:
        with self._tx() as conn:
            if not self._insert_if_absent(conn, workflow_runs, _values(run.model_dump())):
                raise ValueError(f"run {run.id} exists")

    def _select_run(self, conn: Connection, workflow_run_id: str) -> RunRecord | None:
        row = conn.execute(_RUN, {"w_run": workflow_run_id}).mappings().one_or_none()
        return None if row is None else RunRecord.model_validate(dict(row))

    def get_run(self, workflow_run_id: str, *, for_update: bool = False) -> RunRecord | None:
        query = _RUN_FOR_UPDATE if for_update else _RUN
        with self._tx(write=for_update) as conn:
            row = conn.execute(query, {"w_run": workflow_run_id}).mappings().one_or_none()
        return None if row is None else RunRecord.model_validate(dict(row))

    def get_run_with_stages(
        self, workflow_run_id: str, *, for_update: bool = False
    ) -> tuple[RunRecord | None, list[StageRecord]]:
        query = self._run_with_stages_for_update if for_update else self._run_with_stages
        with self._tx(write=for_update) as conn:
            rows = conn.execute(query, {"w_run": workflow_run_id}).all()
        if not rows:
            return None, []
        return self._run_and_stages(rows)

    @staticmethod
    def _run_and_stages(rows: Sequence[Any]) -> tuple[RunRecord, list[StageRecord]]:
        """The run and its stages from the rows of the run joined to its stages."""
        first = rows[0]
        run = RunRecord.model_validate({c.name: first[i] for i, c in enumerate(_R.c)})
        width = len(_RUN_LABELS)
        stages = [
            StageRecord.model_validate({c.name: row[width + i] for i, c in enumerate(_S.c)})
            for row in rows
            if row[width] is not None  # the outer join's row of a run without stages
        ]
        return run, stages

    def get_run_with_stages_and_ai_sums(
        self, workflow_run_id: str, stage_id: str
    ) -> tuple[RunRecord | None, list[StageRecord], tuple[Any, ...]]:
        """``get_run_with_stages(workflow_run_id, for_update=True)`` and, in the same
        statement, the ledger's ``run_and_stage_ai_sums`` of the run and ``stage_id`` (for a
        ledger on this store's engine: ``SqlLedger.totals_from_sums`` reads them)."""
        params = {"w_run": workflow_run_id, "w_stage": stage_id}
        with self._tx() as conn:
            rows = conn.execute(self._run_with_stages_and_ai_sums, params).all()
        if not rows:
            return None, [], ()
        run, stages = self._run_and_stages(rows)
        return run, stages, tuple(rows[0][-4:])

    def get_run_by_idempotency_key(self, key: str) -> RunRecord | None:
        query = (
            select(workflow_runs)
            .where(workflow_runs.c.idempotency_key == key)
            .order_by(workflow_runs.c.created_at.desc())
            .limit(1)
        )
        with self._tx(write=False) as conn:
            row = conn.execute(query).mappings().one_or_none()
        return None if row is None else RunRecord.model_validate(dict(row))

    def update_run(self, workflow_run_id: str, **changes: Any) -> RunRecord:
        values = self._changes(workflow_runs, changes)
        with self._tx() as conn:
            params = {"w_run": workflow_run_id, **values}
            if values and self._returning:
                stmt = _UPDATE_RUN_RETURNING
                row = conn.execute(stmt, params).mappings().one_or_none()
                if row is None:
                    raise RunNotFoundError(workflow_run_id)
                return RunRecord.model_validate(dict(row))
            if values:
                conn.execute(_UPDATE_RUN, params)
            run = self._select_run(conn, workflow_run_id)
            if run is None:
                raise RunNotFoundError(workflow_run_id)
            return run

    def list_runs(
        self,
        *,
        status: Status | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        t = workflow_runs
        query = select(t)
        if status is not None:
            query = query.where(t.c.status == _db(status))
        if workflow_id is not None:
            query = query.where(t.c.workflow_id == workflow_id)
        query = query.order_by(t.c.priority.desc(), t.c.created_at, self._text_order(t.c.id)).limit(
            limit
        )
        with self._tx(write=False) as conn:
            rows = conn.execute(query).mappings().all()
        return [RunRecord.model_validate(dict(r)) for r in rows]

    # -- stages ----------------------------------------------------------------------------
    def insert_stage(self, stage: StageRecord) -> None:
        with self._tx() as conn:
            if not self._insert_if_absent(conn, workflow_stages, _values(stage.model_dump())):
                raise StageExistsError(stage.workflow_run_id, stage.stage_id)

    def get_stage(self, workflow_run_id: str, stage_id: str) -> StageRecord | None:
        with self._tx(write=False) as conn:
            params = {"w_run": workflow_run_id, "w_stage": stage_id}
            row = conn.execute(_STAGE, params).mappings().one_or_none()
        return None if row is None else StageRecord.model_validate(dict(row))

    def list_stages(self, workflow_run_id: str) -> list[StageRecord]:
        with self._tx(write=False) as conn:
            rows = conn.execute(self._stages_of_run, {"w_run": workflow_run_id}).mappings().all()
        return [StageRecord.model_validate(dict(r)) for r in rows]

    def update_stage(self, workflow_run_id: str, stage_id: str, **changes: Any) -> StageRecord:
        values = self._changes(workflow_stages, changes)
        with self._tx() as conn:
            params = {"w_run": workflow_run_id, "w_stage": stage_id, **values}
            if values and self._returning:
                stmt = _UPDATE_STAGE_RETURNING
                row = conn.execute(stmt, params).mappings().one_or_none()
            else:
                if values:
                    conn.execute(_UPDATE_STAGE, params)
                row = conn.execute(_STAGE, params).mappings().one_or_none()
            if row is None:
                raise KeyError(f"stage {stage_id} of run {workflow_run_id} does not exist")
            return StageRecord.model_validate(dict(row))

    def delete_stages(self, workflow_run_id: str, stage_ids: Sequence[str]) -> int:
        if not stage_ids:
            return 0
        t = workflow_stages
        with self._tx() as conn:
            result = conn.execute(
                delete(t).where(
                    t.c.workflow_run_id == workflow_run_id, t.c.stage_id.in_(set(stage_ids))
                )
            )
            return int(result.rowcount)

    def list_due_suspended_stages(
        self,
        now: datetime,
        *,
        limit: int = 10,
        workflow_run_id: str | None = None,
        stage_id: str | None = None,
    ) -> list[StageRecord]:
        t = workflow_stages
        poll = t.c.next_poll_at
        query = select(t).where(
            t.c.status == Status.SUSPENDED.value, or_(poll.is_(None), poll <= now)
        )
        if workflow_run_id is not None:
            query = query.where(t.c.workflow_run_id == workflow_run_id)
        if stage_id is not None:
            query = query.where(t.c.stage_id == stage_id)
        query = query.order_by(
            func.coalesce(poll, literal(now, UTCDateTime())),
            self._text_order(t.c.workflow_run_id),
            self._text_order(t.c.stage_id),
        ).limit(limit)
        with self._tx(write=False) as conn:
            rows = conn.execute(query).mappings().all()
        return [StageRecord.model_validate(dict(r)) for r in rows]

    def earliest_suspended_poll_at(self) -> datetime | None:
        t = workflow_stages
        query = select(func.min(t.c.next_poll_at)).where(t.c.status == Status.SUSPENDED.value)
        with self._tx(write=False) as conn:
            value: datetime | None = conn.execute(query).scalar_one_or_none()
        return value

    # -- logs ------------------------------------------------------------------------------
    def insert_logs(self, logs: Sequence[LogRecord]) -> None:
        if not logs:
            return
        rows = [_values(log.model_dump()) for log in logs]
        with self._tx() as conn:
            if self._dialect in ("postgresql", "sqlite"):
                # Same id again replaces the row (as the in-memory store does), in place.
                stmt = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(
                    workflow_logs
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=[workflow_logs.c.id],
                    set_={c.name: stmt.excluded[c.name] for c in _columns(workflow_logs)},
                )
                conn.execute(stmt, rows)
            else:
                conn.execute(insert(workflow_logs), rows)

    def list_logs(self, workflow_run_id: str, stage_id: str | None = None) -> list[LogRecord]:
        t = workflow_logs
        query = select(*_columns(t)).where(t.c.workflow_run_id == workflow_run_id)
        if stage_id is not None:
            query = query.where(t.c.stage_id == stage_id)
        with self._tx(write=False) as conn:
            rows = conn.execute(query.order_by(t.c.pk)).mappings().all()
        return [LogRecord.model_validate(dict(r)) for r in rows]

    # -- outbox ----------------------------------------------------------------------------
    def append_event(
        self,
        workflow_run_id: str,
        type: str,
        payload: dict[str, Any],
        *,
        occurred_at: datetime,
        causation_id: str | None = None,
        run_changes: Mapping[str, Any] | None = None,
    ) -> OutboxEvent:
        changes = self._changes(workflow_runs, run_changes or {})
        changes.pop("event_sequence", None)
        changed = tuple(sorted(changes))
        extra = {f"c_{k}": v for k, v in changes.items()}
        event = OutboxEvent(
            id=uuid.uuid4().hex,
            workflow_run_id=workflow_run_id,
            sequence=1,  # the run's next one, below
            type=type,
            payload=payload,
            causation_id=causation_id,
            occurred_at=occurred_at,
        )
        values = _values(event.model_dump())
        with self._tx() as conn:
            if self._dialect == "postgresql":
                params = {f"p_{k}": v for k, v in values.items()}
                params["w_run"] = workflow_run_id
                stmt = _APPEND_IN_ONE.get(changed)
                if stmt is None:
                    stmt = _APPEND_IN_ONE[changed] = _append_in_one(changed)
                sequence = conn.execute(stmt, {**params, **extra}).scalar_one_or_none()
                if sequence is None:
                    raise RunNotFoundError(workflow_run_id)
                return event.model_copy(update={"sequence": sequence})
            params = {"w_run": workflow_run_id, **extra}
            if not changed and self._sequence_trigger(conn):
                params.update((f"p_{k}", v) for k, v in values.items())
                sequence = conn.execute(_APPEND_BY_TRIGGER, params).scalar_one_or_none()
                if sequence is None:
                    raise RunNotFoundError(workflow_run_id)
                return event.evolve(sequence=sequence)
            if self._returning:
                bump = _BUMP_RETURNING_WITH.get(changed)
                if bump is None:
                    bump = _BUMP_RETURNING_WITH[changed] = _bump(changed).returning(
                        workflow_runs.c.event_sequence
                    )
                sequence = conn.execute(bump, params).scalar_one_or_none()
                if sequence is None:
                    raise RunNotFoundError(workflow_run_id)
            else:
                if conn.execute(_bump(changed), params).rowcount == 0:
                    raise RunNotFoundError(workflow_run_id)
                sequence = conn.execute(
                    select(workflow_runs.c.event_sequence).where(
                        workflow_runs.c.id == workflow_run_id
                    )
                ).scalar_one()
            values["sequence"] = sequence
            conn.execute(insert(outbox_events), values)
            return event.model_copy(update={"sequence": sequence})

    def _sequence_trigger(self, conn: Connection) -> bool:
        """Whether this SQLite database has migration 0005's trigger (looked up once)."""
        found = self._has_sequence_trigger
        if found is None:
            found = self._dialect == "sqlite" and (
                conn.execute(
                    text("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :n"),
                    {"n": SQLITE_SEQUENCE_TRIGGER},
                ).first()
                is not None
            )
            self._has_sequence_trigger = found
        return found

    @staticmethod
    def _events(rows: Sequence[RowMapping]) -> list[OutboxEvent]:
        return [OutboxEvent.model_validate(dict(r)) for r in rows]

    def list_events(self, workflow_run_id: str) -> list[OutboxEvent]:
        t = outbox_events
        query = select(t).where(t.c.workflow_run_id == workflow_run_id).order_by(t.c.sequence)
        with self._tx(write=False) as conn:
            return self._events(conn.execute(query).mappings().all())

    def list_unpublished_events(
        self, limit: int = 100, workflow_run_id: str | None = None
    ) -> list[OutboxEvent]:
        t = outbox_events
        query = select(t).where(t.c.published_at.is_(None), t.c.dlq_at.is_(None))
        if workflow_run_id is not None:
            query = query.where(t.c.workflow_run_id == workflow_run_id)
        query = query.order_by(
            t.c.occurred_at, self._text_order(t.c.workflow_run_id), t.c.sequence
        ).limit(limit)
        with self._tx(write=False) as conn:
            return self._events(conn.execute(query).mappings().all())

    def _update_event(self, event_id: str, **changes: Any) -> None:
        with self._tx() as conn:
            result = conn.execute(
                update(outbox_events).where(outbox_events.c.id == event_id).values(changes)
            )
            if result.rowcount == 0:
                raise KeyError(event_id)

    def mark_event_published(self, event_id: str, at: datetime) -> None:
        self._update_event(event_id, published_at=at)

    def mark_events_published(self, event_ids: Sequence[str], at: datetime) -> None:
        wanted = set(event_ids)
        if not wanted:
            return
        t = outbox_events
        with self._tx() as conn:
            # One statement for the whole batch, instead of a transaction per event.
            stmt = update(t).where(t.c.id.in_(wanted)).values(published_at=at)
            if self._returning:
                found = set(conn.execute(stmt.returning(t.c.id)).scalars())
                if found != wanted:
                    raise KeyError(sorted(wanted - found)[0])
            elif conn.execute(stmt).rowcount != len(wanted):
                missing = wanted - set(
                    conn.execute(select(t.c.id).where(t.c.id.in_(wanted))).scalars()
                )
                raise KeyError(sorted(missing)[0])

    def record_event_failure(
        self, event_id: str, error: str, retry_count: int, dlq_at: datetime | None
    ) -> None:
        self._update_event(event_id, last_error=error, retry_count=retry_count, dlq_at=dlq_at)

    def list_dlq_events(
        self, limit: int = 100, workflow_run_id: str | None = None
    ) -> list[OutboxEvent]:
        t = outbox_events
        query = select(t).where(t.c.dlq_at.is_not(None))
        if workflow_run_id is not None:
            query = query.where(t.c.workflow_run_id == workflow_run_id)
        query = query.order_by(self._text_order(t.c.workflow_run_id), t.c.sequence).limit(limit)
        with self._tx(write=False) as conn:
            return self._events(conn.execute(query).mappings().all())

    def requeue_dlq_events(self, event_ids: Sequence[str]) -> int:
        if not event_ids:
            return 0
        t = outbox_events
        wanted = set(event_ids)
        with self._tx() as conn:
            found = set(conn.execute(select(t.c.id).where(t.c.id.in_(wanted))).scalars())
            missing = sorted(wanted - found)
            if missing:
                raise KeyError(missing[0])
            conn.execute(update(t).where(t.c.id.in_(wanted)).values(dlq_at=None, retry_count=0))
        return len(event_ids)

    # -- idempotency -----------------------------------------------------------------------
    @contextmanager
    def _idempotency_tx(self) -> Iterator[Connection]:
        outer = self._current()
        if outer is None or self._dialect != "sqlite":
            with self._own_transaction(write=True) as conn:
                yield conn
            return
        try:
            with outer.begin_nested():
                yield outer
        except _DB_ERRORS as err:
            raise self._translate(err) from err

    @staticmethod
    def _key_filter(key: str, command_type: str) -> list[ColumnElement[bool]]:
        t = idempotency_keys
        return [t.c.key == key, t.c.command_type == command_type]

    def acquire_idempotency(
        self, key: str, command_type: str, *, now: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        t = idempotency_keys
        claim = {"state": _IN_PROGRESS, "result": None, "created_at": now, "expires_at": expires_at}
        for _ in range(_ACQUIRE_ATTEMPTS):
            with self._idempotency_tx() as conn:
                values = {"key": key, "command_type": command_type, **claim}
                if self._insert_if_absent(conn, t, values):
                    return None
                row = (
                    conn.execute(
                        select(*_columns(t))
                        .where(*self._key_filter(key, command_type))
                        .with_for_update()
                    )
                    .mappings()
                    .one_or_none()
                )
                if row is None:  # released between our insert and our read: try again
                    continue
                existing = IdempotencyRecord.model_validate(dict(row))
                if existing.state == _COMPLETED:
                    return existing
                if existing.expires_at is None or existing.expires_at > now:
                    raise IdempotencyInProgressError(key, command_type)
                # The holder's claim expired (it is presumed dead): take it over.
                conn.execute(update(t).where(*self._key_filter(key, command_type)).values(claim))
                return None
        raise IdempotencyInProgressError(key, command_type)

    def complete_idempotency(self, key: str, command_type: str, result: Any) -> None:
        t = idempotency_keys
        with self._idempotency_tx() as conn:
            updated = conn.execute(
                update(t)
                .where(*self._key_filter(key, command_type))
                .values(state=_COMPLETED, result=result, expires_at=None)
            )
            if updated.rowcount == 0:
                raise KeyError((key, command_type))

    def release_idempotency(self, key: str, command_type: str) -> None:
        with self._idempotency_tx() as conn:
            conn.execute(delete(idempotency_keys).where(*self._key_filter(key, command_type)))

    # -- annotations -----------------------------------------------------------------------
    def insert_annotation(self, annotation: AnnotationRecord) -> bool:
        values = _values(annotation.model_dump(exclude={"actor"}))
        values.update(
            actor_kind=annotation.actor.kind,
            actor_id=annotation.actor.id,
            actor_version=annotation.actor.version,
        )
        with self._tx() as conn:
            return self._insert_if_absent(conn, annotations_table, values)

    def list_annotations(
        self,
        workflow_run_id: str,
        *,
        key_prefix: str | None = None,
        actor_id: str | None = None,
    ) -> list[AnnotationRecord]:
        t = annotations_table
        query = select(*_columns(t)).where(t.c.workflow_run_id == workflow_run_id)
        if key_prefix:
            # Not LIKE: SQLite's LIKE ignores case, and the prefix may hold % or _.
            query = query.where(func.substr(t.c.key, 1, len(key_prefix)) == key_prefix)
        if actor_id is not None:
            query = query.where(t.c.actor_id == actor_id)
        with self._tx(write=False) as conn:
            rows = conn.execute(query.order_by(t.c.pk)).mappings().all()
        return [self._annotation(dict(r)) for r in rows]

    @staticmethod
    def _annotation(row: dict[str, Any]) -> AnnotationRecord:
        actor = Actor(
            kind=row.pop("actor_kind"), id=row.pop("actor_id"), version=row.pop("actor_version")
        )
        return AnnotationRecord.model_validate({**row, "actor": actor})


if TYPE_CHECKING:

    def _conforms(store: SqlPersistence) -> Persistence:
        return store
