"""Kernel plugins: handlers for outbox events, delivered at least once, with a dead-letter queue.

A plugin runner is an ``EventSink``: pass it (or a sink that calls it) to ``create_kernel``.
A handler that raises makes ``outbox.flush`` retry the event; after ``max_retries`` failures it
goes to the dead-letter queue, which ``plugin.replayDLQ`` replays.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.kernel.records import OutboxEvent

__all__ = ["Plugin", "PluginError", "PluginRunner", "create_plugin_runner", "define_plugin"]

EventHandler = Callable[[OutboxEvent], None]


@dataclass(frozen=True)
class Plugin:
    id: str
    on: Mapping[str, EventHandler] = field(default_factory=dict)

    def handlers_for(self, event_type: str) -> list[EventHandler]:
        """Handlers whose pattern matches: exact type, ``stage:*`` or ``*``."""
        return [h for pattern, h in self.on.items() if fnmatch.fnmatchcase(event_type, pattern)]


class PluginError(WorkflowEngineError):
    def __init__(self, plugin_id: str, event: OutboxEvent, cause: BaseException) -> None:
        self.plugin_id = plugin_id
        super().__init__(
            f"Plugin '{plugin_id}' failed on {event.type} #{event.sequence} of run "
            f"{event.workflow_run_id}: {type(cause).__name__}: {cause}"
        )


def define_plugin(*, id: str, on: Mapping[str, EventHandler]) -> Plugin:
    if not id:
        raise ValueError("a plugin needs an id")
    return Plugin(id=id, on=dict(on))


class PluginRunner:
    """Delivers each event to every matching plugin; a plugin that already handled an event is
    not called again when the event is retried for another plugin's failure."""

    def __init__(self, plugins: Sequence[Plugin]) -> None:
        self.plugins = list(plugins)
        self._delivered: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def publish(self, event: OutboxEvent) -> None:
        """Calls every matching plugin; one plugin's failure does not starve the others. If any
        failed, raises so the outbox retries the event (only for the plugins that failed)."""
        failure: PluginError | None = None
        for plugin in self.plugins:
            handlers = plugin.handlers_for(event.type)
            with self._lock:
                if not handlers or (event.id, plugin.id) in self._delivered:
                    continue
            try:
                for handler in handlers:
                    handler(event)
            except Exception as exc:
                failure = failure or PluginError(plugin.id, event, exc)
                continue
            with self._lock:
                self._delivered.add((event.id, plugin.id))
        if failure is not None:
            raise failure


def create_plugin_runner(plugins: Sequence[Plugin]) -> PluginRunner:
    return PluginRunner(plugins)
