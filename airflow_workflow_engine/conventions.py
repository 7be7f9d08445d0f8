"""Well-known annotation keys (the seed's conventions catalog), with their value types.

``ctx.annotate(Decision.outcome, "low")``, then
``kernel.annotations.list(run_id, key_prefix="decision.")``.
"""

from __future__ import annotations

from airflow_workflow_engine.definitions.annotations import Actor, TypedKey, typed_key

__all__ = ["Actor", "Approval", "Decision", "Revision", "Trigger", "TypedKey", "typed_key"]


class Trigger:
    """What started a run."""

    source = typed_key("trigger.source", str)
    parent_run_id = typed_key("trigger.parent_run_id", str)
    dag_id = typed_key("trigger.dag_id", str)
    dag_run_id = typed_key("trigger.dag_run_id", str)
    user = typed_key("trigger.user", str)


class Decision:
    """A choice a stage (or an agent) made, and why."""

    outcome = typed_key("decision.outcome", str)
    confidence = typed_key("decision.confidence", float)
    rationale = typed_key("decision.rationale", str)
    used_fallback = typed_key("decision.used_fallback", bool)


class Approval:
    """A human sign-off; ``status`` is ``"approved"`` or ``"rejected"``."""

    status = typed_key("approval.status", str)
    approver = typed_key("approval.approver", str)
    comment = typed_key("approval.comment", str)
    stage_id = typed_key("approval.stage_id", str)

    APPROVED = "approved"
    REJECTED = "rejected"


class Revision:
    """A rerun or correction and what it replaced."""

    reason = typed_key("revision.reason", str)
    from_stage_id = typed_key("revision.from_stage_id", str)
    previous_output_hash = typed_key("revision.previous_output_hash", str)
