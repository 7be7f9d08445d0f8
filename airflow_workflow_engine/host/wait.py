"""What the sensors wait for, and the decision whether the wait is over.

A :class:`WaitSpec` names a workflow run (by id, or by the DAG run that created it: its run key,
:func:`~airflow_workflow_engine.host.runs.run_key`) and what to wait for:

- ``kind="stage"``: a stage of the run reaches one of ``target_statuses``;
- ``kind="run"``: the workflow run itself does;
- ``kind="approval"``: an ``Approval`` annotation (``approval.status`` = ``approved`` or
  ``rejected``) is attached to the run, and no later rerun of the stages it depended on voided
  it (:mod:`airflow_workflow_engine.kernel.approvals`).

:func:`check` reads the kernel's rows once and returns a :class:`Verdict`: a terminal status
(``success``, ``failed``; the trigger adds ``timed_out`` and ``error``) or ``None`` to keep
waiting. It is shared by ``KernelStateTrigger`` and the sensors' poke mode. No ``airflow``
import here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

from airflow_workflow_engine.conventions import Approval
from airflow_workflow_engine.host.queries import find_run_by_key
from airflow_workflow_engine.host.runs import run_key
from airflow_workflow_engine.kernel.approvals import approval_state
from airflow_workflow_engine.kernel.status import Status

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
    "SensorEvent",
    "SensorStatus",
    "Verdict",
    "WaitKind",
    "WaitSpec",
    "check",
]

WaitKind = Literal["stage", "run", "approval"]
SensorStatus = Literal["success", "failed", "timed_out", "error"]

#: The key prefix of the ``Approval`` convention (``approval.status``, ``approval.approver``...).
APPROVAL_PREFIX = "approval."
APPROVED = Approval.APPROVED
REJECTED = Approval.REJECTED

#: The kernel's statuses by name (``kernel.status`` loads alone: the kernel package is lazy).
STATUS_NAMES = frozenset(status.value for status in Status)
DEFAULT_TARGETS: tuple[str, ...] = (Status.COMPLETED.value,)
DEFAULT_FAILED: tuple[str, ...] = (Status.FAILED.value, Status.CANCELLED.value)


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
    # Every annotation, in write order: the reruns that void a decision are ``revision.*``.
    state = approval_state(persistence.list_annotations(run.id), spec.key_prefix, spec.stage_id)
    decision = state.decision
    if decision is not None:
        comment = f": {decision.comment}" if decision.comment else " (no comment)"
        verb = APPROVED if decision.approved else REJECTED
        return Verdict(
            "success" if decision.approved else "failed",
            f"workflow run {run.id} was {verb} by {decision.approver}{comment}",
            run.id,
            decision.status,
            decision.details(),
        )
    if run.status in (Status.FAILED, Status.CANCELLED):
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
