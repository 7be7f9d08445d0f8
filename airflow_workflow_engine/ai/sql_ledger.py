"""The ledger in the ``wfe_ai_calls`` table (SQLAlchemy Core; PostgreSQL or SQLite).

Each :meth:`SqlLedger.record` is its own short, committed transaction (never joined to a
kernel transaction: a call's cost is a fact whatever happens to the stage afterwards) and is
idempotent per row id (``ON CONFLICT DO NOTHING``), so re-reading a batch's results does not
duplicate its rows. Roll-ups are ``GROUP BY`` queries; ``day`` is the UTC calendar day on both
databases.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    bindparam,
    case,
    exc,
    func,
    insert,
    literal_column,
    select,
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
from airflow_workflow_engine.persistence.sql.tables import ai_calls

__all__ = ["SqlLedger"]

_DB_ERRORS = (exc.DBAPIError, exc.OperationalError)
_COLUMNS = [c.name for c in ai_calls.columns]


def _run_and_stage_totals() -> Any:
    """Built once with bound parameters: SQLAlchemy reuses the compiled SQL."""
    c = ai_calls.c
    tokens = c.input_tokens + c.output_tokens
    in_stage = c.stage_id == bindparam("w_stage")
    return select(
        func.sum(c.cost),
        func.coalesce(func.sum(tokens), 0),
        func.sum(case((in_stage, c.cost))),
        func.coalesce(func.sum(case((in_stage, tokens))), 0),
    ).where(c.workflow_run_id == bindparam("w_run"))


_RUN_AND_STAGE = _run_and_stage_totals()


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
        if self._dialect == "postgresql":
            self._insert = postgresql.insert(ai_calls).on_conflict_do_nothing()
        elif self._dialect == "sqlite":
            self._insert = sqlite.insert(ai_calls).on_conflict_do_nothing()

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
            if self._insert is not None:
                conn.execute(self._insert, values)
            elif not conn.execute(select(ai_calls.c.id).where(ai_calls.c.id == entry.id)).first():
                conn.execute(insert(ai_calls), values)

    def mark_failed(self, workflow_run_id: str, stage_id: str, attempt: int, failure: str) -> int:
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
            run_cost, run_tokens, cost, stage_tokens = conn.execute(_RUN_AND_STAGE, params).one()
        return (money(run_cost), int(run_tokens)), (money(cost), int(stage_tokens))

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
        with self._tx(write=False) as conn:
            rows = conn.execute(stmt).mappings().all()
        result = [self._rollup_row(row, dims) for row in rows if row["calls"]]
        return sorted(result, key=lambda r: sort_key(r, dims))

    @staticmethod
    def _rollup_row(row: RowMapping, dims: Sequence[str]) -> RollupRow:
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
