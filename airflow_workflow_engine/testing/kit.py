"""``create_test_kernel``: a kernel wired to in-memory adapters, for tests and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_workflow_engine.blob.memory import InMemoryBlobStore
from airflow_workflow_engine.definitions.workflow import Workflow
from airflow_workflow_engine.kernel.kernel import DictRegistry, Kernel, create_kernel
from airflow_workflow_engine.kernel.ports import BlobStore, EventSink, Persistence
from airflow_workflow_engine.persistence.memory import InMemoryPersistence
from airflow_workflow_engine.testing.adapters import (
    CollectingEventSink,
    InMemoryJobTransport,
    NoopScheduler,
)
from airflow_workflow_engine.testing.clock import FakeClock

__all__ = ["TestKit", "create_test_kernel"]


@dataclass
class TestKit:
    """A kernel and the adapters it was built with, for assertions."""

    __test__ = False  # not a pytest test class

    kernel: Kernel
    persistence: Persistence
    blob_store: BlobStore
    job_transport: InMemoryJobTransport
    events: CollectingEventSink
    scheduler: NoopScheduler
    clock: FakeClock


def create_test_kernel(
    workflows: Sequence[Workflow],
    *,
    persistence: Persistence | None = None,
    blob_store: BlobStore | None = None,
    event_sink: EventSink | None = None,
    max_attempts: int = 3,
    **kernel_kwargs: Any,
) -> TestKit:
    clock = FakeClock()
    transport = InMemoryJobTransport(clock=clock, max_attempts=max_attempts)
    events = CollectingEventSink()
    persistence = persistence or InMemoryPersistence()
    blob_store = blob_store or InMemoryBlobStore()
    scheduler = NoopScheduler()
    kernel = create_kernel(
        persistence=persistence,
        blob_store=blob_store,
        job_transport=transport,
        event_sink=event_sink or events,
        scheduler=scheduler,
        clock=clock,
        registry=DictRegistry(workflows),
        **kernel_kwargs,
    )
    return TestKit(kernel, persistence, blob_store, transport, events, scheduler, clock)
