"""Test helpers: in-memory adapters, a fake clock, a driver and (lazily) the fake LLM server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_workflow_engine._lazy import lazy_exports

__all__ = [
    "CollectingEventSink",
    "DriverError",
    "FakeClock",
    "InMemoryBlobStore",
    "InMemoryJobTransport",
    "InMemoryPersistence",
    "NoopScheduler",
    "create_test_kernel",
    "run_to_completion",
]

_EXPORTS = {
    "CollectingEventSink": "airflow_workflow_engine.testing.adapters",
    "InMemoryJobTransport": "airflow_workflow_engine.testing.adapters",
    "NoopScheduler": "airflow_workflow_engine.testing.adapters",
    "FakeClock": "airflow_workflow_engine.testing.clock",
    "DriverError": "airflow_workflow_engine.testing.driver",
    "run_to_completion": "airflow_workflow_engine.testing.driver",
    "InMemoryBlobStore": "airflow_workflow_engine.blob.memory",
    "InMemoryPersistence": "airflow_workflow_engine.persistence.memory",
    "create_test_kernel": "airflow_workflow_engine.testing.kit",
    "FakeLLMServer": "airflow_workflow_engine.testing.fake_llm",
}

if TYPE_CHECKING:
    from airflow_workflow_engine.blob.memory import InMemoryBlobStore
    from airflow_workflow_engine.persistence.memory import InMemoryPersistence
    from airflow_workflow_engine.testing.adapters import (
        CollectingEventSink,
        InMemoryJobTransport,
        NoopScheduler,
    )
    from airflow_workflow_engine.testing.clock import FakeClock
    from airflow_workflow_engine.testing.driver import DriverError, run_to_completion
    from airflow_workflow_engine.testing.kit import create_test_kernel


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
