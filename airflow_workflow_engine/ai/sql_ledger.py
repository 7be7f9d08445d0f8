"""The ledger in the ``wfe_ai_calls`` table (SQLAlchemy Core; PostgreSQL or SQLite).

Each :meth:`SqlLedger.record` is its own short, committed transaction (never joined to a
kernel transaction: a call's cost is a fact whatever happens to the stage afterwards) and is
idempotent per row id (``ON CONFLICT DO NOTHING``), so re-reading a batch's results does not
duplicate its rows. ``day`` is the UTC calendar day on both databases.

The same transaction adds a new row to its (day, model, provider, DAG) row of
``wfe_ai_cost_rollup`` (``INSERT ... ON CONFLICT DO UPDATE``; on PostgreSQL in the ledger
insert's own statement), so that table always equals the ledger's aggregate. Roll-ups over
those dimensions alone (the cost pages, ``airflow workflow-engine costs``) read it: the whole
UTC days of the window from the roll-up table, the partial first and last day from the ledger
(by its ``created_at`` index). Other roll-ups (per run, stage, topic...) are ``GROUP BY``
queries on the ledger, as is :meth:`SqlLedger.scan_rollup`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    Engine,
    Insert,
    RowMapping,
    bindparam,
    case,
    cast,
    delete,
    exc,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import Executable

from airflow_workflow_engine.ai.ledger import (
    LedgerEntry,
    RollupRow,
    day_of,
    money,
    normalize_group_by,
    sort_key,
)
from airflow_workflow_engine.persistence.sql.engine import (
    BEGIN_MODE_OPTION,
    EngineSource,
    current_connection,
    describe_url,
    make_engine,
)
from airflow_workflow_engine.persistence.sql.errors import translate_error
from airflow_workflow_engine.persistence.sql.tables import (
    ai_calls,
    ai_cost_rollup,
    run_and_stage_ai_sums,
)

__all__ = ["ROLLUP_DIMENSIONS", "SqlLedger"]

_DB_ERRORS = (exc.DBAPIError, exc.OperationalError)
_COLUMNS = [c.name for c in ai_calls.columns]
#: Roll-ups grouped by these dimensions only can be read from ``wfe_ai_cost_rollup``.
ROLLUP_DIMENSIONS = frozenset({"day", "model_key", "provider", "dag_id"})
_ROLLUP_KEY = ("day", "model_key", "provider", "dag_id")
_ROLLUP_SUMS = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost",
    "unpriced_calls",
)


_RUN_AND_STAGE = run_and_stage_ai_sums()


class SqlLedger:
    """:class:`~airflow_workflow_engine.ai.ledger.Ledger` over ``wfe_ai_calls``.

    ``url_or_engine``: a SQLAlchemy URL or an ``Engine``, normally the engine's own database
    (``SqlLedger(store.engine)`` shares a :class:`SqlPersistence`'s pool). The table comes
    with the engine's migrations (``airflow db migrate`` or ``persistence.sql.migrate``).
    """

    def __init__(self, url_or_engine: EngineSource) -> None:
        self._engine = make_engine(url_or_engine)
        self._owns_engine = not isinstance(url_or_engine, Engine)
        self._dialect = self._engine.dialect.name
        # Built once, values bound at execution: SQLAlchemy then reuses the compiled SQL.
        self._insert: Executable | None = None
        #: SQLite: the roll-up upsert (SQL, parameter order), run after an insert that added a
        #: row; compiled once, sent on the driver's connection.
        self._add_to_rollup: tuple[str, tuple[str, ...]] | None = None
        if self._dialect == "postgresql":
            self._insert = _insert_and_roll_up_postgresql()
        elif self._dialect == "sqlite":
            self._insert = sqlite.insert(ai_calls).on_conflict_do_nothing()
            upsert = _rollup_upsert(sqlite.insert(ai_cost_rollup)).compile(dialect=sqlite.dialect())
            self._add_to_rollup = (str(upsert), tuple(upsert.positiontup or ()))
        #: Other databases keep no roll-up table and scan the ledger.
        self._has_rollup = self._insert is not None

    def __repr__(self) -> str:
        return f"SqlLedger({describe_url(self._engine.url)})"

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Closes the connection pool (when the ledger created the engine)."""
        if self._owns_engine:
            self._engine.dispose()

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[Connection]:
        outer = None if write else current_connection(self._engine)
        if outer is not None:
            # A read while the kernel holds a transaction on the same engine (the outcome
            # transaction reads the totals): join it rather than open a second connection.
            # Writes never join: a call's cost commits on its own, whatever the stage does.
            try:
                yield outer
            except _DB_ERRORS as err:
                raise translate_error(err, self._engine.url) from err
            return
        try:
            conn = self._engine.connect()
        except _DB_ERRORS as err:
            raise translate_error(err, self._engine.url, connecting=True) from err
        try:
            with conn:
                if self._dialect == "sqlite":
                    mode = "IMMEDIATE" if write else "DEFERRED"
                    conn.execution_options(**{BEGIN_MODE_OPTION: mode})
                with conn.begin():
                    yield conn
        except _DB_ERRORS as err:
            raise translate_error(err, self._engine.url) from err

    # -- writing ---------------------------------------------------------------------------
    def record(self, entry: LedgerEntry) -> None:
        values = entry.model_dump()
        values["cost"] = None if entry.cost is None else float(entry.cost)
        with self._tx(write=True) as conn:
            if self._dialect == "postgresql":
                conn.execute(self._insert, {f"v_{k}": v for k, v in values.items()})  # type: ignore[arg-type]
            elif self._insert is not None:
                added = conn.execute(self._insert, values).rowcount
                if added and self._add_to_rollup is not None:
                    _add_to_rollup_sqlite(conn, self._add_to_rollup, _rollup_values(entry))
            elif not conn.execute(select(ai_calls.c.id).where(ai_calls.c.id == entry.id)).first():
                conn.execute(insert(ai_calls), values)

    def rebuild_rollup(self) -> int:
        """Recomputes ``wfe_ai_cost_rollup`` from every ledger row, in one transaction that
        holds off ledger writers; returns its row count. Only needed when something wrote
        ledger rows without it (a worker of a version before revision 0004 kept running
        after ``airflow db migrate``)."""
        if not self._has_rollup:
            raise NotImplementedError(f"no AI-cost roll-up table on {self._dialect}")
        c = ai_calls.c
        dims = [self._day(c.created_at), c.model_key, c.provider, func.coalesce(c.dag_id, "")]
        rows = select(
            *dims,
            func.count(),
            func.sum(case((c.status == "error", 1), else_=0)),
            func.sum(c.input_tokens),
            func.sum(c.output_tokens),
            func.sum(c.cached_tokens),
            func.coalesce(func.sum(c.cost), 0.0),
            func.sum(case((c.cost.is_(None), 1), else_=0)),
        ).group_by(*dims)
        with self._tx(write=True) as conn:
            if self._dialect == "postgresql":  # SQLite's BEGIN IMMEDIATE already does
                conn.execute(text("LOCK TABLE wfe_ai_calls IN SHARE MODE"))
            conn.execute(delete(ai_cost_rollup))
            conn.execute(insert(ai_cost_rollup).from_select([*_ROLLUP_KEY, *_ROLLUP_SUMS], rows))
            return int(conn.execute(select(func.count()).select_from(ai_cost_rollup)).scalar_one())

    def _day(self, created_at: ColumnElement[Any]) -> ColumnElement[Any]:
        """The UTC day of a timestamp, as a ``DATE`` (PostgreSQL) or ISO text (SQLite)."""
        if self._dialect == "postgresql":
            return cast(func.timezone(literal_column("'UTC'"), created_at), Date)
        return func.date(created_at)  # SQLite stores naive UTC timestamps

    def mark_failed(self, workflow_run_id: str, stage_id: str, attempt: int, failure: str) -> int:
        # ``failure`` is no roll-up dimension or sum: wfe_ai_cost_rollup stays as it is.
        c = ai_calls.c
        stmt = (
            update(ai_calls)
            .where(
                c.workflow_run_id == workflow_run_id,
                c.stage_id == stage_id,
                c.attempt == attempt,
                c.failure.is_(None),
            )
            .values(failure=failure)
        )
        with self._tx(write=True) as conn:
            return int(conn.execute(stmt).rowcount or 0)

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _filters(workflow_run_id: str | None, stage_id: str | None) -> list[ColumnElement[bool]]:
        filters: list[ColumnElement[bool]] = []
        if workflow_run_id is not None:
            filters.append(ai_calls.c.workflow_run_id == workflow_run_id)
        if stage_id is not None:
            filters.append(ai_calls.c.stage_id == stage_id)
        return filters

    def totals(self, workflow_run_id: str, stage_id: str | None = None) -> tuple[Decimal, int]:
        c = ai_calls.c
        stmt = select(
            func.sum(c.cost), func.coalesce(func.sum(c.input_tokens + c.output_tokens), 0)
        ).where(*self._filters(workflow_run_id, stage_id))
        with self._tx(write=False) as conn:
            cost, tokens = conn.execute(stmt).one()
        return money(cost), int(tokens)

    def run_and_stage_totals(
        self, workflow_run_id: str, stage_id: str
    ) -> tuple[tuple[Decimal, int], tuple[Decimal, int]]:
        """``(totals(run), totals(run, stage))`` in one query (the kernel's outcome
        transaction reads both)."""
        with self._tx(write=False) as conn:
            params = {"w_run": workflow_run_id, "w_stage": stage_id}
            sums = conn.execute(_RUN_AND_STAGE, params).one()
        return self.totals_from_sums(tuple(sums))

    @staticmethod
    def totals_from_sums(
        sums: tuple[Any, ...],
    ) -> tuple[tuple[Decimal, int], tuple[Decimal, int]]:
        """``run_and_stage_totals``' answer from the row of ``run_and_stage_ai_sums`` (which
        the store may have read along with the run, in the same transaction)."""
        run_cost, run_tokens, cost, stage_tokens = sums
        return (money(run_cost), int(run_tokens)), (money(cost), int(stage_tokens))

    def shares_engine_with(self, store: object) -> bool:
        """Whether ``store`` is on this ledger's engine (``SqlLedger(store.engine)``), so
        one statement can read the store's rows and the ledger's totals."""
        return getattr(store, "engine", None) is self._engine

    def spent(self, workflow_run_id: str, stage_id: str | None = None) -> Decimal:
        return self.totals(workflow_run_id, stage_id)[0]

    def _dimension(self, name: str) -> ColumnElement[Any]:
        if name != "day":
            return ai_calls.c[name]
        # Literal SQL (no bound parameters), so GROUP BY repeats the select's expression
        # exactly, as PostgreSQL requires.
        if self._dialect == "postgresql":
            utc = func.timezone(literal_column("'UTC'"), ai_calls.c.created_at)
            return func.to_char(utc, literal_column("'YYYY-MM-DD'"))
        return func.date(ai_calls.c.created_at)  # SQLite stores naive UTC timestamps

    def rollup(
        self,
        group_by: Sequence[str] = ("model_key",),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        workflow_run_id: str | None = None,
        dag_ids: Collection[str] | None = None,
    ) -> list[RollupRow]:
        dims = normalize_group_by(group_by)
        if (
            not self._has_rollup
            or workflow_run_id is not None
            or not ROLLUP_DIMENSIONS.issuperset(dims)
            or (dag_ids is not None and "" in dag_ids)
        ):
            return self.scan_rollup(
                dims, since=since, until=until, workflow_run_id=workflow_run_id, dag_ids=dag_ids
            )
        since = None if since is None else _utc(since)
        until = None if until is None else _utc(until)
        # Whole UTC days [first, end) from the roll-up table, the rest from the ledger.
        first = None if since is None else _day_from(since)
        end = None if until is None else until.date()
        if first is not None and end is not None and first >= end:
            return self.scan_rollup(dims, since=since, until=until, dag_ids=dag_ids)
        with self._tx(write=False) as conn:  # one connection for all parts
            parts = [self._read_rollup_table(conn, dims, first, end, dag_ids)]
            if since is not None and first is not None and since < _midnight(first):
                head = self._scan(conn, dims, since=since, until=_midnight(first), dag_ids=dag_ids)
                parts.append(head)
            if until is not None and end is not None and _midnight(end) < until:
                tail = self._scan(conn, dims, since=_midnight(end), until=until, dag_ids=dag_ids)
                parts.append(tail)
        return _merge(parts, dims)

    def _read_rollup_table(
        self,
        conn: Connection,
        dims: Sequence[str],
        first: date | None,
        end: date | None,
        dag_ids: Collection[str] | None,
    ) -> list[RollupRow]:
        t = ai_cost_rollup.c
        keys = [t[d] for d in dims]
        stmt = select(*keys, *(func.coalesce(func.sum(t[name]), 0) for name in _ROLLUP_SUMS))
        if first is not None:
            stmt = stmt.where(t.day >= first)
        if end is not None:
            stmt = stmt.where(t.day < end)
        if dag_ids is not None:
            stmt = stmt.where(t.dag_id.in_(sorted(set(dag_ids))))
        if keys:
            # In primary key order, which lets SQLite aggregate along the key's index.
            stmt = stmt.group_by(*(t[k] for k in _ROLLUP_KEY if k in dims))
        width = len(dims)
        result = []
        for row in conn.execute(stmt).all():
            calls, errors, tokens_in, tokens_out, cached, cost, unpriced = row[width:]
            if not calls:
                continue
            group = {
                # '' keys the calls made outside a DAG
                d: (row[i] or None) if d == "dag_id" else row[i]
                for i, d in enumerate(dims)
            }
            result.append(
                RollupRow(
                    group=group,
                    calls=int(calls),
                    errors=int(errors),
                    input_tokens=int(tokens_in),
                    output_tokens=int(tokens_out),
                    cached_tokens=int(cached),
                    cost=money(cost),
                    unpriced_calls=int(unpriced),
                )
            )
        return result

    def scan_rollup(
        self,
        group_by: Sequence[str] = ("model_key",),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        workflow_run_id: str | None = None,
        dag_ids: Collection[str] | None = None,
    ) -> list[RollupRow]:
        """:meth:`rollup` by a ``GROUP BY`` over the ledger rows, never the roll-up table."""
        dims = normalize_group_by(group_by)
        with self._tx(write=False) as conn:
            rows = self._scan(
                conn,
                dims,
                since=since,
                until=until,
                workflow_run_id=workflow_run_id,
                dag_ids=dag_ids,
            )
        return sorted(rows, key=lambda r: sort_key(r, dims))

    def _scan(
        self,
        conn: Connection,
        dims: Sequence[str],
        *,
        since: datetime | None,
        until: datetime | None,
        dag_ids: Collection[str] | None,
        workflow_run_id: str | None = None,
    ) -> list[RollupRow]:
        c = ai_calls.c
        keys = [self._dimension(d) for d in dims]
        stmt = select(
            *(key.label(f"g_{i}") for i, key in enumerate(keys)),
            func.count().label("calls"),
            func.coalesce(func.sum(case((c.status == "error", 1), else_=0)), 0).label("errors"),
            func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(c.cached_tokens), 0).label("cached_tokens"),
            func.sum(c.cost).label("cost"),
            func.coalesce(func.sum(case((c.cost.is_(None), 1), else_=0)), 0).label("unpriced"),
        ).where(*self._filters(workflow_run_id, None))
        if since is not None:
            stmt = stmt.where(c.created_at >= since)
        if until is not None:
            stmt = stmt.where(c.created_at < until)
        if dag_ids is not None:
            stmt = stmt.where(c.dag_id.in_(sorted(set(dag_ids))))
        if keys:
            stmt = stmt.group_by(*keys)
        rows = conn.execute(stmt).mappings().all()
        return [self._rollup_row(row, dims) for row in rows if row["calls"]]

    @staticmethod
    def _rollup_row(row: RowMapping | dict[str, Any], dims: Sequence[str]) -> RollupRow:
        group = {
            d: day_of(row[f"g_{i}"]) if d == "day" else row[f"g_{i}"] for i, d in enumerate(dims)
        }
        return RollupRow(
            group=group,
            calls=int(row["calls"]),
            errors=int(row["errors"]),
            input_tokens=int(row["input_tokens"]),
            output_tokens=int(row["output_tokens"]),
            cached_tokens=int(row["cached_tokens"]),
            cost=money(row["cost"]),
            unpriced_calls=int(row["unpriced"]),
        )

    def entries(
        self, workflow_run_id: str | None = None, stage_id: str | None = None
    ) -> list[LedgerEntry]:
        stmt = (
            select(ai_calls)
            .where(*self._filters(workflow_run_id, stage_id))
            .order_by(ai_calls.c.created_at)
        )
        with self._tx(write=False) as conn:
            rows = conn.execute(stmt).mappings().all()
        return [self._entry(row) for row in rows]

    @staticmethod
    def _entry(row: RowMapping) -> LedgerEntry:
        values = {name: row[name] for name in _COLUMNS}
        if values["cost"] is not None:
            values["cost"] = Decimal(repr(values["cost"]))
        return LedgerEntry.model_validate(values)


