"""AI calls in Airflow's metrics and in OpenTelemetry traces.

Every ledger row this process writes (one per call that reached a provider) is also:

- counted through Airflow's own ``Stats`` (StatsD, Datadog or OpenTelemetry metrics, as
  ``[metrics]`` configures them), under ``<statsd_prefix>.workflow_engine.ai.*``: ``calls``,
  ``errors``, ``failures`` (answered, then something of ours failed), ``input_tokens``,
  ``output_tokens``, ``cost_microusd`` (counters) and ``latency`` (a timer, ms). Each is sent
  once with tags (``dag_id``, ``task_id``, ``provider``, ``model``, ``status``; used by
  Datadog, InfluxDB-style StatsD and OTel) and once with the dimensions in the name
  (``...ai.calls.<dag_id>.<task_id>.<provider>.<model>``), for plain StatsD;
- an OpenTelemetry span named ``<operation> <model>`` with the GenAI semantic-convention
  attributes (``gen_ai.system``, ``gen_ai.operation.name``, ``gen_ai.request.model``,
  ``gen_ai.usage.input_tokens``...) plus the Airflow identity (``airflow.dag_id``,
  ``airflow.dag_run_id``, ``airflow.task_id``, ``airflow.try_number``), through the
  process's tracer provider (Airflow's when ``[traces] otel_on``; a no-op otherwise). Under a
  task it is a child of the task's span.

Neither carries prompt or response text. ``[workflow_engine] ai_metrics = False`` turns both
off.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.ai.telemetry import add_call_observer

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.ledger import LedgerEntry

__all__ = ["AirflowCallTelemetry", "install_call_telemetry", "GEN_AI_SYSTEMS", "METRIC_PREFIX"]

logger = logging.getLogger("airflow_workflow_engine.airflow")

METRIC_PREFIX = "workflow_engine.ai"
#: Our provider names -> the GenAI semantic conventions' ``gen_ai.system`` values.
GEN_AI_SYSTEMS = {"openai": "openai", "google": "gcp.gemini", "mock": "_OTHER"}
_OPERATIONS = {
    "text": "chat",
    "object": "chat",
    "stream": "chat",
    "batch": "chat",
    "embed": "embeddings",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_install_lock = threading.Lock()
_installed: list[AirflowCallTelemetry] = []  # at most one per process


def _stats() -> Any:
    """Airflow's task-side ``Stats``, set up from ``[metrics]`` if this process has not yet
    (the task runner and the triggerer do it at start; ``dag.test()`` and the CLI do not)."""
    from airflow.sdk._shared.observability.metrics import stats as shared_stats
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics.stats_utils import get_stats_factory

    if getattr(shared_stats, "_factory", None) is None:
        from airflow.sdk.configuration import conf

        stats.initialize(
            factory=get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
        )
    return stats


def _stat_part(value: str | None) -> str:
    """A name segment StatsD accepts: dots would add levels, so they become ``__`` (as
    Airflow does for task-group task ids), other odd characters ``_``."""
    from airflow.sdk.observability.stats import normalize_name_for_stats

    text = (value or "none").replace(".", "__")
    return normalize_name_for_stats(text, log_warning=False)


class AirflowCallTelemetry:
    """A :class:`~airflow_workflow_engine.ai.telemetry.CallObserver` reporting to Airflow's
    metrics and to OpenTelemetry."""

    def call_recorded(self, entry: LedgerEntry) -> None:
        try:
            self._metrics(entry)
        finally:
            self._span(entry)

    # -- metrics ---------------------------------------------------------------------------
    def _metrics(self, entry: LedgerEntry) -> None:
        stats = _stats()
        tags = {
            "dag_id": entry.dag_id or "none",
            "task_id": entry.task_id or "none",
            "provider": entry.provider,
            "model": entry.model_key,
            "status": entry.status,
        }
        dims = ".".join(
            _stat_part(v) for v in (entry.dag_id, entry.task_id, entry.provider, entry.model_key)
        )
        counters = {
            "calls": 1,
            "errors": 1 if entry.status == "error" else 0,
            "failures": 1 if entry.failure else 0,
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
            # StatsD counters are integers: cost in millionths of a dollar.
            "cost_microusd": None if entry.cost is None else round(entry.cost * 1_000_000),
        }
        for name, count in counters.items():
            if not count:
                continue
            stats.incr(f"{METRIC_PREFIX}.{name}", count, tags=tags)
            stats.incr(f"{METRIC_PREFIX}.{name}.{dims}", count)
        if entry.latency_ms is not None:
            latency = timedelta(milliseconds=entry.latency_ms)
            stats.timing(f"{METRIC_PREFIX}.latency", latency, tags=tags)
            stats.timing(f"{METRIC_PREFIX}.latency.{dims}", latency)

    # -- traces ----------------------------------------------------------------------------
    def _span(self, entry: LedgerEntry) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        operation = _OPERATIONS.get(entry.call_type, "chat")
        model = entry.model_id or entry.model_key
        # The row is built as the answer arrives: the call spans latency_ms before it.
        end_ns = (entry.created_at - _EPOCH) // timedelta(microseconds=1) * 1000
        start_ns = end_ns - (entry.latency_ms or 0) * 1_000_000
        attributes: dict[str, Any] = {
            "gen_ai.system": GEN_AI_SYSTEMS.get(entry.provider, entry.provider),
            "gen_ai.provider.name": GEN_AI_SYSTEMS.get(entry.provider, entry.provider),
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": entry.input_tokens,
            "gen_ai.usage.output_tokens": entry.output_tokens,
            "workflow_engine.model_key": entry.model_key,
            "workflow_engine.call_type": entry.call_type,
            "workflow_engine.ledger_id": entry.id,
        }
        optional = {
            "gen_ai.response.model": entry.model_id,
            "gen_ai.response.id": entry.request_id,
            "gen_ai.usage.cached_tokens": entry.cached_tokens or None,
            "workflow_engine.cost_usd": None if entry.cost is None else str(entry.cost),
            "workflow_engine.batch_id": entry.batch_id,
            "workflow_engine.workflow_run_id": entry.workflow_run_id,
            "workflow_engine.stage_id": entry.stage_id,
            "workflow_engine.failure": entry.failure,
            "airflow.dag_id": entry.dag_id,
            "airflow.dag_run_id": entry.dag_run_id,
            "airflow.task_id": entry.task_id,
            "airflow.try_number": entry.attempt,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        if entry.status == "error":
            attributes["error.type"] = (entry.error or "error").split(":", 1)[0][:100]
        tracer = trace.get_tracer("airflow_workflow_engine")
        span = tracer.start_span(
            f"{operation} {model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start_ns,
        )
        if entry.status == "error":
            span.set_status(Status(StatusCode.ERROR, entry.error))
        span.end(end_time=end_ns)


def _enabled() -> bool:
    from airflow.sdk.configuration import conf

    return bool(conf.getboolean("workflow_engine", "ai_metrics", fallback=True))


def install_call_telemetry() -> AirflowCallTelemetry | None:
    """Registers the Airflow observer once per process (unless ``ai_metrics`` is off)."""
    with _install_lock:
        if not _installed:
            try:
                if not _enabled():
                    return None
            except Exception:  # configuration unreadable: keep reporting on, it is harmless
                logger.debug("could not read [workflow_engine] ai_metrics", exc_info=True)
            _installed.append(AirflowCallTelemetry())
            add_call_observer(_installed[0])
        return _installed[0]
