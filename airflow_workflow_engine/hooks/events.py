"""Event plugins under Airflow: which plugins get the outbox's events, and when they are sent.

Configuration (``[workflow_engine]``, read when a process builds its kernel):

- ``event_plugins``: comma-separated ``package.module:attribute`` references; each attribute
  is a :class:`~airflow_workflow_engine.kernel.plugins.Plugin` (from ``define_plugin``) or a
  list of them. The module must be importable by the workers (and by the CLI for ``events
  replay``). Empty: events are still published, to the log only.
- ``event_max_retries`` (default 3): failed deliveries of one event before it goes to the
  dead-letter queue (``airflow workflow-engine events dlq`` / ``events replay``).

When: each stage task, right after its stage's outcome and ``run.transition`` are committed,
flushes the outbox of its own workflow run (:func:`deliver_run_events`) under the run's
outbox lease, so a run's events reach the plugins in order. Delivery is at least once: an
event is marked published only after every plugin returned, a plugin that failed gets the
event again on the run's next flush, and a process that dies between the plugin call and the
mark delivers it again. A flush never fails the task: a failing plugin is logged and retried.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.hooks.settings import EngineNotConfiguredError, conf_get
from airflow_workflow_engine.host.ports import LoggingEventSink

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.commands import OutboxFlushResult
    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.plugins import Plugin
    from airflow_workflow_engine.kernel.records import OutboxEvent

__all__ = [
    "DEFAULT_EVENT_MAX_RETRIES",
    "PluginEventSink",
    "deliver_run_events",
    "event_max_retries",
    "event_sink_from_config",
    "load_plugins",
]

logger = logging.getLogger("airflow_workflow_engine.airflow")

DEFAULT_EVENT_MAX_RETRIES = 3
#: How long a stage task waits for another flusher of its run (the run's outbox lease).
_LEASE_WAIT_SECONDS = 5.0
_OPTION = "[workflow_engine] event_plugins"


def load_plugins(spec: str) -> list[Plugin]:
    """The plugins named by ``spec`` (``pkg.mod:attr,pkg.mod:other``)."""
    from airflow_workflow_engine.kernel.plugins import Plugin

    plugins: list[Plugin] = []
    for ref in (part.strip() for part in spec.split(",")):
        if not ref:
            continue
        module_name, sep, attr = ref.partition(":")
        if not sep or not module_name or not attr:
            raise EngineNotConfiguredError(
                f"{_OPTION}: {ref!r} is not 'package.module:attribute' (e.g. "
                "'my_company.wfe_plugins:slack_plugin')."
            )
        try:
            value: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError) as exc:
            raise EngineNotConfiguredError(
                f"{_OPTION}: cannot load {ref!r}: {type(exc).__name__}: {exc}"
            ) from exc
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if not isinstance(item, Plugin):
                raise EngineNotConfiguredError(
                    f"{_OPTION}: {ref!r} is a {type(item).__name__}, not a Plugin; build it "
                    "with airflow_workflow_engine.kernel.define_plugin(id=..., on={...})."
                )
            plugins.append(item)
    return plugins


def event_max_retries() -> int:
    raw = conf_get("event_max_retries", str(DEFAULT_EVENT_MAX_RETRIES))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise EngineNotConfiguredError(
            f"[workflow_engine] event_max_retries must be a whole number >= 1, got {raw!r}."
        )
    return value


class PluginEventSink(LoggingEventSink):
    """Logs each event (debug) and hands it to the configured plugins."""

    def __init__(self, plugins: Sequence[Plugin] = ()) -> None:
        from airflow_workflow_engine.kernel.plugins import PluginRunner

        self.runner = PluginRunner(plugins)

    @property
    def plugins(self) -> list[Plugin]:
        return self.runner.plugins

    def publish(self, event: OutboxEvent) -> None:
        super().publish(event)
        self.runner.publish(event)


def event_sink_from_config() -> PluginEventSink:
    """The event sink of a process's kernel, with the plugins of ``event_plugins``."""
    return PluginEventSink(load_plugins(conf_get("event_plugins")))


def deliver_run_events(kernel: Kernel, workflow_run_id: str) -> OutboxFlushResult | None:
    """Flushes one run's outbox (see the module's docstring); never raises. ``None``: the
    flush could not run (logged); the run's next flush, or ``events flush``, delivers."""
    from airflow_workflow_engine.kernel.commands import OutboxFlush

    started = time.monotonic()
    deadline = started + _LEASE_WAIT_SECONDS
    try:
        max_retries = event_max_retries()
        while True:
            result: OutboxFlushResult = kernel.dispatch(
                OutboxFlush(workflow_run_id=workflow_run_id, max_retries=max_retries)
            )
            if result.busy and time.monotonic() < deadline:
                time.sleep(0.05)  # another task of this run is flushing; then take over
                continue
            if result.busy or result.published + result.failed < 100:
                break
    except Exception:
        logger.warning(
            "Could not deliver the events of workflow run %s", workflow_run_id, exc_info=True
        )
        return None
    if result.failed:
        logger.warning(
            "Events of workflow run %s: %d failed delivery (%d dead-lettered); see "
            "`airflow workflow-engine events list --workflow-run-id %s`",
            workflow_run_id,
            result.failed,
            result.dead_lettered,
            workflow_run_id,
        )
    logger.info(
        "Delivered %d event(s) of workflow run %s in %.1f ms%s",
        result.published,
        workflow_run_id,
        (time.monotonic() - started) * 1000,
        " (another flusher held the run's outbox)" if result.busy else "",
    )
    return result
