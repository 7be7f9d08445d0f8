"""Outbox flush order, plugin failures into the dead-letter queue, and replay."""

from __future__ import annotations

from typing import Any

from airflow_workflow_engine.kernel.commands import OutboxFlush, PluginReplayDLQ
from airflow_workflow_engine.kernel.plugins import create_plugin_runner, define_plugin
from airflow_workflow_engine.kernel.records import OutboxEvent
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import TestKit, create_test_kernel
from tests.unit.kernel.helpers import create
from tests.workflows import ALL_WORKFLOWS


def test_flush_publishes_in_sequence_order_and_marks_published(kit: TestKit) -> None:
    a = create(kit)
    b = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}})
    run_to_completion(kit.kernel, kit.job_transport, a)
    run_to_completion(kit.kernel, kit.job_transport, b)
    total = len(kit.persistence.list_events(a)) + len(kit.persistence.list_events(b))
    first = kit.kernel.dispatch(OutboxFlush(max_events=10))
    rest = kit.kernel.dispatch(OutboxFlush(max_events=1000))
    assert first.published == 10 and first.published + rest.published == total
    for run_id in (a, b):
        seqs = [e.sequence for e in kit.events.events if e.workflow_run_id == run_id]
        assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))
    assert kit.persistence.list_unpublished_events() == []
    assert kit.kernel.dispatch(OutboxFlush()).published == 0


def test_failing_plugin_goes_to_dlq_and_is_replayed(persistence: Any) -> None:
    seen: list[tuple[str, int]] = []
    audit: list[str] = []
    broken = {"on": True}

    def on_completed(event: OutboxEvent) -> None:
        if broken["on"]:
            raise ConnectionError("webhook down")
        seen.append((event.type, event.sequence))

    notifier = define_plugin(id="notifier", on={"workflow:completed": on_completed})
    auditor = define_plugin(id="auditor", on={"*": lambda e: audit.append(e.type)})
    runner = create_plugin_runner([notifier, auditor])
    kit = create_test_kernel(ALL_WORKFLOWS, persistence=persistence, event_sink=runner)
    other = create_test_kernel(ALL_WORKFLOWS)  # unrelated runs keep flowing: see below
    del other
    run_id = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}})
    run_to_completion(kit.kernel, kit.job_transport, run_id)
    events = kit.persistence.list_events(run_id)

    first = kit.kernel.dispatch(OutboxFlush(max_retries=2))
    assert first.failed == 1 and first.dead_lettered == 0
    assert first.published == len(events) - 1
    second = kit.kernel.dispatch(OutboxFlush(max_retries=2))
    assert second.failed == 1 and second.dead_lettered == 1
    dlq = kit.persistence.list_dlq_events()
    assert [e.type for e in dlq] == ["workflow:completed"]
    assert dlq[0].retry_count == 2 and "webhook down" in (dlq[0].last_error or "")
    assert kit.kernel.dispatch(OutboxFlush()).published == 0  # DLQ is not retried by flush
    # The auditor saw every event once, even the one the notifier kept failing on.
    assert audit == [e.type for e in events]

    broken["on"] = False
    assert kit.kernel.dispatch(PluginReplayDLQ()).replayed == 1
    assert kit.kernel.dispatch(OutboxFlush()).published == 1
    assert seen == [("workflow:completed", events[-1].sequence)]
    assert kit.persistence.list_dlq_events() == []
    assert audit.count("workflow:completed") == 1


def test_failure_blocks_only_later_events_of_the_same_run(kit: TestKit) -> None:
    a = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}})
    b = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}})

    class Sink:
        def __init__(self) -> None:
            self.got: list[tuple[str, int]] = []

        def publish(self, event: OutboxEvent) -> None:
            if event.workflow_run_id == a and event.sequence == 1:
                raise RuntimeError("down for run a")
            self.got.append((event.workflow_run_id, event.sequence))

    sink = Sink()
    kit.kernel.event_sink = sink
    result = kit.kernel.dispatch(OutboxFlush(max_retries=5))
    assert result.failed == 1
    assert [r for r, _ in sink.got] == [b]


def test_a_runs_flush_publishes_only_that_run_in_order(kit: TestKit) -> None:
    a = create(kit)
    b = create(kit, workflow_id="flaky", config={"flaky": {"fail_times": 0}})
    run_to_completion(kit.kernel, kit.job_transport, a)
    run_to_completion(kit.kernel, kit.job_transport, b)
    result = kit.kernel.dispatch(OutboxFlush(workflow_run_id=a, max_events=1000))
    events_a = kit.persistence.list_events(a)
    assert result.published == len(events_a) and not result.busy
    assert [(e.workflow_run_id, e.sequence) for e in kit.events.events] == [
        (a, e.sequence) for e in events_a
    ]
    assert {e.workflow_run_id for e in kit.persistence.list_unpublished_events()} == {b}
    assert kit.persistence.list_unpublished_events(workflow_run_id=a) == []


def test_a_runs_flush_waits_for_the_run_outbox_lease(kit: TestKit) -> None:
    """Two flushers of one run never interleave: the second finds the lease taken and does
    nothing; a lease left by a dead flusher expires."""
    from datetime import timedelta

    from airflow_workflow_engine.kernel.handlers.outbox_flush import LEASE_TYPE

    run_id = create(kit)
    key = f"outbox.flush/{run_id}"
    now = kit.clock.now()
    ttl = timedelta(seconds=kit.kernel.settings.idempotency_ttl_seconds)
    kit.persistence.acquire_idempotency(key, LEASE_TYPE, now=now, expires_at=now + ttl)
    busy = kit.kernel.dispatch(OutboxFlush(workflow_run_id=run_id))
    assert busy.busy and busy.published == 0 and kit.events.events == []
    kit.clock.advance(kit.kernel.settings.idempotency_ttl_seconds + 1)  # the holder died
    taken = kit.kernel.dispatch(OutboxFlush(workflow_run_id=run_id))
    assert not taken.busy and taken.published == len(kit.persistence.list_events(run_id)) > 0
    # Released after the flush: the next one runs.
    assert not kit.kernel.dispatch(OutboxFlush(workflow_run_id=run_id)).busy


def test_replay_of_one_runs_dead_letters(kit: TestKit) -> None:
    a = create(kit)
    b = create(kit)

    def fail(event: OutboxEvent) -> None:
        raise RuntimeError("down")

    kit.kernel.event_sink = type("Sink", (), {"publish": staticmethod(fail)})()
    kit.kernel.dispatch(OutboxFlush(max_retries=1))
    assert {e.workflow_run_id for e in kit.persistence.list_dlq_events()} == {a, b}
    assert kit.persistence.list_dlq_events(workflow_run_id=a) == [
        e for e in kit.persistence.list_dlq_events() if e.workflow_run_id == a
    ]
    replayed = kit.kernel.dispatch(PluginReplayDLQ(workflow_run_id=a)).replayed
    assert replayed == len(kit.persistence.list_events(a))
    assert {e.workflow_run_id for e in kit.persistence.list_dlq_events()} == {b}