# -- the roll-up table -----------------------------------------------------------------------


def _rollup_upsert(stmt: Any) -> Insert:
    """``stmt`` (a dialect's ``insert(wfe_ai_cost_rollup)``) adding to the row of its key."""
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[ai_cost_rollup.c[k] for k in _ROLLUP_KEY],
        set_={name: ai_cost_rollup.c[name] + stmt.excluded[name] for name in _ROLLUP_SUMS},
    )


def _add_to_rollup_sqlite(
    conn: Connection, upsert: tuple[str, tuple[str, ...]], values: dict[str, Any]
) -> None:
    """Runs the precompiled upsert on the transaction's own sqlite3 connection: a few µs,
    where an ``execute`` through SQLAlchemy costs a fifth of a whole ledger write. Errors are
    wrapped as SQLAlchemy's, so callers translate them as any other."""
    sql, order = upsert
    params = tuple(values[name] for name in order)
    driver = conn.connection.driver_connection
    try:
        driver.execute(sql, params)  # type: ignore[union-attr]
    except sqlite3.Error as err:
        raise exc.DBAPIError.instance(sql, params, err, sqlite3.Error) from err


def _insert_and_roll_up_postgresql() -> Executable:
    """One statement (one round trip): insert the ledger row unless its id exists, and add
    the inserted row, if any, to its roll-up row. Values are bound as ``v_<column>``."""
    inserted = (
        postgresql.insert(ai_calls)
        .values({c.name: bindparam(f"v_{c.name}", type_=c.type) for c in ai_calls.columns})
        .on_conflict_do_nothing()
        .returning(*(ai_calls.c[name] for name in _ROLLUP_SOURCE))
        .cte("inserted")
    )
    i = inserted.c
    day = cast(func.timezone(literal_column("'UTC'"), i.created_at), Date)
    rows = select(
        day,
        i.model_key,
        i.provider,
        func.coalesce(i.dag_id, ""),
        literal(1),
        case((i.status == "error", 1), else_=0),
        i.input_tokens,
        i.output_tokens,
        i.cached_tokens,
        func.coalesce(i.cost, 0.0),
        case((i.cost.is_(None), 1), else_=0),
    )
    upsert = postgresql.insert(ai_cost_rollup).from_select([*_ROLLUP_KEY, *_ROLLUP_SUMS], rows)
    return _rollup_upsert(upsert).add_cte(inserted)


