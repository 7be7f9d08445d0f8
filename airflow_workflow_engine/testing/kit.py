"""``create_test_kernel``: a kernel wired to in-memory adapters, for tests and the demo.

``ctx.ai`` works out of the box: the kit has an :class:`InMemoryLedger` (or the ``ledger``
you pass) and an ``ai_factory`` over it, so ``mock:`` models answer offline, and stage metrics
and run totals are rolled up from that ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.ai.context import make_ai_factory
from airflow_workflow_engine.ai.ledger import InMemoryLedger, Ledger
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

if TYPE_CHECKING:
    from airflow_workflow_engine.ai.settings import ProvidersLike

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
    ledger: Ledger | None = None


def create_test_kernel(
    workflows: Sequence[Workflow],
    *,
    persistence: Persistence | None = None,
    blob_store: BlobStore | None = None,
    event_sink: EventSink | None = None,
    max_attempts: int = 3,
    ledger: Ledger | None = None,
    ai_providers: ProvidersLike | None = None,
    **kernel_kwargs: Any,
) -> TestKit:
    """A kernel over in-memory adapters. ``ledger`` (default: a new :class:`InMemoryLedger`)
    and ``ai_providers`` (default: ``mock``, plus ``openai``/``google`` from the environment)
    build the ``ai_factory`` unless you pass your own; other ``kernel_kwargs`` go to
    :func:`create_kernel`."""
    ledger = ledger if ledger is not None else InMemoryLedger()
    kernel_kwargs.setdefault("ledger", ledger)
    if "ai_factory" not in kernel_kwargs:
        kernel_kwargs["ai_factory"] = make_ai_factory(ledger, providers=ai_providers)
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
    return TestKit(kernel, persistence, blob_store, transport, events, scheduler, clock, ledger)
