"""The ``airflow workflow-engine`` command group: argparse metadata only.

Airflow imports this module on every ``airflow`` start (``"cli"`` in ``get_provider_info()``),
so it imports nothing at module level but the standard library, the status enum (which
loads only itself, the package's lazy roots and ``errors``) and ``DEFAULT_CONN_ID`` from
``hooks/settings.py`` (which imports Airflow inside its functions only); Airflow's CLI
classes are imported inside :func:`get_workflow_engine_cli_commands`. The command bodies
are loaded lazily, with ``lazy_load_command``, from ``runs.py``, ``costs.py``, ``rerun.py``,
``approval.py``, ``events.py`` and ``db.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.kernel.status import Status

if TYPE_CHECKING:
    from airflow.cli.cli_config import CLICommand

__all__ = ["DEFAULT_CONN_ID", "GROUP_NAME", "get_workflow_engine_cli_commands"]

GROUP_NAME = "workflow-engine"
_PACKAGE = "airflow_workflow_engine.cli"
_STATUSES = tuple(status.value for status in Status)


def get_workflow_engine_cli_commands() -> list[CLICommand]:
    """The ``workflow-engine`` group, for Airflow's ``ProvidersManager``."""
    from airflow.cli.cli_config import (
        ActionCommand,
        Arg,
        GroupCommand,
        lazy_load_command,
    )

    def arg(*flags: str, **kwargs: Any) -> Any:
        return Arg(flags, **kwargs)  # type: ignore[no-untyped-call]

    def func(name: str) -> Any:
        return lazy_load_command(f"{_PACKAGE}.{name}")

    conn_id = arg(
        "--conn-id",
        default=DEFAULT_CONN_ID,
        help="Airflow connection of the engine's database; when the default one does not "
        "exist, the sql_alchemy_conn option of the workflow_engine config section is used "
        "(default: %(default)s)",
    )
    output = arg(
        "-o",
        "--output",
        choices=("table", "json", "yaml", "plain"),
        default="table",
        metavar="(table, json, yaml, plain)",
        help="Output format, as for `airflow dags list`. Allowed values: json, yaml, plain, "
        "table (default: table); amounts are exact decimal strings in json and yaml",
    )
    verbose = arg("-v", "--verbose", action="store_true", help="Show logs and tracebacks")
    yes = arg("-y", "--yes", action="store_true", help="Do not ask for confirmation")
    dry_run = arg(
        "--dry-run", action="store_true", help="Print what would be cleared; change nothing"
    )
    only = arg(
        "--only",
        action="store_true",
        help="Clear only the stage's task, not the tasks downstream of it",
    )
    from_stage = arg(
        "--from-stage",
        required=True,
        metavar="STAGE",
        help="Stage id to rerun from (the stage of a StageOperator task of the DAG); "
        "<group_id>.<stage_id> for a stage of a WorkflowTaskGroup",
    )
    dag_id = arg("dag_id", metavar="DAG_ID", help="The DAG id")
    opt_dag_id = arg("dag_id", metavar="DAG_ID", nargs="?", help="The DAG id")
    opt_run_id = arg("run_id", metavar="RUN_ID", nargs="?", help="The DAG run id")
    run_id = arg("run_id", metavar="RUN_ID", help="The DAG run id")
    workflow_run_id = arg(
        "--workflow-run-id",
        metavar="ID",
        help="The workflow run's id, instead of DAG_ID RUN_ID",
    )
    decision = (
        opt_dag_id,
        opt_run_id,
        workflow_run_id,
        arg("--by", required=True, metavar="USER", help="Who decides (the approver)"),
        arg("--comment", metavar="TEXT", help="Why (shown by ApprovalSensor)"),
        arg(
            "--stage-id",
            metavar="STAGE",
            help="Decide for one stage (an ApprovalSensor with stage_id=...)",
        ),
        arg(
            "--key-prefix",
            default="approval.",
            metavar="PREFIX",
            help="Annotation key prefix: another one for a second sign-off, like the "
            "sensor's key_prefix (default: %(default)s)",
        ),
        conn_id,
        verbose,
    )

    runs = GroupCommand(
        name="runs",
        help="List and inspect workflow runs",
        subcommands=(
            ActionCommand(
                name="list",
                help="List workflow runs, newest first",
                description="List workflow runs, newest first, with the DAG run of each "
                "(idempotency key '<dag_id>/<run_id>'), status, times and AI cost.",
                func=func("runs.runs_list"),
                args=(
                    arg("--dag-id", metavar="DAG_ID", help="Only runs of this DAG"),
                    arg("--workflow-id", metavar="ID", help="Only runs of this workflow"),
                    arg(
                        "--status",
                        type=str.upper,
                        choices=_STATUSES,
                        metavar="STATUS",
                        help=f"Only runs in this status ({', '.join(_STATUSES)})",
                    ),
                    arg(
                        "--limit",
                        type=int,
                        default=20,
                        help="How many runs at most (default: %(default)s)",
                    ),
                    output,
                    conn_id,
                    verbose,
                ),
            ),
            ActionCommand(
                name="show",
                help="Show one workflow run: input, stages, annotations",
                description="Show the workflow run of a DAG run: status, input, error, each "
                "stage (status, attempt, group, duration, AI cost and tokens, an output "
                "preview or its blob reference) and the annotations.",
                func=func("runs.runs_show"),
                args=(opt_dag_id, opt_run_id, workflow_run_id, output, conn_id, verbose),
            ),
        ),
    )
    costs = ActionCommand(
        name="costs",
        help="AI spend from the cost ledger, rolled up",
        description="Calls, tokens and cost from the AI cost ledger (wfe_ai_calls), grouped by "
        "the dimensions of --by.",
        func=func("costs.costs"),
        args=(
            arg(
                "--by",
                metavar="DIMS",
                help="Comma-separated dimensions: model, provider, dag, dag_run, task_id, stage, "
                "run, day, topic, call_type, status, model_id (default: dag,model; with "
                "--run-id: stage,model)",
            ),
            arg("--dag-id", metavar="DAG_ID", help="Only calls made by this DAG's tasks"),
            arg(
                "--run-id",
                metavar="RUN_ID",
                help="Only calls of this DAG run's workflow run (needs --dag-id)",
            ),
            arg("--since", metavar="DATE", help="From this date or date-time (included)"),
            arg("--until", metavar="DATE", help="Up to this date (included) or date-time"),
            output,
            conn_id,
            verbose,
        ),
    )
    rerun = ActionCommand(
        name="rerun",
        help="Rerun a DAG run from a stage (clear its task and downstream)",
        description="Clear the task of a stage, and unless --only every task downstream of "
        "it, in one DAG run, and set the DAG run back to queued, as `airflow tasks clear` "
        "does. When the scheduler runs a cleared stage task again, the stage reruns in the "
        "engine.",
        func=func("rerun.rerun"),
        args=(dag_id, run_id, from_stage, only, dry_run, yes, conn_id, verbose),
    )
    backfill_rerun = ActionCommand(
        name="backfill-rerun",
        help="Rerun from a stage in every DAG run of a date range",
        description="`rerun` for every DAG run of the DAG whose logical date is between "
        "--start-date and --end-date (both included; a date alone as --end-date includes "
        "that whole day), with a progress bar. Resumable: the DAG runs cleared so far are "
        "kept in a state file under $AIRFLOW_HOME/workflow_engine/backfill-rerun/, so the same "
        "command run again after an interruption clears only the others (and waits for the "
        "ones still running); the file is removed when the backfill completes. --dry-run "
        "shows what the stages to rerun spent on AI last time, as the estimate.",
        func=func("rerun.backfill_rerun"),
        args=(
            dag_id,
            from_stage,
            arg("--start-date", required=True, metavar="DATE", help="First logical date"),
            arg("--end-date", required=True, metavar="DATE", help="Last logical date"),
            only,
            arg(
                "--dry-run",
                action="store_true",
                help="Print what would be cleared and the AI cost its stages spent last time "
                "(the estimate); change nothing",
            ),
            arg(
                "--wait",
                action="store_true",
                help="Wait until the rerun DAG runs finish, then print the summary",
            ),
            arg(
                "--max-active",
                type=int,
                default=None,
                metavar="N",
                help="At most N rerun DAG runs in flight at once: clear the next one when "
                "one finishes (default: clear all at once)",
            ),
            arg(
                "--restart",
                action="store_true",
                help="Forget an interrupted backfill's state file and start over",
            ),
            arg(
                "--poll-interval",
                type=float,
                default=5.0,
                metavar="SECONDS",
                help="How often to read the DAG runs' states while waiting (default: %(default)s)",
            ),
            yes,
            conn_id,
            verbose,
        ),
    )
    approve = ActionCommand(
        name="approve",
        help="Approve a workflow run (for ApprovalSensor)",
        description="Record an approval on the workflow run of a DAG run; an ApprovalSensor "
        "waiting on it succeeds.",
        func=func("approval.approve_run"),
        args=decision,
    )
    reject = ActionCommand(
        name="reject",
        help="Reject a workflow run (for ApprovalSensor)",
        description="Record a rejection on the workflow run of a DAG run; an ApprovalSensor "
        "waiting on it fails, naming who rejected and why.",
        func=func("approval.reject_run"),
        args=decision,
    )
    answer = (
        dag_id,
        run_id,
        arg("--task-id", metavar="TASK_ID", help="The approval task (when the run has several)"),
        arg("--map-index", type=int, default=-1, metavar="N", help="(default: %(default)s)"),
        arg("--by", required=True, metavar="USER", help="Who answers (the reviewer)"),
        arg("--comment", metavar="TEXT", help="Why (kept with the run's provenance)"),
        verbose,
    )
    approvals = GroupCommand(
        name="approvals",
        help="Approvals waiting in Airflow's Required Actions",
        subcommands=(
            ActionCommand(
                name="approve",
                help="Approve a DAG run's pending request in Required Actions",
                description="Answers the pending human-in-the-loop request of a DAG run "
                "(WorkflowApprovalOperator) with Approve, in Airflow's database as its REST "
                "API does: Required Actions shows it answered and the task resumes.",
                func=func("approval.approve_request"),
                args=answer,
            ),
            ActionCommand(
                name="reject",
                help="Reject a DAG run's pending request in Required Actions",
                description="Answers the pending human-in-the-loop request of a DAG run "
                "(WorkflowApprovalOperator) with Reject: the task fails and the workflow run "
                "is cancelled with the comment as the reason.",
                func=func("approval.reject_request"),
                args=answer,
            ),
            ActionCommand(
                name="list",
                help="List the workflow runs awaiting a reviewer, oldest first",
                description="Running workflow runs whose WorkflowApprovalOperator asks a "
                "reviewer in Airflow's Required Actions: the DAG run, the task and since when.",
                func=func("approval.approvals_list"),
                args=(
                    arg("--dag-id", metavar="DAG_ID", help="Only runs of this DAG"),
                    arg(
                        "--limit",
                        type=int,
                        default=1000,
                        help="How many running runs to look at (default: %(default)s)",
                    ),
                    output,
                    conn_id,
                    verbose,
                ),
            ),
        ),
    )
    run_events = (opt_dag_id, opt_run_id, workflow_run_id)
    limit = arg(
        "--limit", type=int, default=100, help="How many events at most (default: %(default)s)"
    )
    events = GroupCommand(
        name="events",
        help="The event outbox: list, dead-letter queue, replay, flush",
        subcommands=(
            ActionCommand(
                name="list",
                help="List the events of a workflow run and their delivery state",
                description="The outbox events of the workflow run of a DAG run, in order: "
                "type, time, pending / published / dead-lettered, delivery tries, last error "
                "and payload.",
                func=func("events.events_list"),
                args=(
                    *run_events,
                    arg("--pending", action="store_true", help="Only events not yet published"),
                    arg(
                        "--limit",
                        type=int,
                        default=0,
                        help="Only the last N events (default: all)",
                    ),
                    output,
                    conn_id,
                    verbose,
                ),
            ),
            ActionCommand(
                name="dlq",
                help="List dead-lettered events (all runs, or one)",
                description="Events whose delivery to the event plugins failed "
                "event_max_retries times, with the last error.",
                func=func("events.events_dlq"),
                args=(*run_events, limit, output, conn_id, verbose),
            ),
            ActionCommand(
                name="replay",
                help="Put dead-lettered events back and deliver them",
                description="Move dead-lettered events (all runs, or one) back to the outbox "
                "and deliver them now with the event plugins of [workflow_engine] "
                "event_plugins, as loaded by this process. Exit status 1 if any failed again.",
                func=func("events.events_replay"),
                args=(*run_events, limit, conn_id, verbose),
            ),
            ActionCommand(
                name="flush",
                help="Deliver pending events now (all runs, or one)",
                description="Deliver the events not yet published (of one run, or of every "
                "run with pending events) to the event plugins, in order.",
                func=func("events.events_flush"),
                args=(*run_events, limit, conn_id, verbose),
            ),
        ),
    )
    db = GroupCommand(
        name="db",
        help="The engine's tables: migrate, current revision, least-privilege grants",
        subcommands=(
            ActionCommand(
                name="migrate",
                help="Create or upgrade the engine's tables",
                description="Apply the engine's own Alembic migrations (version table "
                "wfe_alembic_version), where `airflow db migrate` would. Safe to repeat.",
                func=func("db.db_migrate"),
                args=(conn_id, verbose),
            ),
            ActionCommand(
                name="current",
                help="Show the revision of the engine's tables",
                func=func("db.db_current"),
                args=(conn_id, verbose),
            ),
            ActionCommand(
                name="grant",
                help="Give a PostgreSQL role exactly the engine's rights on its tables",
                description="Revoke everything, then grant per wfe_ table and sequence the "
                "statements the engine runs (no DDL, no DELETE on the AI cost ledger), so "
                "workers and the triggerer can use a role that cannot read Airflow's own "
                "tables. Runs as the database's owner: Airflow's [database] sql_alchemy_conn, "
                "or --owner-conn-id. Run it after `airflow db migrate` (and again after an "
                "upgrade that adds a table). The schema comes from the engine URL's "
                "search_path, or --schema.",
                func=func("db.db_grant"),
                args=(
                    arg("role", metavar="ROLE", help="The PostgreSQL role (it must exist)"),
                    arg(
                        "--schema",
                        default=None,
                        help="The engine's own schema (default: the first of the engine "
                        "URL's search_path, else the owner's, normally public)",
                    ),
                    arg(
                        "--owner-conn-id",
                        default=None,
                        help="Airflow connection of the tables' owner (default: Airflow's "
                        "own [database] sql_alchemy_conn)",
                    ),
                    arg(
                        "--print-sql",
                        "--dry-run",
                        dest="print_sql",
                        action="store_true",
                        help="Print the SQL; connect to nothing, change nothing",
                    ),
                    conn_id,
                    verbose,
                ),
            ),
        ),
    )
    return [
        GroupCommand(
            name=GROUP_NAME,
            help="Workflow engine: runs, AI costs, rerun, approvals, events, its tables",
            subcommands=(
                runs,
                costs,
                rerun,
                backfill_rerun,
                approve,
                reject,
                approvals,
                events,
                db,
            ),
        )
    ]
