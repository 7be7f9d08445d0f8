"""``airflow workflow-engine rerun`` and ``backfill-rerun``: rerun DAG runs from a stage.

A rerun is an Airflow *clear*: the task of the stage (the ``StageOperator`` task whose
``stage.id`` is the stage; in a DAG with ``WorkflowTaskGroup`` s, ``--from-stage`` may name the
group-prefixed task id ``<group_id>.<stage_id>``, and must when two groups have the stage)
and, unless ``--only``, every task downstream of it are cleared in the DAG run, and a finished
DAG run goes back to ``queued``, as ``airflow tasks clear`` and the UI's "Clear task,
downstream" do (``SerializedDAG.clear`` with the run's id, which calls
``clear_task_instances``). Nothing is written to the engine here: when the scheduler runs a
cleared stage task again, its operator sees that it was cleared and reruns the stage in the
kernel (``run.rerunStages``).

This runs in the CLI process, which may use Airflow's ORM (tasks and triggers may not).
"""

from __future__ import annotations

import graphlib
from argparse import Namespace
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.cli._common import (
    CommandError,
    cli_command,
    engine_url,
    iso,
    money_text,
    open_store,
    parse_when,
    render_table,
)
from airflow_workflow_engine.host.runs import is_stage_operator, is_stage_task, run_key

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.serialization.definitions.dag import SerializedDAG
    from rich.progress import Progress
    from sqlalchemy.orm import Session

    from airflow_workflow_engine.host.backfill import BackfillState, BackfillSummary
    from airflow_workflow_engine.kernel.records import RunRecord, StageRecord
    from airflow_workflow_engine.persistence.sql.store import SqlPersistence

__all__ = ["backfill_rerun", "rerun"]

#: How many names an error message lists at most.
_MAX_NAMES = 20


