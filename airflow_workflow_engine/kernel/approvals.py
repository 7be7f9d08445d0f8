"""Approvals and the reruns that void them: the decision ``ApprovalSensor``, the CLI and the
listeners share. No Airflow, no database: a pure function over a run's annotations.

An approval (or rejection) is an ``Approval`` annotation (``approval.status`` = ``approved`` or
``rejected``, with ``approval.approver``, ``approval.comment``, ``approval.stage_id``). Every
rerun (``run.rerunFrom``, ``run.rerunStages``, so an Airflow clear and the CLI's ``rerun``)
writes ``Revision`` annotations in its own transaction: which stages it reruns and since when
the outputs it replaces existed (:func:`record_rerun`). Provenance stays append-only: nothing is
deleted or rewritten; a later rerun *voids* an earlier decision when the decision depended on
what the rerun replaces:

- a decision for a stage (``approval.stage_id``, or the annotation's stage) is voided by a
  rerun of that stage;
- a run-wide decision is voided by a rerun of any stage that had finished when the decision
  was given (its output, or its failure, was there to be judged). A rerun of stages that
  finished only after the decision (downstream of the approval point) leaves it standing.

The newest decision that is not voided counts; a run whose decisions are all voided waits for
a fresh one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_workflow_engine.conventions import Approval
from airflow_workflow_engine.definitions.annotations import Actor
from airflow_workflow_engine.kernel.commands import RunCancel
from airflow_workflow_engine.kernel.records import AnnotationRecord

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_workflow_engine.kernel.kernel import Kernel
    from airflow_workflow_engine.kernel.records import StageRecord

__all__ = [
    "APPROVAL_PREFIX",
    "APPROVED",
    "REJECTED",
    "REVISION_FROM_STAGE",
    "REVISION_REASON",
    "REVISION_REPLACED_SINCE",
    "REVISION_STAGE_IDS",
    "ApprovalDecision",
    "ApprovalState",
    "Rerun",
    "PENDING",
    "approval_state",
    "awaiting_since",
    "cancel_rejected_run",
    "latest_approval",
    "record_approval",
    "record_rerun",
    "rejected_message",
    "rejection_reason",
]

#: The key prefix of the ``Approval`` convention.
APPROVAL_PREFIX = "approval."
APPROVED = Approval.APPROVED
REJECTED = Approval.REJECTED
#: An approval point asked a reviewer (``WorkflowApprovalOperator``); no decision, it only
#: tells readers since when the run waits.
PENDING = "pending"

#: ``Revision`` keys the kernel writes on every rerun.
REVISION_STAGE_IDS = "revision.stage_ids"
REVISION_REPLACED_SINCE = "revision.replaced_since"
REVISION_REASON = "revision.reason"
REVISION_FROM_STAGE = "revision.from_stage_id"
#: Who writes them.
KERNEL_ACTOR = Actor(kind="system", id="workflow-engine")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


@dataclass(frozen=True)
class Rerun:
    """One rerun, as its ``Revision`` annotations tell it."""

    at: datetime
    stage_ids: frozenset[str]
    #: When the earliest output (or failure) it replaced came to be; ``None``: none finished.
    replaced_since: datetime | None
    reason: str | None = None

    def voids(self, decision: ApprovalDecision) -> bool:
        if decision.stage_id is not None:
            return decision.stage_id in self.stage_ids
        return self.replaced_since is not None and self.replaced_since <= decision.at

    def describe(self) -> str:
        return f"the rerun of {', '.join(sorted(self.stage_ids))} at {self.at.isoformat()}"


@dataclass(frozen=True)
class ApprovalDecision:
    """An approval (or rejection) of a run, or of one of its stages."""

    status: str
    approver: str
    comment: str | None
    stage_id: str | None
    at: datetime
    actor_kind: str

    @property
    def approved(self) -> bool:
        return self.status == APPROVED

    def describe(self) -> str:
        """``rejected by bob at 2026-06-01T12:00:00+00:00: 'numbers are off'``."""
        verb = APPROVED if self.approved else REJECTED
        scope = f" (stage '{self.stage_id}')" if self.stage_id else ""
        why = f": {self.comment!r}" if self.comment else " (no comment given)"
        return f"{verb}{scope} by {self.approver} at {self.at.isoformat()}{why}"

    def details(self) -> dict[str, Any]:
        return {
            "approver": self.approver,
            "comment": self.comment,
            "stage_id": self.stage_id,
            "at": self.at.isoformat(),
            "actor_kind": self.actor_kind,
        }


@dataclass(frozen=True)
class ApprovalState:
    """The decision that counts (``None``: none yet, or all voided) and the voided ones."""

    decision: ApprovalDecision | None
    voided: tuple[tuple[ApprovalDecision, Rerun], ...] = ()

    def waiting_message(self) -> str:
        if not self.voided:
            return "awaits approval"
        old, rerun = self.voided[-1]
        return (
            f"awaits a new approval: the decision {old.describe()} was voided by {rerun.describe()}"
        )


def _group(note: AnnotationRecord) -> tuple[str, str, str | None, datetime]:
    # One kernel.annotations.attach(...) call writes its attributes with one actor, one
    # timestamp and one idempotency key: that is how a status finds its approver and comment.
    return (note.actor.kind, note.actor.id, note.idempotency_key, note.created_at)


def _rerun(note: AnnotationRecord, siblings: dict[str, Any]) -> Rerun:
    raw = siblings.get(REVISION_REPLACED_SINCE)
    since = _utc(datetime.fromisoformat(str(raw))) if raw else None
    reason = siblings.get(REVISION_REASON)
    return Rerun(
        at=_utc(note.created_at),
        stage_ids=frozenset(str(s) for s in (note.value or [])),
        replaced_since=since,
        reason=None if reason is None else str(reason),
    )


def approval_state(
    notes: Sequence[AnnotationRecord],
    key_prefix: str = APPROVAL_PREFIX,
    stage_id: str | None = None,
) -> ApprovalState:
    """Reads a run's annotations (all of them, in the order they were written) and returns the
    newest ``<prefix>status`` of ``approved``/``rejected`` that no later rerun voided, with the
    approver and comment written with it. With ``stage_id``, only that stage's decisions count.
    """
    status_key = f"{key_prefix}status"
    entries: list[ApprovalDecision | Rerun] = []
    for note in notes:
        if note.key not in (status_key, REVISION_STAGE_IDS):
            continue
        siblings = {n.key: n.value for n in notes if _group(n) == _group(note)}
        if note.key == REVISION_STAGE_IDS:
            entries.append(_rerun(note, siblings))
            continue
        value = str(note.value).strip().lower() if note.value is not None else ""
        if value not in (APPROVED, REJECTED):
            continue
        scope = siblings.get(f"{key_prefix}stage_id") or note.stage_id
        if stage_id is not None and scope != stage_id:
            continue
        comment = siblings.get(f"{key_prefix}comment")
        entries.append(
            ApprovalDecision(
                status=value,
                approver=str(siblings.get(f"{key_prefix}approver") or note.actor.id),
                comment=None if comment in (None, "") else str(comment),
                stage_id=None if scope is None else str(scope),
                at=_utc(note.created_at),
                actor_kind=note.actor.kind,
            )
        )
    current: ApprovalDecision | None = None
    voided: list[tuple[ApprovalDecision, Rerun]] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Rerun):
            continue
        later = (e for e in entries[i + 1 :] if isinstance(e, Rerun) and e.voids(entry))
        by = next(later, None)
        if by is None:
            current = entry
        else:
            voided.append((entry, by))
    return ApprovalState(current, tuple(voided))


def awaiting_since(
    notes: Sequence[AnnotationRecord], key_prefix: str = APPROVAL_PREFIX
) -> datetime | None:
    """When the newest ``<prefix>status`` = ``pending`` request was made, if no decision
    (``approved``/``rejected``) was written after it; else ``None``."""
    status_key = f"{key_prefix}status"
    since: datetime | None = None
    for note in notes:
        if note.key != status_key or note.value is None:
            continue
        value = str(note.value).strip().lower()
        if value == PENDING:
            since = _utc(note.created_at)
        elif value in (APPROVED, REJECTED):
            since = None
    return since


def latest_approval(
    notes: Sequence[AnnotationRecord],
    key_prefix: str = APPROVAL_PREFIX,
    stage_id: str | None = None,
) -> ApprovalDecision | None:
    """The decision that counts (see :func:`approval_state`), or ``None``."""
    return approval_state(notes, key_prefix, stage_id).decision


def record_rerun(
    k: Kernel,
    run_id: str,
    replaced: Iterable[StageRecord],
    *,
    reason: str | None = None,
    from_stage_id: str | None = None,
) -> None:
    """Writes the ``Revision`` annotations of a rerun. Call inside the rerun's transaction."""
    rows = list(replaced)
    if not rows:
        return
    finished = [_utc(r.completed_at) for r in rows if r.completed_at is not None]
    attributes: dict[str, Any] = {
        REVISION_STAGE_IDS: [r.stage_id for r in rows],
        REVISION_REPLACED_SINCE: min(finished).isoformat() if finished else None,
    }
    if reason:
        attributes[REVISION_REASON] = reason
    if from_stage_id:
        attributes[REVISION_FROM_STAGE] = from_stage_id
    now = k.now()
    key = uuid.uuid4().hex  # one group: the decision reads the siblings of one rerun together
    for name, value in attributes.items():
        k.persistence.insert_annotation(
            AnnotationRecord(
                id=k.new_id(),
                workflow_run_id=run_id,
                stage_id=None,
                key=name,
                value=value,
                actor=KERNEL_ACTOR,
                idempotency_key=key,
                created_at=now,
            )
        )
        k.emit(
            run_id,
            "annotation:created",
            {"stage_id": None, "key": name, "actor_id": KERNEL_ACTOR.id},
        )


