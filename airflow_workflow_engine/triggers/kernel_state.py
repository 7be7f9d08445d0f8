"""``KernelStateTrigger``: the sensors wait in the triggerer until the kernel's rows say so.

One trigger serves the three sensors (:mod:`airflow_workflow_engine.sensors`). What it waits
for is a :class:`WaitSpec`:

- ``kind="stage"``: a stage of a workflow run reaches one of ``target_statuses``;
- ``kind="run"``: the workflow run itself does;
- ``kind="approval"``: an ``Approval`` annotation (``approval.status`` = ``approved`` or
  ``rejected``) is attached to the run, and no later rerun of the stages it depended on voided
  it (:mod:`airflow_workflow_engine.kernel.approvals`).

The run is named by its id, or by the DAG run that created it: its idempotency key is
``"<dag_id>/<run_id>"`` (see :class:`~airflow_workflow_engine.operators.stage.StageOperator`).
A run that does not exist yet is waited for.

The decision is :func:`check`, a plain function over the kernel's persistence shared by the
trigger and the sensors' poke mode (``deferrable=False``). The trigger calls it in a worker
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
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_workflow_engine.errors import WorkflowEngineError
from airflow_workflow_engine.hooks.engine import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow_workflow_engine.kernel.ports import Persistence
    from airflow_workflow_engine.kernel.records import RunRecord

__all__ = [
    "APPROVAL_PREFIX",
    "APPROVED",
    "DEFAULT_FAILED",
    "DEFAULT_TARGETS",
    "REJECTED",
    "STATUS_NAMES",
    "KernelStateTrigger",
    "SensorEvent",
    "SensorStatus",
    "Verdict",
    "WaitKind",
    "WaitSpec",
    "check",
    "find_run_by_key",
    "run_key_candidates",
    "split_run_key",
    "run_key",
]

logger = logging.getLogger(__name__)

WaitKind = Literal["stage", "run", "approval"]
SensorStatus = Literal["success", "failed", "timed_out", "error"]

#: The key prefix of the ``Approval`` convention (``approval.status``, ``approval.approver``...).
APPROVAL_PREFIX = "approval."
APPROVED = "approved"
REJECTED = "rejected"

#: The kernel's statuses (``kernel.status.Status``), spelled out: importing the kernel package
#: here would cost every DAG file that uses a sensor.
STATUS_NAMES = frozenset(
    {"PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "FAILED", "CANCELLED", "SKIPPED"}
)
DEFAULT_TARGETS: tuple[str, ...] = ("COMPLETED",)
DEFAULT_FAILED: tuple[str, ...] = ("FAILED", "CANCELLED")


def run_key(dag_id: str, run_id: str, workflow_group: str | None = None) -> str:
    """The idempotency key of the workflow run a DAG run creates (``run.create``):
    ``"<dag_id>/<run_id>"``, or ``"<dag_id>/<run_id>/<group_id>"`` for the workflow of a
    :class:`~airflow_workflow_engine.task_group.WorkflowTaskGroup` (a DAG run runs one
    workflow per group). DAG ids, run ids and group ids hold no ``/``."""
    key = f"{dag_id}/{run_id}"
    return f"{key}/{workflow_group}" if workflow_group else key


def split_run_key(key: str | None) -> tuple[str | None, str | None, str | None]:
    """``(dag_id, run_id, group_id)`` of a key made by :func:`run_key` (``None`` parts for a
    key of a run created outside Airflow)."""
    if not key or "/" not in key:
        return None, None, None
    dag_id, _, rest = key.partition("/")
    run_id, _, group = rest.partition("/")
    return dag_id, run_id, group or None


def run_key_candidates(dag_id: str, run_id: str, task_id: str) -> list[str]:
    """The keys the workflow run of a stage task may have, most specific first: one per
    task-group prefix of ``task_id`` (``"a.b.stage"``: groups ``a.b``, ``a``), then none."""
    parts = task_id.split(".")[:-1]
    groups = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return [*(run_key(dag_id, run_id, g) for g in groups), run_key(dag_id, run_id)]


def _statuses(values: Iterable[str] | str, what: str) -> tuple[str, ...]:
    items = (values,) if isinstance(values, str) else tuple(values)
    out = []
    for value in items:
        name = str(getattr(value, "value", value)).upper()
        if name not in STATUS_NAMES:
            raise ValueError(
                f"{what}: {value!r} is not a workflow status; use {sorted(STATUS_NAMES)}."
            )
        out.append(name)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class WaitSpec:
    """What a sensor waits for. ``workflow_run_id``, or ``dag_id`` + ``run_id`` (the DAG run
    whose workflow run it is), names the run."""

    kind: WaitKind
    workflow_run_id: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    stage_id: str | None = None
    target_statuses: tuple[str, ...] = DEFAULT_TARGETS
    failed_statuses: tuple[str, ...] = DEFAULT_FAILED
    key_prefix: str = APPROVAL_PREFIX
    #: With ``dag_id`` + ``run_id``: the ``WorkflowTaskGroup`` whose workflow run it is.
    workflow_group: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(WaitKind):
            raise ValueError(f"kind must be one of {get_args(WaitKind)}, got {self.kind!r}")
        if not self.workflow_run_id and not (self.dag_id and self.run_id):
            raise ValueError(
                "Name the workflow run: workflow_run_id, or the dag_id and run_id of the DAG "
                "run that created it."
            )
        if self.kind == "stage" and not self.stage_id:
            raise ValueError("A stage wait needs stage_id.")
        if not self.key_prefix:
            raise ValueError("key_prefix must not be empty (the convention is 'approval.').")
        targets = _statuses(self.target_statuses, "target_statuses")
        failed = _statuses(self.failed_statuses, "failed_statuses")
        if not targets:
            raise ValueError("target_statuses must name at least one status.")
        both = sorted(set(targets) & set(failed))
        if both:
            raise ValueError(f"{both} cannot be both a target and a failed status.")
        object.__setattr__(self, "target_statuses", targets)
        object.__setattr__(self, "failed_statuses", failed)

    @property
    def idempotency_key(self) -> str | None:
        if self.dag_id and self.run_id:
            return run_key(self.dag_id, self.run_id, self.workflow_group)
        return None

    def describe_run(self) -> str:
        if self.workflow_run_id:
            return f"workflow run {self.workflow_run_id}"
        return f"the workflow run of DAG run {self.idempotency_key}"

    def describe(self) -> str:
        run = self.describe_run()
        if self.kind == "stage":
            return f"stage '{self.stage_id}' of {run} to be {'/'.join(self.target_statuses)}"
        if self.kind == "run":
            return f"{run} to be {'/'.join(self.target_statuses)}"
        scope = f" of stage '{self.stage_id}'" if self.stage_id else ""
        return f"an approval{scope} ({self.key_prefix}status) on {run}"

    def to_kwargs(self) -> dict[str, Any]:
        """JSON primitives only (what a trigger serializes)."""
        return {
            "kind": self.kind,
            "workflow_run_id": self.workflow_run_id,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "stage_id": self.stage_id,
            "target_statuses": list(self.target_statuses),
            "failed_statuses": list(self.failed_statuses),
            "key_prefix": self.key_prefix,
            **({"workflow_group": self.workflow_group} if self.workflow_group else {}),
        }


class SensorEvent(TypedDict):
    """The payload of the trigger's one event (and a sensor's XCom value on success)."""

    status: SensorStatus
    kind: WaitKind
    workflow_run_id: str | None
    stage_id: str | None
    #: The status seen: the stage's or run's, or the approval's (``approved``/``rejected``).
    observed: str | None
    message: str
    #: For approvals: ``approver``, ``comment``, ``stage_id``, ``at`` (ISO timestamp).
    details: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    """One check's answer: a terminal ``status``, or ``None`` to keep waiting."""

    status: SensorStatus | None
    message: str
    workflow_run_id: str | None = None
    observed: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def event(self, spec: WaitSpec) -> SensorEvent:
        assert self.status is not None
        return SensorEvent(
            status=self.status,
            kind=spec.kind,
            workflow_run_id=self.workflow_run_id or spec.workflow_run_id,
            stage_id=spec.stage_id,
            observed=self.observed,
            message=self.message,
            details=dict(self.details),
        )