@dataclass
class TaskLine:
    """A task instance that the rerun clears, and its stage's row in the engine."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    stage_id: str | None
    stage: StageRecord | None = None

    @property
    def label(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"

    def stage_text(self) -> str:
        if self.stage_id is None:
            return "not a stage"
        if self.stage is None:
            return f"{self.stage_id}: no row yet"
        return f"{self.stage_id}: {self.stage.status.value}, attempt {self.stage.attempt}"


@dataclass
class RunPlan:
    """What a rerun clears in one DAG run."""

    run_id: str
    state: str | None
    task_ids: list[str] = field(default_factory=list)
    tasks: list[TaskLine] = field(default_factory=list)
    workflow_run: RunRecord | None = None
    #: Why nothing is cleared in this run (the stage is not in the DAG version it ran).
    skip: str | None = None


# -- the DAG, its runs and its stage tasks ----------------------------------------------------


@contextmanager
def _session() -> Iterator[Session]:
    from airflow.utils.session import create_session

    with create_session() as session:
        yield session


def _names(values: Sequence[str]) -> str:
    shown = ", ".join(values[:_MAX_NAMES])
    return shown + (f" (and {len(values) - _MAX_NAMES} more)" if len(values) > _MAX_NAMES else "")


class _Dag:
    """A DAG's serialized versions (from Airflow's database) and its stage tasks."""

    def __init__(self, session: Session, dag_id: str) -> None:
        from airflow.models.dag import DagModel
        from airflow.models.dagbag import DBDagBag
        from sqlalchemy import select

        self.dag_id = dag_id
        self._bag = DBDagBag(load_op_links=False)
        latest = self._bag.get_latest_version_of_dag(dag_id, session=session)
        if latest is None:
            known = list(session.scalars(select(DagModel.dag_id).order_by(DagModel.dag_id)))
            where = f"Known DAGs: {_names(known)}." if known else "Airflow knows no DAG yet."
            raise CommandError(f"DAG '{dag_id}' is not in Airflow's database. {where}")
        self.latest: SerializedDAG = latest
        self._parsed: dict[str, tuple[str | None, str]] | None = _parsed_stage_ids(latest)

    @property
    def exact(self) -> bool:
        """Whether stage ids come from the DAG file (else: the stage tasks' ids)."""
        return self._parsed is not None

    def for_run(self, session: Session, dag_run: DagRun) -> SerializedDAG:
        """The DAG version the run ran with (its tasks may differ from the latest ones)."""
        dag = self._bag.get_dag_for_run(dag_run, session=session)
        return dag if dag is not None else self.latest

    def stages(self, dag: SerializedDAG) -> dict[str, str]:
        """``{task_id: stage id}`` of the stage tasks of a version of the DAG."""
        if self._parsed is not None:
            return {t: s for t, (_, s) in self._parsed.items() if dag.has_task(t)}

        return {t.task_id: t.task_id for t in dag.tasks if is_stage_task(SimpleNamespace(task=t))}

    def group_of(self, task_id: str) -> str | None:
        """The ``WorkflowTaskGroup`` of a stage task (``None``: the DAG's own workflow)."""
        return (self._parsed or {}).get(task_id, (None, ""))[0]

    def task_of_stage(self, dag: SerializedDAG, stage_id: str) -> str | None:
        """The task of a stage id, or of a group-prefixed task id ``<group_id>.<stage_id>``."""
        stages = self.stages(dag)
        if stage_id in stages and self.group_of(stage_id) is not None:
            return stage_id
        matches = [t for t, sid in stages.items() if sid == stage_id]
        if len(matches) > 1:
            raise CommandError(
                f"DAG '{self.dag_id}': stage '{stage_id}' is in more than one workflow task "
                f"group ({_names(sorted(matches))}); pass one of these task ids to --from-stage."
            )
        return matches[0] if matches else None

    def _label(self, task_id: str, stage_id: str) -> str:
        return stage_id if self.group_of(task_id) is None else task_id

    def unknown_stage(self, stage_id: str) -> CommandError:
        order = _topological(self.latest)
        tasks = sorted(self.stages(self.latest).items(), key=lambda item: order.get(item[0], 0))
        stages = list(dict.fromkeys(self._label(t, stage) for t, stage in tasks))
        known = f"Its stages: {_names(stages)}." if stages else "It has no stage tasks."
        return CommandError(f"DAG '{self.dag_id}' has no stage '{stage_id}'. {known}")


def _get_dag_run(session: Session, dag_id: str, run_id: str) -> DagRun:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    query = select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    found: DagRun | None = session.scalar(query)
    if found is not None:
        return found
    newest = list(
        session.scalars(
            select(DagRun.run_id)
            .where(DagRun.dag_id == dag_id)
            .order_by(DagRun.run_after.desc())
            .limit(5)
        )
    )
    where = f"Its newest runs: {', '.join(newest)}." if newest else "It has no runs."
    raise CommandError(f"DAG '{dag_id}' has no DAG run '{run_id}'. {where}")


def _parsed_stage_ids(dag: SerializedDAG) -> dict[str, tuple[str | None, str]] | None:
    """``{task_id: (workflow group, stage id)}`` of the stage tasks, from the DAG file (the
    serialized DAG keeps neither the operators' stages nor the groups' kinds); ``None`` when
    the file cannot be read here."""
    from airflow.dag_processing.dagbag import DagBag

    fileloc = getattr(dag, "fileloc", None)
    if not fileloc or not Path(fileloc).is_file():
        return None
    try:
        bag = DagBag(dag_folder=fileloc, safe_mode=False, load_op_links=False)
    except Exception:
        return None
    parsed = bag.dags.get(dag.dag_id)
    if parsed is None:
        return None
    stage_tasks: list[Any] = [t for t in parsed.tasks if is_stage_operator(t)]
    return {t.task_id: (t.workflow_group, t.stage.id) for t in stage_tasks}


def _topological(dag: SerializedDAG) -> dict[str, int]:
    graph = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    return {
        task_id: i for i, task_id in enumerate(graphlib.TopologicalSorter(graph).static_order())
    }


def _task_ids_to_clear(
    session: Session, dag: SerializedDAG, run_id: str, task_id: str, only: bool
) -> list[str]:
    """The stage's task and, unless ``only``, every task downstream of it in this run."""
    ids = {task_id}
    if not only:
        from airflow.models.taskinstance import find_relevant_relatives

        relatives = find_relevant_relatives(
            [task_id], [], direction="downstream", dag=dag, run_id=run_id, session=session
        )
        ids.update(r if isinstance(r, str) else r[0] for r in relatives)
    order = _topological(dag)
    return sorted(ids, key=lambda t: (order.get(t, len(order)), t))


# -- planning and clearing ------------------------------------------------------------------


def _engine_rows(
    store: SqlPersistence, dag_id: str, run_id: str, group: str | None = None
) -> tuple[RunRecord | None, dict[str, StageRecord]]:
    """The workflow run of a DAG run (of its workflow task group ``group``) and its stage
    rows (none before a stage task ran)."""
    from airflow_workflow_engine.host.queries import find_run_by_key

    run = find_run_by_key(store, run_key(dag_id, run_id, group))
    if run is None:
        return None, {}
    return run, {s.stage_id: s for s in store.list_stages(run.id)}


def _plan_run(
    session: Session,
    store: SqlPersistence,
    dags: _Dag,
    dag_run: DagRun,
    *,
    stage_id: str,
    only: bool,
) -> RunPlan:
    dag = dags.for_run(session, dag_run)
    plan = RunPlan(
        run_id=dag_run.run_id,
        state=None if dag_run.state is None else str(dag_run.state),
    )
    task_id = dags.task_of_stage(dag, stage_id)
    if task_id is None:
        plan.skip = f"stage '{stage_id}' is not in the DAG version this run ran with"
        return plan
    plan.task_ids = _task_ids_to_clear(session, dag, dag_run.run_id, task_id, only)
    tis = dag.clear(task_ids=plan.task_ids, run_id=dag_run.run_id, dry_run=True, session=session)
    group = dags.group_of(task_id)
    plan.workflow_run, stage_rows = _engine_rows(store, dags.dag_id, dag_run.run_id, group)
    mapping = dags.stages(dag)
    order = _topological(dag)
    for ti in sorted(tis, key=lambda t: (order.get(t.task_id, len(order)), t.map_index)):
        sid = mapping.get(ti.task_id)
        same_run = sid is not None and dags.group_of(ti.task_id) == group
        plan.tasks.append(
            TaskLine(
                task_id=ti.task_id,
                map_index=ti.map_index,
                state=None if ti.state is None else str(ti.state),
                try_number=int(ti.try_number or 0),
                stage_id=sid,
                stage=stage_rows.get(sid) if sid and same_run else None,
            )
        )
    return plan


def _clear_run(session: Session, dags: _Dag, plan: RunPlan) -> tuple[int, str | None]:
    """Clears the planned tasks of one run; returns the count and the DAG run's state."""
    from airflow.utils.state import DagRunState

    dag_run = _get_dag_run(session, dags.dag_id, plan.run_id)
    count = dags.for_run(session, dag_run).clear(
        task_ids=plan.task_ids,
        run_id=plan.run_id,
        dag_run_state=DagRunState.QUEUED,
        session=session,
    )
    session.flush()
    session.refresh(dag_run)
    return int(count), None if dag_run.state is None else str(dag_run.state)


def _confirm(question: str) -> bool:
    """Asks like ``airflow tasks clear``; no answer (stdin closed) is a no."""
    from airflow.utils.helpers import ask_yesno

    try:
        return bool(ask_yesno(f"{question} [y/n]"))
    except EOFError:
        print("\nNo answer (stdin is closed): pass -y to clear without asking.")
        return False


def _note_guess(dags: _Dag) -> None:
    if not dags.exact:
        print(
            f"(The DAG file of '{dags.dag_id}' cannot be parsed here: the task ids of its stage "
            "operators are taken for their stage ids.)"
        )


def _scope(stage_id: str, only: bool) -> str:
    return f"stage '{stage_id}' only" if only else f"stage '{stage_id}' and everything downstream"


def _print_plan(dag_id: str, plan: RunPlan, stage_id: str, only: bool) -> None:
    run = plan.workflow_run
    engine = (
        f"workflow run {run.id} ({run.status.value})"
        if run is not None
        else "no workflow run in the engine yet"
    )
    print(f"DAG run {dag_id}/{plan.run_id} ({plan.state or 'no state'}); {engine}")
    print(f"Rerun from {_scope(stage_id, only)}: {len(plan.tasks)} task instance(s) to clear:")
    table = render_table(
        ["TASK", "TASK STATE", "TRY", "ENGINE STAGE"],
        [[t.label, t.state or "none", t.try_number, t.stage_text()] for t in plan.tasks],
        right=(2,),
    )
    print("\n".join(f"  {line}" for line in table.splitlines()))


@cli_command(audit=True)
def rerun(args: Namespace) -> None:
    """Rerun one DAG run from a stage."""
    dag_id, run_id, stage_id = args.dag_id, args.run_id, args.from_stage
    with open_store(args.conn_id) as store, _session() as session:
        dags = _Dag(session, dag_id)
        dag_run = _get_dag_run(session, dag_id, run_id)
        plan = _plan_run(session, store, dags, dag_run, stage_id=stage_id, only=args.only)
        if plan.skip is not None:
            raise dags.unknown_stage(stage_id)
    _note_guess(dags)
    _print_plan(dag_id, plan, stage_id, args.only)
    if not plan.tasks:
        print("Nothing to clear: the DAG run has no such task instances.")
        return
    if args.dry_run:
        print("Dry run: nothing was cleared.")
        return
    if not args.yes and not _confirm(
        f"Clear these {len(plan.tasks)} task instance(s) and queue DAG run {plan.run_id}?"
    ):
        print("Cancelled, nothing was cleared.")
        return
    with _session() as session:
        count, state = _clear_run(session, dags, plan)
    print(
        f"Cleared {count} task instance(s) of DAG run {dag_id}/{plan.run_id}; the DAG run is "
        f"{state}. The scheduler runs the tasks again, and each stage task reruns its stage "
        "in the engine."
    )


def _dag_runs_between(session: Session, dag_id: str, start: datetime, end: datetime) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import func, select

    runs = list(
        session.scalars(
            select(DagRun)
            .where(
                DagRun.dag_id == dag_id,
                DagRun.logical_date >= start,
                DagRun.logical_date <= end,
            )
            .order_by(DagRun.logical_date, DagRun.run_id)
        )
    )
    if runs:
        return runs
    first, last, count = session.execute(
        select(func.min(DagRun.logical_date), func.max(DagRun.logical_date), func.count()).where(
            DagRun.dag_id == dag_id, DagRun.logical_date.is_not(None)
        )
    ).one()
    where = (
        f"Its {count} DAG run(s) with a logical date span {iso(first)} to {iso(last)}."
        if count
        else "It has no DAG runs with a logical date."
    )
    raise CommandError(
        f"DAG '{dag_id}' has no DAG run with a logical date from {iso(start)} to {iso(end)}. "
        f"{where}"
    )


def _plan_line(plan: RunPlan) -> str:
    if plan.skip is not None:
        return f"skipped: {plan.skip}"
    if not plan.tasks:
        return "nothing to clear"
    tasks = ", ".join(
        f"{t.label} ({t.state or 'none'}"
        + (f"; {t.stage.status.value}, attempt {t.stage.attempt}" if t.stage else "")
        + ")"
        for t in plan.tasks
    )
    return f"{len(plan.tasks)} task(s): {tasks}"


def _last_cost(ledger: Any, plan: RunPlan) -> tuple[Decimal, int]:
    """What the stages that the rerun clears spent last time, from the AI cost ledger."""
    run = plan.workflow_run
    cost, tokens = Decimal(0), 0
    if run is None:
        return cost, tokens
    for stage_id in dict.fromkeys(t.stage_id for t in plan.tasks if t.stage is not None):
        assert stage_id is not None
        spent, used = ledger.totals(run.id, stage_id)
        cost += spent
        tokens += used
    return cost, tokens


def _why_failed(dag_id: str, run_id: str) -> str:
    """The failed task instances of a DAG run, for the summary."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    with _session() as session:
        failed = list(
            session.scalars(
                select(TaskInstance.task_id).where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.state.in_(("failed", "upstream_failed")),
                )
            )
        )
    return f"task(s) failed: {_names(sorted(failed))}" if failed else "the DAG run failed"


def _dag_run_state(dag_id: str, run_id: str) -> str | None:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    with _session() as session:
        state = session.scalar(
            select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
    return None if state is None else str(state)


def _state_path(args: Namespace) -> Path:
    from airflow.configuration import AIRFLOW_HOME

    from airflow_workflow_engine.host.backfill import state_file_path

    key = (args.from_stage, args.start_date, args.end_date, "only" if args.only else "downstream")
    return state_file_path(Path(AIRFLOW_HOME), args.dag_id, key)


def _progress() -> Progress:
    """A rich progress bar (rich ships with Airflow); lines printed through its console show
    above it. Without a terminal it prints the lines and the bar's final state."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(highlight=False, soft_wrap=True),
    )