# -- deciding, and what a rejection does ----------------------------------------------------
# Shared by every approval point (``ApprovalSensor``, ``WorkflowApprovalOperator``) and the CLI.


def record_approval(
    kernel: Kernel,
    workflow_run_id: str,
    *,
    approved: bool,
    approver: str,
    comment: str | None = None,
    stage_id: str | None = None,
    key_prefix: str = APPROVAL_PREFIX,
    actor_kind: str = "user",
    idempotency_key: str | None = None,
) -> list[AnnotationRecord]:
    """Attaches an approval (or rejection) to a run, atomically; returns the rows written.

    ``idempotency_key`` makes a repeated call (a double click) write nothing the second time.
    """
    if not approver:
        raise ValueError("approver must name who decided.")
    attributes: dict[str, Any] = {
        f"{key_prefix}status": APPROVED if approved else REJECTED,
        f"{key_prefix}approver": approver,
    }
    if comment:
        attributes[f"{key_prefix}comment"] = comment
    if stage_id:
        attributes[f"{key_prefix}stage_id"] = stage_id
    return kernel.annotations.attach(
        workflow_run_id,
        actor=Actor(kind=actor_kind, id=approver),
        attributes=attributes,
        idempotency_key=idempotency_key or uuid.uuid4().hex,
    )


