"""``KernelStateTrigger``: the sensors wait in the triggerer until the kernel's rows say so.

One trigger serves the three sensors (:mod:`airflow_workflow_engine.sensors`). What it waits
for is a :class:`~airflow_workflow_engine.host.wait.WaitSpec` (a stage's or the run's status,
or an approval), on a run named by its id or by the DAG run that created it (its run key,
:func:`~airflow_workflow_engine.host.runs.run_key`). A run that does not exist yet is waited
for.

The decision is :func:`~airflow_workflow_engine.host.wait.check`, a plain function over the
kernel's persistence shared by the trigger and the sensors' poke mode (``deferrable=False``).
The trigger calls it in a worker
thread (``asyncio.to_thread``) at ``poll_interval``, serializes only ids and primitives (and
the connection id, never the URL), carries an absolute ``deadline`` so a triggerer restart does
not extend the wait, and yields exactly one :class:`SensorEvent` whose ``status`` is

- ``success``: the condition holds (approved, the stage or run reached a target status);
- ``failed``: it never will (a failed status, a rejection, a run that ended first);
- ``timed_out``: the deadline passed;
- ``error``: the trigger could not work (engine not configured, unknown run id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.hooks.settings import DEFAULT_CONN_ID
from airflow_workflow_engine.host.wait import (
    APPROVAL_PREFIX,
    DEFAULT_FAILED,
    DEFAULT_TARGETS,
    Verdict,
    WaitKind,
    WaitSpec,
    check,
)

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.ports import Persistence

__all__ = ["KernelStateTrigger"]

logger = logging.getLogger(__name__)

# -- the trigger --------------------------------------------------------------------------


def _persistence_for(settings: Any) -> Persistence:
    from airflow_workflow_engine.hooks.kernel_cache import kernel_for

    return kernel_for(settings).persistence


class KernelStateTrigger(BaseTrigger):
    """Polls the kernel's rows until a :class:`WaitSpec` is met, fails or times out.

    :param kind: ``"stage"``, ``"run"`` or ``"approval"``.
    :param workflow_run_id: the run; or ``dag_id`` + ``run_id`` of the DAG run that created it.
    :param stage_id: the stage (``kind="stage"``; for approvals, only that stage's approvals).
    :param target_statuses: statuses that end the wait successfully.
    :param failed_statuses: statuses that end it as a failure.
    :param key_prefix: the approval keys' prefix (``"approval."``).
    :param poll_interval: seconds between checks.
    :param timeout: seconds from now until a ``timed_out`` event; or ``deadline``.
    :param deadline: the absolute deadline (UNIX time), what ``serialize()`` keeps.
    :param conn_id: the ``workflow_engine`` connection; ``None``: ``[workflow_engine]`` only.
    """

    def __init__(
        self,
        *,
        kind: WaitKind,
        workflow_run_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        stage_id: str | None = None,
        target_statuses: Sequence[str] = DEFAULT_TARGETS,
        failed_statuses: Sequence[str] = DEFAULT_FAILED,
        key_prefix: str = APPROVAL_PREFIX,
        workflow_group: str | None = None,
        poll_interval: float = 60.0,
        timeout: float | None = None,
        deadline: float | None = None,
        conn_id: str | None = DEFAULT_CONN_ID,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0 seconds")
        self.spec = WaitSpec(
            kind=kind,
            workflow_run_id=workflow_run_id,
            dag_id=dag_id,
            run_id=run_id,
            stage_id=stage_id,
            target_statuses=tuple(target_statuses),
            failed_statuses=tuple(failed_statuses),
            key_prefix=key_prefix,
            workflow_group=workflow_group,
        )
        self.poll_interval = float(poll_interval)
        if deadline is None and timeout is not None:
            deadline = time.time() + float(timeout)
        self.deadline = None if deadline is None else float(deadline)
        self.conn_id = conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **self.spec.to_kwargs(),
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "conn_id": self.conn_id,
            },
        )

    def _event(self, verdict: Verdict) -> TriggerEvent:
        return TriggerEvent(dict(verdict.event(self.spec)))  # type: ignore[no-untyped-call]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_workflow_engine.hooks.engine import WorkflowEngineHook

        try:
            settings = await WorkflowEngineHook(conn_id=self.conn_id).aget_settings()
            persistence = await asyncio.to_thread(_persistence_for, settings)
        except Exception as exc:
            logger.exception("cannot wait for %s", self.spec.describe())
            yield self._event(Verdict("error", f"{type(exc).__name__}: {exc}"))
            return
        logger.info(
            "waiting for %s (every %.1fs) in the %s",
            self.spec.describe(),
            self.poll_interval,
            settings.describe_database(),
        )
        last = ""
        while True:
            try:
                verdict = await asyncio.to_thread(check, persistence, self.spec)
            except WorkflowEngineError as exc:
                if not getattr(exc, "retryable", True):
                    yield self._event(Verdict("error", f"{type(exc).__name__}: {exc}"))
                    return
                verdict = Verdict(None, f"check failed, retrying: {exc}")
            except Exception as exc:  # the database hiccuped: keep waiting
                verdict = Verdict(None, f"check failed, retrying: {type(exc).__name__}: {exc}")
            if verdict.status is not None:
                logger.info("%s: %s (%s)", self.spec.describe(), verdict.status, verdict.message)
                yield self._event(verdict)
                return
            if verdict.message != last:
                logger.info("still waiting: %s", verdict.message)
                last = verdict.message
            wait = self.poll_interval
            if self.deadline is not None:
                remaining = self.deadline - time.time()
                if remaining <= 0:
                    message = f"timed out waiting for {self.spec.describe()} ({verdict.message})"
                    logger.info(message)
                    yield self._event(
                        Verdict("timed_out", message, verdict.workflow_run_id, verdict.observed)
                    )
                    return
                wait = min(wait, remaining)
            await asyncio.sleep(wait)