def _plan_backfill(
    args: Namespace, start: datetime, end: datetime, progress: Progress
) -> tuple[_Dag, list[RunPlan], tuple[Decimal, int]]:
    """The plan of every DAG run in the range, printed as it goes; with ``--dry-run`` also
    what the stages to rerun spent last time (the estimate)."""
    from airflow_workflow_engine.ai.sql_ledger import SqlLedger

    dag_id, stage_id = args.dag_id, args.from_stage
    plans: list[RunPlan] = []
    estimate, estimate_tokens = Decimal(0), 0
    ledger = SqlLedger(engine_url(args.conn_id))
    try:
        with open_store(args.conn_id) as store, _session() as session:
            dags = _Dag(session, dag_id)
            if dags.task_of_stage(dags.latest, stage_id) is None:
                raise dags.unknown_stage(stage_id)
            dag_runs = _dag_runs_between(session, dag_id, start, end)
            total = len(dag_runs)
            print(
                f"DAG {dag_id}: {total} DAG run(s) with a logical date from {iso(start)} to "
                f"{iso(end)}; rerun from {_scope(stage_id, args.only)}."
            )
            _note_guess(dags)
            with progress:
                planning = progress.add_task("Planning", total=total)
                for i, dag_run in enumerate(dag_runs, 1):
                    plan = _plan_run(
                        session, store, dags, dag_run, stage_id=stage_id, only=args.only
                    )
                    plans.append(plan)
                    line = f"[{i}/{total}] {plan.run_id}: {_plan_line(plan)}"
                    if args.dry_run and plan.tasks:
                        cost, tokens = _last_cost(ledger, plan)
                        estimate += cost
                        estimate_tokens += tokens
                        line += f"; last time {money_text(cost)}, {tokens} tokens"
                    progress.console.print(line, markup=False)
                    progress.advance(planning)
    finally:
        ledger.close()
    return dags, plans, (estimate, estimate_tokens)


