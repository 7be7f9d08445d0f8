"""The ActivityExecutor port's adapters: run stage code in-process, or route some stages."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_workflow_engine.definitions.context import StageContext
    from airflow_workflow_engine.definitions.stage import Stage
    from airflow_workflow_engine.kernel.ports import ActivityExecutor

__all__ = ["LocalExecutor", "RoutingExecutor", "resolve_awaitable"]


def resolve_awaitable(value: Any) -> Any:
    """Awaits ``value`` if it is awaitable, so ``async def`` stage functions work from sync code.

    Inside a running event loop (a trigger, a notebook) the coroutine runs on a private loop in
    a worker thread: blocking the caller, never the loop's other tasks' correctness.
    """
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wait()).result()


class LocalExecutor:
    """Runs stage code in the calling process (the default)."""

    def execute(self, stage: Stage[Any, Any, Any], ctx: StageContext[Any, Any]) -> Any:
        return resolve_awaitable(stage.execute(ctx))

    def check_completion(
        self, stage: Stage[Any, Any, Any], state: dict[str, Any], ctx: StageContext[Any, Any]
    ) -> Any:
        if stage.check_completion is None:
            raise TypeError(f"Stage '{stage.id}' has no check_completion")
        return resolve_awaitable(stage.check_completion(state, ctx))

    def cancel(
        self, stage: Stage[Any, Any, Any], state: dict[str, Any], ctx: StageContext[Any, Any]
    ) -> None:
        if stage.on_cancel is not None:
            resolve_awaitable(stage.on_cancel(state, ctx))


class RoutingExecutor:
    """Sends the stages in ``remote_stage_ids`` to ``remote``; the rest run locally."""

    def __init__(
        self,
        *,
        remote: ActivityExecutor,
        remote_stage_ids: Iterable[str],
        local: ActivityExecutor | None = None,
    ) -> None:
        self.remote = remote
        self.remote_stage_ids = frozenset(remote_stage_ids)
        self.local: ActivityExecutor = local or LocalExecutor()

    def _pick(self, stage: Stage[Any, Any, Any]) -> ActivityExecutor:
        return self.remote if stage.id in self.remote_stage_ids else self.local

    def execute(self, stage: Stage[Any, Any, Any], ctx: StageContext[Any, Any]) -> Any:
        return self._pick(stage).execute(stage, ctx)

    def check_completion(
        self, stage: Stage[Any, Any, Any], state: dict[str, Any], ctx: StageContext[Any, Any]
    ) -> Any:
        return self._pick(stage).check_completion(stage, state, ctx)

    def cancel(
        self, stage: Stage[Any, Any, Any], state: dict[str, Any], ctx: StageContext[Any, Any]
    ) -> None:
        self._pick(stage).cancel(stage, state, ctx)
