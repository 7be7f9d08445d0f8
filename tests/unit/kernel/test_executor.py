"""ActivityExecutor: in-process by default, routing some stages elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow_workflow_engine.kernel.executor import (
    LocalExecutor,
    RoutingExecutor,
    resolve_awaitable,
)
from airflow_workflow_engine.testing import run_to_completion
from airflow_workflow_engine.testing.kit import create_test_kernel
from tests.unit.kernel.helpers import create
from tests.workflows import ALL_WORKFLOWS, CALLS


class RecordingExecutor(LocalExecutor):
    def __init__(self) -> None:
        self.ran: list[str] = []

    def execute(self, stage: Any, ctx: Any) -> Any:
        self.ran.append(stage.id)
        return super().execute(stage, ctx)


def test_routing_executor_sends_listed_stages_to_remote() -> None:
    remote = RecordingExecutor()
    executor = RoutingExecutor(remote=remote, remote_stage_ids=["summarize", "publish"])
    kit = create_test_kernel(ALL_WORKFLOWS, executor=executor)
    run_id = create(kit)
    run = run_to_completion(kit.kernel, kit.job_transport, run_id)
    assert run.status.value == "COMPLETED"
    assert remote.ran == ["summarize", "publish"]
    assert CALLS["extract"] == 1


def test_async_stage_inside_a_running_loop() -> None:
    async def body() -> int:
        await asyncio.sleep(0)
        return 7

    async def caller() -> int:
        # A running loop in this thread: the coroutine runs on a private loop elsewhere.
        return int(resolve_awaitable(body()))

    assert asyncio.run(caller()) == 7
    assert resolve_awaitable(body()) == 7
    assert resolve_awaitable(3) == 3