@cli_command(audit=True)
def backfill_rerun(args: Namespace) -> None:
    """Rerun from a stage in every DAG run of a logical-date range."""
    from airflow_workflow_engine.host.backfill import BackfillState

    max_active = getattr(args, "max_active", None)
    if max_active is not None and max_active < 1:
        raise CommandError(f"--max-active must be at least 1, not {max_active}.")
    start = parse_when(args.start_date)
    end = parse_when(args.end_date, end=True)
    if end < start:
        raise CommandError(
            f"--end-date ({args.end_date}) is before --start-date ({args.start_date})."
        )
    state_path = _state_path(args)
    if getattr(args, "restart", False) and not args.dry_run:
        state_path.unlink(missing_ok=True)
    state = BackfillState.load(state_path)
    dags, plans, (estimate, estimate_tokens) = _plan_backfill(args, start, end, _progress())
    todo = [p for p in plans if p.tasks]
    count = sum(len(p.tasks) for p in todo)
    if args.dry_run:
        again = sum(1 for p in todo if state.runs.get(p.run_id))
        print(
            f"Dry run: nothing was cleared ({count} task instance(s) in {len(todo)} DAG run(s) "
            "would be"
            + (f"; {again} of them already rerun by this backfill, not again" if again else "")
            + ")."
        )
        print(
            f"Estimated AI cost (what these stages spent last time): {money_text(estimate)}, "
            f"{estimate_tokens} tokens."
        )
        return
    if not todo:
        print("Nothing to clear.")
        return
    if state.runs:
        print(
            f"Resuming from {state_path}: {len(state.runs)} DAG run(s) already cleared by this "
            "backfill are not cleared again (--restart starts over)."
        )
    fresh = [p for p in todo if p.run_id not in state.runs]
    if (
        fresh
        and not args.yes
        and not _confirm(
            f"Clear {sum(len(p.tasks) for p in fresh)} task instance(s) in {len(fresh)} DAG "
            "run(s) and queue those runs?"
        )
    ):
        print("Cancelled, nothing was cleared.")
        return
    summary, cleared, runs = _execute(args, dags, plans, state, _progress())
    print(f"Cleared {cleared} task instance(s) in {runs} DAG run(s) of {args.dag_id}.")
    for line in summary.lines():
        print(line)
    # Done: the next run of the same command is a new backfill, not a resume.
    state_path.unlink(missing_ok=True)
    if summary.failed:
        raise SystemExit(1)