def rejection_reason(details: Mapping[str, Any], task_id: str, dag_id: str) -> str:
    """The run's error after a rejection at a task: ``rejected by bob at
    2026-06-01T12:00:00+00:00: 'numbers are off' (task 'approve' of DAG 'pipeline')``."""
    comment = details.get("comment")
    scope = f" (stage '{details['stage_id']}')" if details.get("stage_id") else ""
    why = f": {comment!r}" if comment else " (no comment given)"
    return (
        f"rejected{scope} by {details.get('approver')} at {details.get('at')}{why} "
        f"(task '{task_id}' of DAG '{dag_id}')"
    )


def rejected_message(workflow_run_id: str, details: Mapping[str, Any], task_id: str) -> str:
    """The task's failure after a rejection: ``Workflow run 3f2a… was rejected by bob:
    'numbers are off' (task 'approve').``"""
    comment = details.get("comment")
    return (
        f"Workflow run {workflow_run_id} was rejected by {details.get('approver')}: "
        + (f"{comment!r}" if comment else "no comment given")
        + f" (task '{task_id}')."
    )


def cancel_rejected_run(kernel: Kernel, workflow_run_id: str, own_key: str, reason: str) -> bool:
    """Cancels a rejected run with the rejection as its error, when it is the run of the
    approval point's own DAG run (idempotency key ``own_key``); a run of another DAG run is
    left to its own DAG. Returns whether it cancelled the run."""
    run = kernel.persistence.get_run(workflow_run_id)
    if run is None or run.idempotency_key != own_key:
        return False
    result = kernel.dispatch(RunCancel(workflow_run_id=workflow_run_id, reason=reason))
    return bool(result.cancelled)