# -- finding the run ----------------------------------------------------------------------


def find_run_by_key(persistence: Persistence, key: str) -> RunRecord | None:
    """The workflow run created with idempotency key ``key`` (newest first), or ``None``."""
    return persistence.get_run_by_idempotency_key(key)


def _find_run(persistence: Persistence, spec: WaitSpec) -> RunRecord | Verdict:
    if spec.workflow_run_id:
        run = persistence.get_run(spec.workflow_run_id)
        if run is None:
            return Verdict("error", f"workflow run {spec.workflow_run_id} does not exist.")
        return run
    key = spec.idempotency_key
    assert key is not None
    run = find_run_by_key(persistence, key)
    if run is None:
        return Verdict(None, f"DAG run {key} has no workflow run yet")
    return run


# -- approvals ----------------------------------------------------------------------------
# The decision (which approval counts, which reruns void it) is the kernel's:
# :mod:`airflow_workflow_engine.kernel.approvals`, imported when first needed so that a DAG file
# using a sensor does not load the kernel.


def __getattr__(name: str) -> Any:
    if name in ("ApprovalDecision", "latest_approval"):
        from airflow_workflow_engine.kernel import approvals

        return getattr(approvals, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the check ----------------------------------------------------------------------------


def _check_stage(persistence: Persistence, spec: WaitSpec, run: RunRecord) -> Verdict:
    assert spec.stage_id is not None
    rec = persistence.get_stage(run.id, spec.stage_id)
    observed = rec.status.value if rec is not None else None
    if observed in spec.target_statuses:
        return Verdict("success", f"stage '{spec.stage_id}' is {observed}", run.id, observed)
    if observed in spec.failed_statuses:
        error = f": {rec.error_message}" if rec is not None and rec.error_message else ""
        return Verdict("failed", f"stage '{spec.stage_id}' is {observed}{error}", run.id, observed)
    if run.status.is_terminal:
        state = observed or "not started"
        return Verdict(
            "failed",
            f"workflow run {run.id} is {run.status.value} and stage '{spec.stage_id}' is {state}; "
            f"it will not become {'/'.join(spec.target_statuses)}",
            run.id,
            observed,
        )
    return Verdict(
        None, f"stage '{spec.stage_id}' is {observed or 'not started'}", run.id, observed
    )


def _check_run(spec: WaitSpec, run: RunRecord) -> Verdict:
    observed = run.status.value
    if observed in spec.target_statuses:
        return Verdict("success", f"workflow run {run.id} is {observed}", run.id, observed)
    if observed in spec.failed_statuses or run.status.is_terminal:
        error = f": {run.error_message}" if run.error_message else ""
        return Verdict("failed", f"workflow run {run.id} is {observed}{error}", run.id, observed)
    return Verdict(None, f"workflow run {run.id} is {observed}", run.id, observed)


def _check_approval(persistence: Persistence, spec: WaitSpec, run: RunRecord) -> Verdict:
    from airflow_workflow_engine.kernel.approvals import approval_state

    # Every annotation, in write order: the reruns that void a decision are ``revision.*``.
    state = approval_state(persistence.list_annotations(run.id), spec.key_prefix, spec.stage_id)
    decision = state.decision
    if decision is not None:
        comment = f": {decision.comment}" if decision.comment else " (no comment)"
        verb = "approved" if decision.approved else "rejected"
        return Verdict(
            "success" if decision.approved else "failed",
            f"workflow run {run.id} was {verb} by {decision.approver}{comment}",
            run.id,
            decision.status,
            decision.details(),
        )
    if run.status.value in ("FAILED", "CANCELLED"):
        error = f" ({run.error_message})" if run.error_message else ""
        return Verdict(
            "failed",
            f"workflow run {run.id} is {run.status.value}{error} and was never approved",
            run.id,
            None,
        )
    return Verdict(None, f"workflow run {run.id} {state.waiting_message()}", run.id, None)


def check(persistence: Persistence, spec: WaitSpec) -> Verdict:
    """Reads the kernel's rows once and says whether the wait is over (no writes)."""
    found = _find_run(persistence, spec)
    if isinstance(found, Verdict):
        return found
    if spec.kind == "stage":
        return _check_stage(persistence, spec, found)
    if spec.kind == "run":
        return _check_run(spec, found)
    return _check_approval(persistence, spec, found)


# -- the trigger --------------------------------------------------------------------------


def _persistence_for(settings: Any) -> Persistence:
    from airflow_workflow_engine.hooks.engine import kernel_for

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
