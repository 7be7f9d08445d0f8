"""Airflow provider metadata, found by Airflow through the ``apache_airflow_provider`` entry
point::

    [project.entry-points.apache_airflow_provider]
    provider_info = "airflow_workflow_engine.get_provider_info:get_provider_info"

Declared once, here. Importing this module imports nothing but the package version.
"""

from __future__ import annotations

from typing import Any

from airflow_workflow_engine import __version__

__all__ = ["get_provider_info"]

_INTEGRATION = "Workflow Engine"


def _option(
    description: str,
    default: str | int | None,
    example: str | int | None,
    *,
    type: str = "string",
    sensitive: bool = False,
) -> dict[str, Any]:
    option: dict[str, Any] = {
        "description": description,
        "version_added": "0.1.0",
        "type": type,
        "example": example,
        "default": default,
    }
    if sensitive:
        option["sensitive"] = True
    return option


_CONFIG: dict[str, Any] = {
    "workflow_engine": {
        "description": (
            "The workflow engine's state (runs, stages, outputs, annotations, AI ledger) lives in "
            "wfe_ tables, created by `airflow db migrate`. Tasks and triggers reach them through "
            "the 'workflow_engine_default' connection when it exists, else through these options."
        ),
        "options": {
            "sql_alchemy_conn": _option(
                "SQLAlchemy URL of the database holding the engine's wfe_ tables, normally the "
                "same database as Airflow's metadata (Airflow 3 hides its own URL from tasks, so "
                "it is repeated here). PostgreSQL for production; a SQLite file for a single "
                "machine (prefer a file of its own, e.g. $AIRFLOW_HOME/workflow_engine.db). "
                "postgres:// and postgresql:// URLs use psycopg 3. Ignored when the "
                "'workflow_engine_default' connection exists.",
                "",
                "postgresql://airflow:airflow@postgres:5432/airflow",
                sensitive=True,
            ),
            "blob_store": _option(
                "Where large stage outputs and stage artifacts go: a local directory (shared by "
                "every worker and the triggerer) or an S3 URL 's3://bucket/prefix'. Empty means "
                "$AIRFLOW_HOME/workflow_engine/blobs. The connection's 'blob_store' extra wins.",
                "",
                "s3://my-bucket/workflow-engine",
            ),
            "blob_aws_conn_id": _option(
                "Airflow AWS connection used by an s3:// blob store (needs "
                "apache-airflow-providers-amazon). Empty: boto3's default credentials.",
                "",
                "aws_default",
            ),
            "output_blob_threshold": _option(
                "Stage outputs whose JSON is larger than this many bytes are stored in the blob "
                "store instead of the database row.",
                "262144",
                "1048576",
                type="integer",
            ),
            "event_plugins": _option(
                "Event plugins that get the outbox's events (workflow, stage, annotation, log "
                "events) under Airflow: comma-separated 'package.module:attribute' references, "
                "each a Plugin from airflow_workflow_engine.kernel.define_plugin or a list of "
                "them, importable by the workers. Each stage task delivers its run's events in "
                "order, at least once, after its stage commits. Empty: events go to the log.",
                "",
                "my_company.wfe_plugins:slack_plugin",
            ),
            "event_max_retries": _option(
                "Failed deliveries of one event before it goes to the dead-letter queue "
                "(`airflow workflow-engine events dlq`, `events replay`).",
                "3",
                "5",
                type="integer",
            ),
            "ai_metrics": _option(
                "Report every AI call (one per ledger row) through Airflow's metrics "
                "([metrics]: StatsD, Datadog or OpenTelemetry) as workflow_engine.ai.* and "
                "as an OpenTelemetry span with the GenAI semantic-convention attributes. "
                "No prompt or response text is sent.",
                "True",
                "False",
                type="boolean",
            ),
            "llm_conn_ids": _option(
                "Which Airflow connections hold the credentials of each model provider used by "
                "ctx.ai, as provider=conn_id pairs (several ids: a|b, the first that exists "
                "wins). Replaces the defaults per provider (openai=llm_openai_default|"
                "openai_default, google=llm_google_default) and adds providers, e.g. an "
                "OpenAI-compatible gateway.",
                "",
                "openai=my_openai,google=my_gemini,openrouter=llm_openrouter",
            ),
            "ai_run_max_cost": _option(
                "AI budget of every workflow run in US dollars, across its tasks: a call that "
                "would go over it fails the stage with BudgetExceededError (not retried). "
                "Empty: no run budget (stages' max_cost config still applies).",
                "",
                "5.00",
                type="float",
            ),
        },
    }
}


def get_provider_info() -> dict[str, Any]:
    """The provider description Airflow's ``ProvidersManager`` reads."""
    return {
        "package-name": "airflow-workflow-engine",
        "name": "Workflow Engine",
        "description": (
            "A type-safe, multi-stage AI workflow engine for Apache Airflow 3: typed stages, "
            "deferrable batch stages, provenance and an AI cost ledger."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://github.com/airflow-workflow-engine/airflow-workflow-engine",
                "tags": ["ai", "software"],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_workflow_engine.operators.stage",
                    "airflow_workflow_engine.operators.batch",
                ],
            }
        ],
        "hooks": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_workflow_engine.hooks.engine",
                    "airflow_workflow_engine.hooks.llm",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_workflow_engine.sensors.stage",
                    "airflow_workflow_engine.sensors.approval",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_workflow_engine.triggers.suspended",
                    "airflow_workflow_engine.triggers.kernel_state",
                ],
            }
        ],
        "connection-types": [
            {
                "connection-type": "workflow_engine",
                "hook-class-name": "airflow_workflow_engine.hooks.engine.WorkflowEngineHook",
                "hook-name": "Workflow Engine",
            },
            {
                "connection-type": "workflow_engine_llm",
                "hook-class-name": "airflow_workflow_engine.hooks.llm.WorkflowEngineLLMHook",
                "hook-name": "Workflow Engine LLM",
            },
        ],
        "extra-links": ["airflow_workflow_engine.operators.links.WorkflowRunLink"],
        "plugins": [
            {
                "name": "workflow_engine",
                "plugin-class": "airflow_workflow_engine.plugins.plugin.WorkflowEnginePlugin",
            }
        ],
        "config": _CONFIG,
        "db-managers": ["airflow_workflow_engine.hooks.db_manager.WorkflowEngineDBManager"],
        "cli": ["airflow_workflow_engine.cli.definition.get_workflow_engine_cli_commands"],
    }