_ROLLUP_SOURCE = (
    "created_at",
    "model_key",
    "provider",
    "dag_id",
    "status",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost",
)


def _rollup_values(entry: LedgerEntry) -> dict[str, Any]:
    """What one ledger row adds to its roll-up row."""
    return {
        # As SQLAlchemy's Date stores a day on SQLite (the upsert is sent as driver SQL).
        "day": entry.created_at.astimezone(timezone.utc).date().isoformat(),
        "model_key": entry.model_key,
        "provider": entry.provider,
        "dag_id": entry.dag_id or "",
        "calls": 1,
        "errors": int(entry.status == "error"),
        "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens,
        "cached_tokens": entry.cached_tokens,
        "cost": 0.0 if entry.cost is None else float(entry.cost),
        "unpriced_calls": int(entry.cost is None),
    }


def _utc(value: datetime) -> datetime:
    """Naive times are UTC, as the ledger stores them."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)


def _day_from(since: datetime) -> date:
    """The first UTC day wholly at or after ``since``."""
    day = since.date()
    return day if since == _midnight(day) else day + timedelta(days=1)


def _merge(parts: list[list[RollupRow]], dims: Sequence[str]) -> list[RollupRow]:
    """Roll-up rows of disjoint time windows, summed per group."""
    if len(parts) == 1:
        return sorted(parts[0], key=lambda r: sort_key(r, dims))
    merged: dict[tuple[Any, ...], RollupRow] = {}
    for row in (r for part in parts for r in part):
        key = tuple(row.group[d] for d in dims)
        seen = merged.get(key)
        merged[key] = row if seen is None else _add(seen, row)
    return sorted(merged.values(), key=lambda r: sort_key(r, dims))


def _add(a: RollupRow, b: RollupRow) -> RollupRow:
    return RollupRow(
        group=a.group,
        calls=a.calls + b.calls,
        errors=a.errors + b.errors,
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        cost=money(a.cost + b.cost),
        unpriced_calls=a.unpriced_calls + b.unpriced_calls,
    )