def _execute(
    args: Namespace, dags: _Dag, plans: list[RunPlan], state: BackfillState, progress: Progress
) -> tuple[BackfillSummary, int, int]:
    """Clears the planned runs (``--max-active``, ``--wait``), with the progress bar; returns
    the summary, how many task instances and how many DAG runs were cleared."""
    from airflow_workflow_engine.host.backfill import drive_backfill

    dag_id = dags.dag_id
    todo = [p for p in plans if p.tasks]
    total = len(plans)
    max_active = getattr(args, "max_active", None)
    by_id = {p.run_id: p for p in todo}
    index = {p.run_id: i for i, p in enumerate(plans, 1)}
    cleared, runs = 0, 0

    def clear(run_id: str) -> str:
        nonlocal cleared, runs
        with _session() as session:
            done, run_state = _clear_run(session, dags, by_id[run_id])
        cleared += done
        runs += 1
        return f"cleared {done} task(s); DAG run {run_state}"

    wait = bool(getattr(args, "wait", False))
    with progress:
        bar = progress.add_task("Rerunning" if wait else "Clearing", total=len(todo))

        def on_event(run_id: str, text: str) -> None:
            progress.console.print(f"[{index[run_id]}/{total}] {run_id}: {text}", markup=False)
            finished = not text.startswith(("cleared", "already cleared"))
            if finished or not wait:
                progress.advance(bar)

        summary = drive_backfill(
            [p.run_id for p in todo],
            state=state,
            clear=clear,
            run_state=lambda run_id: _dag_run_state(dag_id, run_id),
            why_failed=lambda run_id: _why_failed(dag_id, run_id),
            max_active=max_active,
            wait=wait,
            on_event=on_event,
            poll_seconds=float(getattr(args, "poll_interval", 5.0)),
        )
    summary.skipped.extend((p.run_id, p.skip) for p in plans if p.skip is not None)
    summary.skipped.extend(
        (p.run_id, "nothing to clear (no such task instances)")
        for p in plans
        if p.skip is None and not p.tasks
    )
    return summary, cleared, runs
